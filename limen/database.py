"""The database: SQLite's settings for every connection, and the schema, brought up to date
at start-up by Alembic (configured by Flask-Migrate,
whose ``flask --app app db …`` commands write new migrations).

A new database is built by running every migration from the first, so the migrations are
what the tests exercise. A database made before LIMEN had migrations (by ``create_all``) has
the schema of ``BEFORE_MIGRATIONS`` and no version table: it is stamped, then upgraded.
A migration that cannot run raises, and LIMEN does not start.
"""

import os
from pathlib import Path
from typing import Any

from alembic import command
from flask import current_app
from sqlalchemy import event, inspect
from sqlalchemy.engine import Engine

from .extensions import db

DIRECTORY = str(Path(__file__).resolve().parent.parent / "migrations")
BEFORE_MIGRATIONS = "a1c3e5f7b901"  # the first migration: the schema of LIMEN 0.1


def protect() -> None:
    """A SQLite database is readable by LIMEN's user only (it holds password hashes): the file is
    made 0600 before SQLite first opens it, so its WAL and shared-memory files, which SQLite
    creates with the database's mode, are 0600 too; files an older LIMEN left wider are tightened."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return
    path = Path(url.database)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            file.chmod(0o600)
        except FileNotFoundError:
            pass


def upgrade() -> None:
    config = current_app.extensions["migrate"].migrate.get_config(DIRECTORY)
    tables = set(inspect(db.engine).get_table_names())
    if tables and "alembic_version" not in tables:
        command.stamp(config, BEFORE_MIGRATIONS)
    command.upgrade(config, "head")


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_conn: Any, _record: object) -> None:
    """WAL lets the page read while a background operation writes."""
    if type(dbapi_conn).__module__.startswith("sqlite3"):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
