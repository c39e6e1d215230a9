"""``flask --app app users create|list|set-password|disable|enable``, ``tokens create`` and
``media register``: the same use cases as the admin pages, run as the host's operator ("cli"
in the audit log)."""

import subprocess
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup

from . import accounts, media
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

    @media_.command("register")
    @click.argument("file")
    @click.option("--name", required=True, help="The name the library shows.")
    @click.option("--os-kind", type=click.Choice(["linux", "windows", "other"]), default="linux", show_default=True)
    @click.option("--exist-ok", is_flag=True, help="A file already in the library is not an error.")
    @click.option(
        "--copy-from",
        type=click.Path(exists=True, dir_okay=False),
        help="Copy this file into the media directory as FILE first (unless FILE is there already).",
    )
    def register_medium(file: str, name: str, os_kind: str, exist_ok: bool, copy_from: str | None):
        """Add FILE, a file in the media directory, to the library."""
        if exist_ok and (known := media.by_volume(file)) is not None:
            click.echo(f"{file} is in the library already, as {known.name}")
            return
        if copy_from:
            target = Path(app.config["MEDIA_DIR"]) / file
            if Path(file).name != file:
                raise click.ClickException("FILE is a file name in the media directory, not a path.")
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(["cp", "--reflink=auto", copy_from, str(target)], check=True)
        medium = _run(media.register, file, name, os_kind)
        click.echo(f"registered {medium.kind} {medium.name} (id {medium.id})")

    app.cli.add_command(media_)
