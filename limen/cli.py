"""``flask --app app users create|list|set-password|disable|enable`` and ``tokens create``:
the same use cases as the admin pages, run as the host's operator ("cli" in the audit log)."""

import click
from flask import Flask
from flask.cli import AppGroup

from . import accounts
from .access import CLI
from .accounts import tokens
from .errors import ValidationFailed


def _run(fn, *args, **kwargs):
    try:
        return fn(CLI, *args, **kwargs)
    except ValidationFailed as e:
        raise click.ClickException(" ".join(e.fields.values())) from None


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
