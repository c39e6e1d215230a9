"""LIMEN: a lightweight web UI for libvirt/KVM."""

import logging
import os
import secrets
from pathlib import Path

from flask import Flask
from sqlalchemy import select
from werkzeug.middleware.proxy_fix import ProxyFix

from . import accounts, changes, cli, config, database, logs, runtime, views
from .console.frames import NoReaderThread
from .extensions import csrf, db, limiter, login_manager, migrate, sock
from .models import VM, Operation, UnmanagedDomain, User

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    instance_path = (test_config or {}).get("INSTANCE_PATH") or os.environ.get("LIMEN_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_path=instance_path,
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    # The console bridge reads its WebSocket itself (limen.console.frames): no reader thread.
    app.config["SOCK_SERVER_OPTIONS"] = {"thread_class": NoReaderThread}
    config.load(app, test_config)
    logs.configure()
    # Behind its own nginx, LIMEN trusts it too, one hop nearer than the proxies it is told of.
    if proxies := int(app.config["TRUSTED_PROXIES"]) + bool(app.config["FRONT"]):
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies, x_port=proxies
        )

    db.init_app(app)
    migrate.init_app(app, db, directory=database.DIRECTORY)
    app.before_request(views.body_limits)  # before anything reads a body (the CSRF check reads forms)
    app.before_request(views.limits.per_address)
    csrf.init_app(app)
    login_manager.init_app(app)
    limiter.init_app(app)
    sock.init_app(app)
    runtime.init_app(app)
    changes.watch(VM, Operation, UnmanagedDomain)
    login_manager.user_loader(accounts.user_for_token)
    views.register(app)
    cli.register(app)

    with app.app_context():
        database.protect()
        database.upgrade()
        if app.config["INITIAL_ADMIN"]:
            _initial_admin(app)
    return app


def _initial_admin(app: Flask) -> None:
    """On first start, with no user at all, create "admin" with a random password, written
    to instance/initial-admin-password (0600) and printed once."""
    if db.session.scalar(select(User.id).limit(1)) is not None:
        return
    password = secrets.token_urlsafe(16)
    admin = User(username="admin", role="admin")
    admin.set_password(password)
    db.session.add(admin)
    db.session.commit()
    path = Path(app.instance_path) / "initial-admin-password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    print(
        f"LIMEN: created user 'admin' with password {password} (also in {path}); change it after signing in.",
        flush=True,
    )
