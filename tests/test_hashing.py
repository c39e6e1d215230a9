"""Passwords are hashed with scrypt unless configured otherwise (the tests choose a cheap method
so that making users costs no time; this proves what everyone else gets)."""
from sqlalchemy import select

from helpers import admin_password

from limen import create_app, hashing
from limen.config import Config
from limen.extensions import db
from limen.models import User


def test_production_hashes_passwords_with_scrypt(tmp_path, node_xml, monkeypatch):
    monkeypatch.delenv("LIMEN_PASSWORD_HASH_METHOD")  # the tests' cheap method (conftest)
    assert Config.PASSWORD_HASH_METHOD == "scrypt"
    app = create_app({"INSTANCE_PATH": str(tmp_path / "instance"), "LIBVIRT_URI": f"test://{node_xml}"})
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.username == "admin"))
        assert admin.password_hash.startswith("scrypt:")
        admin.set_password("a new password")
        assert admin.password_hash.startswith("scrypt:") and admin.check_password("a new password")
    assert hashing.hash_password("outside any app").startswith("scrypt:")


def test_the_configured_method_is_used(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", PASSWORD_HASH_METHOD="pbkdf2:sha256:1000")
    with app.app_context():
        admin = db.session.scalar(select(User).where(User.username == "admin"))
        assert admin.password_hash.startswith("pbkdf2:sha256:1000$")
        assert admin.check_password(admin_password(app))
