"""Signing in, the initial admin, CSRF and pages that need a user (fast tier)."""
import os
import stat
from pathlib import Path

import pytest

from helpers import CSRF_RE, Browserless, add_user, admin_password


def test_first_start_creates_admin_with_private_password_file(app, anon):
    path = Path(app.instance_path) / "initial-admin-password"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    response = anon.login("admin", path.read_text().strip())
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert "admin" in anon.client.get("/").text


def test_second_start_keeps_users_and_does_not_print_a_new_password(app, make_app, capsys):
    first = admin_password(app)
    again = make_app(LIBVIRT_URI=app.config["LIBVIRT_URI"])
    assert admin_password(again) == first
    assert "created user 'admin'" not in capsys.readouterr().out


def test_wrong_password_and_unknown_user_get_the_same_answer(anon):
    wrong = anon.login("admin", "not-the-password")
    unknown = anon.login("nobody", "not-the-password")
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong username or password." in wrong.text and "Wrong username or password." in unknown.text
    assert anon.client.get("/").status_code == 302


def test_disabled_user_cannot_sign_in(app, anon):
    from limen.extensions import db
    from limen.models import User
    from sqlalchemy import select

    add_user(app, "bob", "bob-password-1")
    with app.app_context():
        db.session.scalar(select(User).where(User.username == "bob")).disabled = True
        db.session.commit()
    assert anon.login("bob", "bob-password-1").status_code == 401


def test_pages_need_a_signed_in_user(anon):
    response = anon.client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    poll = anon.client.get("/vms/rows?v=x", headers={"HX-Request": "true"})
    assert poll.status_code == 401 and poll.headers["HX-Redirect"] == "/login"
    assert anon.client.get("/healthz").status_code == 200


@pytest.mark.parametrize("target, landing", [
    ("//evil.example/x", "/"), ("/%09/evil.example", "/"), ("https://evil.example/", "/"),
    ("/\\evil.example", "/"), ("%2F%2Fevil.example", "/"), ("/vms/rows", "/vms/rows")])
def test_sign_in_redirects_only_to_this_site(app, target, landing):
    client = app.test_client()
    token = CSRF_RE.search(client.get("/login").text).group(1)
    form = {"username": "admin", "password": admin_password(app), "csrf_token": token}
    response = client.post(f"/login?next={target}", data=form)
    assert response.status_code == 302 and response.headers["Location"] == landing


def test_post_without_csrf_token_is_refused_and_changes_nothing(admin, libvirt_conn):
    response = admin.client.post("/vms", data={"name": "nocsrf", "vcpus": "1", "memory_mib": "64",
                                               "disk_gib": "1"}, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "nocsrf" not in admin.rows()
    assert libvirt_conn.listAllDomains() == []


def test_login_without_csrf_token_is_refused(app):
    client = Browserless(app.test_client()).client
    response = client.post("/login", data={"username": "admin", "password": admin_password(app)})
    assert response.status_code == 400
    assert client.get("/").status_code == 302


def test_sign_out_ends_the_session(admin):
    response = admin.client.post("/logout", data={"csrf_token": admin.csrf})
    assert response.status_code == 302
    assert admin.client.get("/").status_code == 302


def test_a_request_for_another_host_is_refused_before_routing(app, admin):
    """On a loopback BIND, LIMEN answers to the loopback names only: a DNS-rebinding page
    (evil.example resolving to 127.0.0.1) gets 400, signed-in cookie or not."""
    assert admin.client.get("/", headers={"Host": "localhost:8080"}).status_code == 200
    assert admin.client.get("/login", headers={"Host": "127.0.0.1:8080"}).status_code == 200
    for path in ("/", "/login", "/api/v1/vms", "/healthz"):
        assert admin.client.get(path, headers={"Host": "evil.example:8080"}).status_code == 400, path


def test_the_names_to_answer_to_are_configurable(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", TRUSTED_HOSTS="limen.example, .lab.example")
    client = app.test_client()
    assert client.get("/login", headers={"Host": "limen.example"}).status_code == 200
    assert client.get("/login", headers={"Host": "vm-host.lab.example"}).status_code == 200
    assert client.get("/login", headers={"Host": "localhost"}).status_code == 400
