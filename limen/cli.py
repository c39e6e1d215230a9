"""``flask --app app users create|list|set-password|disable|enable``, ``tokens create``,
``media upload|register`` and ``hosts list|key|add|disable|enable|remove``: the same use cases as
the admin pages, run as the host's operator ("cli" in the audit log)."""

import os

import click
from flask import Flask
from flask.cli import AppGroup

from . import accounts, hosts, media, remote
from .access import CLI
from .accounts import tokens
from .errors import LimenError, ValidationFailed


def _run(fn, *args, **kwargs):
    try:
        return fn(CLI, *args, **kwargs)
    except ValidationFailed as e:
        raise click.ClickException(" ".join(e.fields.values())) from None
    except LimenError as e:
        raise click.ClickException(f"{e.code}: {e.message}") from None


def register(app: Flask) -> None:
    users = AppGroup("users", help="Manage LIMEN's users.")

    @users.command("create")
    @click.argument("username")
    @click.option("--admin", is_flag=True, help="Give the user the admin role.")
    @click.password_option()
    def create(username: str, admin: bool, password: str):
        user = _run(accounts.create_user, username, password, "admin" if admin else "user")
        click.echo(f"created {user.role} {user.username}")

    @users.command("list")
    def list_():
        click.echo("username\trole\tstatus\tVMs\tvCPUs\tmemory MiB\tdisk GiB")
        for a in _run(accounts.list_users):
            q, u = a.quota, a.usage
            pairs = [(u.vms, q.vms), (u.vcpus, q.vcpus), (u.memory_mib, q.memory_mib), (u.disk_gib, q.disk_gib)]
            click.echo(
                "\t".join(
                    [
                        a.user.username,
                        a.user.role,
                        "disabled" if a.user.disabled else "active",
                        *(f"{used}/{'-' if limit is None else limit}" for used, limit in pairs),
                    ]
                )
            )

    @users.command("set-password")
    @click.argument("username")
    @click.password_option()
    def set_password(username: str, password: str):
        _run(accounts.reset_password, username, password)
        click.echo(f"password of {accounts.normal_username(username)} changed; their sign-ins ended")

    @users.command("disable")
    @click.argument("username")
    def disable(username: str):
        _run(accounts.update_user, username, disabled=True)
        click.echo(f"{accounts.normal_username(username)} disabled; their sign-ins ended")

    @users.command("enable")
    @click.argument("username")
    def enable(username: str):
        _run(accounts.update_user, username, disabled=False)
        click.echo(f"{accounts.normal_username(username)} enabled")

    app.cli.add_command(users)

    tokens_ = AppGroup("tokens", help="Manage API tokens.")

    @tokens_.command("create")
    @click.argument("username")
    @click.option("--name", default="cli", show_default=True, help="What the token is for.")
    @click.option("--expires-days", type=int, default=None, help="Days until it expires (default: never).")
    def create_token(username: str, name: str, expires_days: int | None):
        new = _run(tokens.create_for, username, name, expires_days)
        click.echo(new.token)

    app.cli.add_command(tokens_)

    media_ = AppGroup("media", help="Manage the media library.")

    @media_.command("upload")
    @click.argument("path", type=click.Path(exists=True, dir_okay=False))
    @click.option("--kind", type=click.Choice(["iso", "image"]), required=True, help="An ISO or a qcow2 cloud image.")
    @click.option("--name", required=True, help="The name the library shows.")
    @click.option("--os-kind", type=click.Choice(["linux", "windows", "other"]), default="linux", show_default=True)
    @click.option("--exist-ok", is_flag=True, help="A medium of this name in the library already is not an error.")
    def upload_medium(path: str, kind: str, name: str, os_kind: str, exist_ok: bool):
        """Stream the file at PATH into the media pool, as the web upload does (through libvirt,
        so the pool may be on another host); a failed upload leaves nothing."""
        if exist_ok and media.named(name) is not None:
            click.echo(f"{name} is in the library already")
            return
        with open(path, "rb") as f:
            medium = _run(
                media.upload, kind=kind, name=name, os_kind=os_kind, length=os.fstat(f.fileno()).st_size, stream=f
            )
        click.echo(f"uploaded {medium.kind} {medium.name} (id {medium.id})")

    @media_.command("register")
    @click.argument("file")
    @click.option("--name", required=True, help="The name the library shows.")
    @click.option("--os-kind", type=click.Choice(["linux", "windows", "other"]), default="linux", show_default=True)
    def register_medium(file: str, name: str, os_kind: str):
        """Add FILE, a file already in the media directory, to the library."""
        medium = _run(media.register, file, name, os_kind)
        click.echo(f"registered {medium.kind} {medium.name} (id {medium.id})")

    app.cli.add_command(media_)

    hosts_ = AppGroup("hosts", help="Manage the libvirt hosts LIMEN drives.")

    def _host_id(name: str) -> int:
        for status in _run(hosts.listing):
            if status.host.name == name:
                return int(status.host.id)
        raise click.ClickException(f"HOST_NOT_FOUND: there is no host named {name}")

    @hosts_.command("list")
    def list_hosts():
        """Each host, asked now whether it answers, with what LIMEN trusts it by."""
        click.echo("name\turi\tstatus\tVMs\ttrusted by")
        for h in _run(hosts.listing, ask=True):
            status = "disabled" if not h.host.enabled else h.problem or "reachable"
            uri = h.host.uri or "(local)"
            trust = f"SSH key {h.fingerprint}" if h.fingerprint else f"TLS CA {h.ca.fingerprint}" if h.ca else "-"
            click.echo(f"{h.host.name}\t{uri}\t{status}\t{h.vms}\t{trust}")

    @hosts_.command("key")
    def key():
        """The line to put in root's authorized_keys on each host."""
        click.echo(_run(hosts.public_key))

    pem = click.File("r")

    @hosts_.command("add")
    @click.argument("name")
    @click.argument("uri")
    @click.option("--host-key", help='The host\'s SSH key ("ssh-ed25519 AAAA…"), when it is known already.')
    @click.option("--ca-cert", type=pem, help="qemu+tls: the CA that signed the host's certificate (PEM file).")
    @click.option("--client-cert", type=pem, help="qemu+tls: a client certificate the host accepts (PEM file).")
    @click.option("--client-key", type=pem, help="qemu+tls: that certificate's key, unencrypted (PEM file).")
    def add(name: str, uri: str, host_key: str | None, ca_cert, client_cert, client_key):
        """Add the host at URI: qemu+ssh://root@host/system, or qemu+tls://host/system with its
        certificates. Over SSH without --host-key, LIMEN connects, shows the key the host showed,
        and adds it once you confirm that it is the host's."""
        form = {"name": name, "uri": uri, "host_key": host_key}
        for field, given in (("ca_cert", ca_cert), ("client_cert", client_cert), ("client_key", client_key)):
            form[field] = given.read() if given is not None else None
        if host_key is None and not remote.is_tls(uri):
            probe = _run(hosts.probe, form)
            facts = probe.facts
            click.echo(f"{facts.hostname}: libvirt {facts.libvirt_version}, {facts.cpus} CPUs, {facts.memory_mib} MiB")
            click.echo(f"its SSH key: {probe.host_key}\nfingerprint: {probe.fingerprint}")
            click.confirm("Is this the host's key (ssh-keygen -lf on the host shows it)?", abort=True)
            form["host_key"] = probe.host_key
        host = _run(hosts.add, form)
        click.echo(f"added host {host.name}")

    def _enabled(name: str, enabled: bool) -> None:
        host = _run(hosts.set_enabled, _host_id(name), enabled)
        click.echo(f"{host.name} {'enabled' if enabled else 'disabled'}")

    @hosts_.command("disable")
    @click.argument("name")
    def disable_host(name: str):
        """LIMEN lets go of the host and places no VM there; its VMs stay where they are."""
        _enabled(name, False)

    @hosts_.command("enable")
    @click.argument("name")
    def enable_host(name: str):
        _enabled(name, True)

    @hosts_.command("remove")
    @click.argument("name")
    def remove_host(name: str):
        """Forget a host no VM of LIMEN's lives on; nothing on the host changes."""
        _run(hosts.remove, _host_id(name))
        click.echo(f"{name} removed")

    app.cli.add_command(hosts_)
