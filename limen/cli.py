"""``flask --app app users create|list|set-password``."""
import click
from flask import Flask
from flask.cli import AppGroup
from sqlalchemy import select

from .extensions import db
from .models import User


def register(app: Flask) -> None:
    users = AppGroup("users", help="Manage LIMEN's users.")

    @users.command("create")
    @click.argument("username")
    @click.option("--admin", is_flag=True, help="Give the user the admin role.")
    @click.password_option()
    def create(username: str, admin: bool, password: str):
        if db.session.scalar(select(User).where(User.username == username)):
            raise click.ClickException(f"user {username} exists already")
        user = User(username=username, role="admin" if admin else "user")
        user.set_password(password)
        db.session.add(user)
        db.session.commit()
        click.echo(f"created {user.role} {username}")

    @users.command("list")
    def list_():
        for user in db.session.scalars(select(User).order_by(User.username)):
            click.echo(f"{user.username}\t{user.role}\t{'disabled' if user.disabled else 'active'}")

    @users.command("set-password")
    @click.argument("username")
    @click.password_option()
    def set_password(username: str, password: str):
        user = db.session.scalar(select(User).where(User.username == username))
        if user is None:
            raise click.ClickException(f"no user {username}")
        user.set_password(password)
        db.session.commit()
        click.echo(f"password of {username} changed")

    app.cli.add_command(users)
