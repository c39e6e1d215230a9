"""The schema is LIMEN's migrations (fast tier): a new database is built by them, and one
made before LIMEN had migrations (by create_all) is upgraded with its data kept."""
import flask_migrate
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from helpers import admin_password, signed_in
from limen import database as schema
from limen.extensions import db
from limen.models import VM, User


def head() -> str:
    config = flask_migrate.Config()
    config.set_main_option("script_location", schema.DIRECTORY)
    return ScriptDirectory.from_config(config).get_current_head()


def test_a_new_database_is_at_the_newest_migration_and_matches_the_models(app):
    """A model changed without a migration fails here."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with app.app_context():
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == head()
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), db.metadata) == []


def test_usernames_that_differ_only_in_case_stop_the_upgrade_with_a_clear_message(make_app, node_xml):
    import pytest

    app = make_app(LIBVIRT_URI=f"test://{node_xml}")
    with app.app_context():
        flask_migrate.downgrade(schema.DIRECTORY, schema.BEFORE_MIGRATIONS)
        db.session.execute(text("DROP TABLE alembic_version"))
        for name in ("Bob", "bob"):
            db.session.execute(text(
                "INSERT INTO user (username, password_hash, role, disabled, created_at) "
                "VALUES (:name, 'x', 'user', 0, '2026-01-01 00:00:00')"), {"name": name})
        db.session.commit()
    with pytest.raises(RuntimeError, match="differ only in case: bob"):
        make_app(LIBVIRT_URI=f"test://{node_xml}")


def test_a_database_from_before_migrations_is_upgraded_with_its_data(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}")
    password = admin_password(app)
    with app.app_context():  # back to what LIMEN 0.1 made: its tables, no version table
        flask_migrate.downgrade(schema.DIRECTORY, schema.BEFORE_MIGRATIONS)
        db.session.execute(text("DROP TABLE alembic_version"))
        owner = db.session.scalar(text("SELECT id FROM user WHERE username = 'admin'"))
        db.session.execute(text(
            "INSERT INTO vm (uuid, name, owner_id, vcpus, memory_mib, disk_gib, state, created_at) "
            "VALUES ('6f1c2f1e-0000-4000-8000-000000000001', 'old-vm', :owner, 1, 64, 1, "
            "'shutoff', '2026-01-01 00:00:00')"), {"owner": owner})
        mixed = User(username="Alice", role="user")  # 0.1 kept usernames as typed
        mixed.set_password("alice-password-1")
        db.session.execute(text(
            "INSERT INTO user (username, password_hash, role, disabled, created_at) "
            "VALUES ('Alice', :hash, 'user', 0, '2026-01-01 00:00:00')"), {"hash": mixed.password_hash})
        db.session.commit()
        assert "quota_vms" not in {c["name"] for c in inspect(db.engine).get_columns("user")}

    again = make_app(LIBVIRT_URI=f"test://{node_xml}")
    with again.app_context():
        assert db.session.scalar(text("SELECT version_num FROM alembic_version")) == head()
        assert db.session.scalar(select(VM.name)) == "old-vm"
        old = db.session.scalar(select(VM))
        assert (old.host.name, old.host.local) == ("local", True)  # every VM is the first host's
        assert db.session.scalar(select(User.quota_vms).where(User.username == "admin")) is None
    assert signed_in(again, "admin", password).client.get("/").status_code == 200
    assert signed_in(again, "Alice", "alice-password-1").client.get("/").status_code == 200
