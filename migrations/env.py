"""Alembic environment for LIMEN's schema, run through Flask-Migrate inside the app context.

Unlike the generated default this does not call logging.config.fileConfig: that would
disable every logger LIMEN configured before the migration ran.
"""
from alembic import context
from flask import current_app

db = current_app.extensions["migrate"].db


def run_migrations_online() -> None:
    def skip_empty(context_, revision, directives):
        """`flask db migrate` with no model change writes no empty revision."""
        if getattr(context.config.cmd_opts, "autogenerate", False) and directives[0].upgrade_ops.is_empty():
            directives[:] = []

    args = {"process_revision_directives": skip_empty,
            **current_app.extensions["migrate"].configure_args}
    with db.engine.connect() as connection:
        # Flask-Migrate's arguments include render_as_batch: SQLite alters a table by copying it.
        context.configure(connection=connection, target_metadata=db.metadata, **args)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("LIMEN's migrations run online only: flask --app app db upgrade")
run_migrations_online()
