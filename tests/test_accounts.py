"""Accounts (fast tier): sign-ins that end, cookie flags, the sign-in rate limit, users and
roles managed by admins and by the command line, own passwords, quotas, the audit log."""
import re
import threading

import pytest
from sqlalchemy import select

from helpers import (CSRF_RE, Browserless, add_user, admin_password, audit_rows, find_row, signed_in, uuid_of,
                     wait_until)
from limen import runtime
from limen.extensions import db
from limen.models import VM, AuditEvent, User


def cookie_of(b: Browserless) -> str:
    return b.client.get_cookie("session").value


def with_cookie(app, cookie: str) -> Browserless:
    """Another client that presents a copied session cookie."""
    b = Browserless(app.test_client())
    b.client.set_cookie("session", cookie)
    return b


# -- sign-ins -----------------------------------------------------------------------------
def test_signing_out_ends_the_sign_in_even_for_a_copied_cookie(app, admin):
    stolen = cookie_of(admin)
    assert with_cookie(app, stolen).client.get("/").status_code == 200
    admin.client.post("/logout", data={"csrf_token": admin.csrf})
    response = with_cookie(app, stolen).client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_sign_in_ends_after_its_lifetime(app, admin):
    from datetime import timedelta

    from limen.models import LoginSession, utcnow

    assert admin.client.get("/").status_code == 200
    with app.app_context():
        login = db.session.scalars(select(LoginSession)).one()
        login.created_at = utcnow() - timedelta(hours=24, seconds=1)
        db.session.commit()
    response = admin.client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_each_sign_in_gets_a_new_session(app):
    one = signed_in(app, "admin", admin_password(app))
    two = signed_in(app, "admin", admin_password(app))
    assert cookie_of(one) != cookie_of(two)
    # A cookie planted before the sign-in (session fixation) is not the one that signs in.
    planted = Browserless(app.test_client())
    planted.client.get("/login")
    before = cookie_of(planted)
    assert planted.login("admin", admin_password(app)).status_code == 302
    assert cookie_of(planted) != before
    assert with_cookie(app, before).client.get("/").status_code == 302


def test_session_cookie_flags(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}")
    page = app.test_client().get("/login")
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert app.config["SESSION_COOKIE_SECURE"] is False  # bound to 127.0.0.1 by default


@pytest.mark.parametrize("config, secure", [
    ({"BIND": "0.0.0.0:8080"}, True), ({"BIND": "[::1]:8080"}, False),
    ({"BIND": "localhost:8080"}, False), ({"BIND": "10.1.2.3:80"}, True),
    ({"BIND": "0.0.0.0:8080", "SECURE_COOKIES": False}, False),
    ({"BIND": "127.0.0.1:8080", "SECURE_COOKIES": True}, True)])
def test_secure_cookies_default_on_unless_bound_to_loopback(make_app, node_xml, config, secure):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", TRUSTED_HOSTS=["limen.example"], **config)
    assert app.config["SESSION_COOKIE_SECURE"] is secure
    cookie = app.test_client().get("/login", base_url="https://limen.example").headers["Set-Cookie"]
    assert ("Secure" in cookie) is secure


def test_secure_cookies_from_the_environment(make_app, node_xml, monkeypatch):
    monkeypatch.setenv("LIMEN_SECURE_COOKIES", "false")
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", BIND="0.0.0.0:8080")
    assert app.config["SESSION_COOKIE_SECURE"] is False


def test_disabling_a_user_ends_their_sign_ins_at_once(app, admin):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.client.get("/").status_code == 200
    response = admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user",
                                                          "disabled": "on"})
    assert response.status_code == 302
    poll = bob.client.get("/vms/rows?v=x", headers={"HX-Request": "true"})
    assert poll.status_code == 401 and poll.headers["HX-Redirect"] == "/login"
    assert Browserless(app.test_client()).login("bob", "bob-password-1").status_code == 401
    # Enabled again, bob signs in anew; the old sign-in stays ended.
    admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user"})
    assert bob.client.get("/").status_code == 302
    assert signed_in(app, "bob", "bob-password-1").client.get("/").status_code == 200


def test_a_disabled_user_who_knows_the_password_is_told_so(app):
    add_user(app, "bob", "bob-password-1", disabled=True)
    response = Browserless(app.test_client()).login("bob", "bob-password-1")
    assert response.status_code == 401 and "This account has been disabled" in response.text
    wrong = Browserless(app.test_client()).login("bob", "wrong-password")
    assert "disabled" not in wrong.text and "Wrong username or password." in wrong.text


def test_usernames_are_not_case_sensitive_at_sign_in(app):
    assert signed_in(app, " ADMIN ", admin_password(app)).client.get("/").status_code == 200


# -- the rate limit -----------------------------------------------------------------------
@pytest.fixture
def limited(make_app, node_xml):
    """An app with the sign-in limits LIMEN ships with."""
    from limen.config import Config

    return make_app(LIBVIRT_URI=f"test://{node_xml}", LOGIN_LIMIT_PER_IP=Config.LOGIN_LIMIT_PER_IP,
                    LOGIN_LIMIT_PER_USERNAME=Config.LOGIN_LIMIT_PER_USERNAME)


def test_the_sixth_bad_password_in_a_minute_from_one_address_gets_429(limited):
    app = limited
    client = Browserless(app.test_client())
    for _ in range(5):
        assert client.login("admin", "wrong-password").status_code == 401
    response = client.login("admin", "wrong-password")
    assert response.status_code == 429
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert "Too many attempts. Try again in" in response.text
    # Even the right password waits now; another address is not held up by this one.
    assert client.login("admin", admin_password(app)).status_code == 429
    other = Browserless(app.test_client())
    other.client.environ_base["REMOTE_ADDR"] = "127.0.0.2"
    assert other.login("admin", admin_password(app)).status_code == 302
    assert [e.result for e in audit_rows(app, action="sign-in")] == ["SIGN_IN_FAILED"] * 5 + ["ok"]


def test_a_burst_of_parallel_guesses_gets_no_more_than_the_limit(limited):
    """Attempts are counted before the password is checked, so parallel guesses cannot all
    pass the check before the first failure is counted."""
    app = limited
    clients = [Browserless(app.test_client()) for _ in range(20)]
    tokens = [CSRF_RE.search(b.client.get("/login").text).group(1) for b in clients]
    barrier = threading.Barrier(len(clients))
    statuses = []

    def guess(b, token):
        barrier.wait()
        statuses.append(b.client.post("/login", data={
            "username": "admin", "password": "guess", "csrf_token": token}).status_code)

    threads = [threading.Thread(target=guess, args=pair) for pair in zip(clients, tokens)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses) == [401] * 5 + [429] * 15


def test_one_username_is_limited_across_addresses(limited):
    app = limited
    for n in range(10):
        b = Browserless(app.test_client())
        b.client.environ_base["REMOTE_ADDR"] = f"10.0.0.{n}"
        assert b.login("admin", "wrong-password").status_code == 401
    b = Browserless(app.test_client())
    b.client.environ_base["REMOTE_ADDR"] = "10.0.1.1"
    assert b.login("Admin", "wrong-password").status_code == 429
    add_user(app, "carol", "carol-password-1")
    assert signed_in(app, "carol", "carol-password-1", REMOTE_ADDR="10.0.1.2")


def test_guessing_the_current_password_on_the_account_page_is_limited(limited):
    app = limited
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1", REMOTE_ADDR="10.0.2.1")
    form = {"csrf_token": bob.csrf, "current": "guess", "password": "x-password-1", "confirm": "x-password-1"}
    for _ in range(5):
        assert bob.client.post("/account", data=form).status_code == 422
    response = bob.client.post("/account", data=form)
    assert response.status_code == 429 and "TOO_MANY_ATTEMPTS" in response.text
    assert response.headers["Retry-After"]


def test_the_account_page_is_limited_per_user_across_addresses(limited):
    """A stolen session cookie guessing its user's password from many addresses: the
    per-username limit (10 in 10 minutes) holds whatever the address."""
    app = limited
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    form = {"csrf_token": bob.csrf, "current": "guess", "password": "x-password-1", "confirm": "x-password-1"}
    for n in range(10):
        bob.client.environ_base["REMOTE_ADDR"] = f"10.0.3.{n}"
        assert bob.client.post("/account", data=form).status_code == 422
    bob.client.environ_base["REMOTE_ADDR"] = "10.0.4.1"
    assert bob.client.post("/account", data=form).status_code == 429


def test_over_the_address_limit_a_sign_in_is_refused_before_its_body_is_read(limited, live_server):
    """The 429 comes from the headers alone: a client that announces a body and sends none
    gets its answer at once (LIMEN reads nothing it sent)."""
    import socket
    base = live_server(limited)
    for _ in range(5):
        assert Browserless(limited.test_client()).login("admin", "wrong-password").status_code == 401
    host, port = base.removeprefix("http://").split(":")
    # A form is what the CSRF check would read (and wait for); the API's JSON, its view.
    for path, kind in (("/login", "application/x-www-form-urlencoded"), ("/api/v1/auth/tokens", "application/json")):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {kind}\r\n"
                      f"Content-Length: 1000\r\n\r\n".encode())
            answer = s.recv(4096)  # a read of the body would wait for it, past the timeout
        assert answer.startswith(b"HTTP/1.1 429 "), answer[:100]
        assert b"Retry-After: " in answer


# -- own password -------------------------------------------------------------------------
def test_changing_ones_password_ends_the_other_sign_ins(app):
    add_user(app, "bob", "bob-password-1")
    here, elsewhere = signed_in(app, "bob", "bob-password-1"), signed_in(app, "bob", "bob-password-1")
    page = here.client.post("/account", data={"csrf_token": here.csrf, "current": "bob-password-1",
                                              "password": "bob-password-2", "confirm": "bob-password-2"})
    assert page.status_code == 200 and "Your password is changed" in page.text
    assert here.client.get("/").status_code == 200
    assert elsewhere.client.get("/").status_code == 302
    assert Browserless(app.test_client()).login("bob", "bob-password-1").status_code == 401
    assert signed_in(app, "bob", "bob-password-2")


@pytest.mark.parametrize("form, field, message", [
    ({"current": "nope-nope-1", "password": "new-password-1", "confirm": "new-password-1"},
     "current", "This is not your current password."),
    ({"current": "bob-password-1", "password": "short", "confirm": "short"},
     "password", "Use 8 to 1024 characters."),
    ({"current": "bob-password-1", "password": "new-password-1", "confirm": "new-password-2"},
     "confirm", "The two passwords differ.")])
def test_a_bad_password_change_says_why_and_changes_nothing(app, form, field, message):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    page = bob.client.post("/account", data={"csrf_token": bob.csrf, **form})
    assert page.status_code == 422
    assert re.search(rf'id="err-{field}">{re.escape(message)}<', page.text)
    assert signed_in(app, "bob", "bob-password-1")
    assert audit_rows(app, action="password.change")[-1].result == "VALIDATION_FAILED"


# -- administration -----------------------------------------------------------------------
def test_admin_creates_a_user_who_can_then_sign_in(app, admin):
    response = admin.client.post("/admin/users", data={
        "csrf_token": admin.csrf, "username": "Dave", "password": "dave-password-1",
        "confirm": "dave-password-1", "role": "user"})
    assert response.status_code == 302 and response.headers["Location"] == "/admin/users/dave?done=created"
    assert "User dave created. They can sign in now." in admin.client.get(response.headers["Location"]).text
    listing = admin.client.get("/admin/users").text
    assert 'data-user="dave"' in listing
    dave = signed_in(app, "dave", "dave-password-1")
    assert dave.client.get("/admin/users").status_code == 403
    again = admin.client.post("/admin/users", data={
        "csrf_token": admin.csrf, "username": "dave", "password": "x-password-1",
        "confirm": "x-password-1", "role": "user"})
    assert again.status_code == 422 and "The username dave is taken." in again.text


def test_admin_makes_a_user_admin_and_resets_a_password(app, admin):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.client.get("/admin/audit").status_code == 403
    admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "admin"})
    assert bob.client.get("/admin/audit").status_code == 200
    response = admin.client.post("/admin/users/bob/password", data={
        "csrf_token": admin.csrf, "password": "bob-password-9", "confirm": "bob-password-9"})
    assert response.status_code == 302
    assert bob.client.get("/").status_code == 302  # a reset ends the user's sign-ins
    assert signed_in(app, "bob", "bob-password-9")


def test_an_admin_cannot_lock_themselves_out(app, admin):
    page = admin.client.post("/admin/users/admin", data={"csrf_token": admin.csrf, "role": "user",
                                                        "disabled": "on"})
    assert page.status_code == 422
    assert "You cannot disable your own account." in page.text
    assert "You cannot change your own role" in page.text
    assert admin.client.get("/admin/users").status_code == 200


def test_an_admin_sets_quotas_and_sees_usage(app, admin):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.create(name="bobs-vm", memory_mib="128").status_code == 201
    response = admin.client.post("/admin/users/bob", data={
        "csrf_token": admin.csrf, "role": "user", "quota_vms": "3", "quota_vcpus": "",
        "quota_memory_mib": "1024", "quota_disk_gib": "5"})
    assert response.status_code == 302
    row = find_row(admin.client.get("/admin/users").text, "bob", attr="data-user")
    assert row.cells[-4:] == ["1 / 3", "1 / 16", "128 / 1024", "1 / 5"]
    bad = admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user",
                                                     "quota_vms": "many"})
    assert bad.status_code == 422 and "Enter a whole number" in bad.text
    with app.app_context():
        assert db.session.scalar(select(User.quota_vms).where(User.username == "bob")) == 3


def test_the_command_line_manages_users(app):
    runner = app.test_cli_runner()
    result = runner.invoke(args=["users", "create", "erin", "--password", "erin-password-1"])
    assert result.exit_code == 0 and "created user erin" in result.output
    assert signed_in(app, "erin", "erin-password-1")
    listing = runner.invoke(args=["users", "list"]).output
    assert re.search(r"^erin\tuser\tactive\t0/10\t0/16\t0/16384\t0/200$", listing, re.M)
    erin = signed_in(app, "erin", "erin-password-1")
    result = runner.invoke(args=["users", "set-password", "erin", "--password", "erin-password-2"])
    assert result.exit_code == 0
    assert erin.client.get("/").status_code == 302
    result = runner.invoke(args=["users", "disable", "erin"])
    assert result.exit_code == 0 and "erin disabled" in result.output
    assert Browserless(app.test_client()).login("erin", "erin-password-2").status_code == 401
    assert runner.invoke(args=["users", "enable", "erin"]).exit_code == 0
    assert signed_in(app, "erin", "erin-password-2")
    result = runner.invoke(args=["users", "disable", "nobody"])
    assert result.exit_code != 0 and "There is no user nobody." in result.output
    result = runner.invoke(args=["users", "create", "erin", "--password", "erin-password-3"])
    assert result.exit_code != 0 and "taken" in result.output
    assert [(e.actor, e.action, e.target, e.result) for e in audit_rows(app, actor="cli")][:2] == [
        ("cli", "user.create", "erin", "ok"), ("cli", "password.reset", "erin", "ok")]


# -- quotas -------------------------------------------------------------------------------
def test_a_create_over_quota_names_the_limit_and_the_numbers_and_creates_nothing(app, libvirt_conn):
    add_user(app, "bob", "bob-password-1", quota_memory_mib=4096, quota_vcpus=2)
    bob = signed_in(app, "bob", "bob-password-1")
    for name, memory in (("one", "2048"), ("two", "1536")):
        assert bob.create(name=name, memory_mib=memory).status_code == 201
        bob.wait_state(name, "running")
    response = bob.create(name="three", memory_mib="1024", vcpus="2")
    assert response.status_code == 409
    assert "memory quota: 3584 of 4096 MiB used, 1024 requested" in response.text
    assert "vCPU quota: 2 of 2 vCPUs used, 2 requested" in response.text
    assert "three" not in bob.rows()
    assert sorted(d.name() for d in libvirt_conn.listAllDomains()) == ["one", "two"]
    refused = audit_rows(app, action="vm.create", result="QUOTA_EXCEEDED")
    assert len(refused) == 1 and "memory quota: 3584 of 4096" in refused[0].detail
    # Without htmx the whole page comes back with the message at its field.
    page = bob.client.post("/vms", data={"csrf_token": bob.csrf, "name": "three", "vcpus": "1",
                                         "memory_mib": "1024", "disk_gib": "1"})
    assert page.status_code == 409 and 'id="err-memory_mib">memory quota' in page.text


def test_the_vm_count_quota(app):
    add_user(app, "bob", "bob-password-1", quota_vms=1)
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.create(name="first").status_code == 201
    response = bob.create(name="second")
    assert response.status_code == 409 and "VM quota: 1 of 1 VMs used, 1 requested" in response.text


def test_concurrent_creates_at_the_quota_edge_exactly_the_allowed_number_succeed(app, libvirt_conn):
    add_user(app, "bob", "bob-password-1", quota_vms=3)
    clients = [signed_in(app, "bob", "bob-password-1") for _ in range(8)]
    barrier = threading.Barrier(len(clients))
    statuses = {}

    def create(n: int, b: Browserless):
        barrier.wait()
        statuses[n] = b.create(name=f"race-{n}").status_code

    threads = [threading.Thread(target=create, args=(n, b)) for n, b in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(statuses.values()) == [201] * 3 + [409] * 5
    with app.app_context():
        names = db.session.scalars(select(VM.name)).all()
    assert len(names) == 3
    wait_until(lambda: len(libvirt_conn.listAllDomains()) == 3 and all(
        d.isActive() for d in libvirt_conn.listAllDomains()), what="the three VMs to run")
    assert sorted(d.name() for d in libvirt_conn.listAllDomains()) == sorted(names)


def test_a_deleted_vm_frees_its_quota(app):
    add_user(app, "bob", "bob-password-1", quota_vms=1)
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.create(name="first").status_code == 201
    bob.wait_state("first", "running")
    assert bob.htmx_post(f"/vms/{uuid_of(app, 'first')}/delete").status_code == 202
    bob.wait_state("first", None)
    assert bob.create(name="second").status_code == 201


def test_the_account_page_shows_quota_and_usage(app):
    add_user(app, "bob", "bob-password-1", quota_disk_gib=7)
    bob = signed_in(app, "bob", "bob-password-1")
    bob.create(name="bobs", disk_gib="2")
    page = bob.client.get("/account").text
    assert "<title>Your account · LIMEN</title>" in page
    assert re.search(r"<th>Disk</th><td>2 GiB</td><td>7 GiB</td>", page)


# -- what admins see ----------------------------------------------------------------------
def test_an_admin_filters_the_table_by_owner_and_the_polls_keep_the_filter(app, admin):
    add_user(app, "bob", "bob-password-1")
    signed_in(app, "bob", "bob-password-1").create(name="bobs")
    admin.create(name="admins")
    everyone = admin.client.get("/").text
    assert "bobs" in everyone and "admins" in everyone and 'id="sort-owner"' in everyone
    only_bob = admin.client.get("/?owner=bob").text
    assert "bobs" in only_bob and "admins" not in only_bob
    poll_url = re.search(r'hx-get="(/vms/rows\?v=[^"]+)"', only_bob).group(1).replace("&amp;", "&")
    assert "owner=bob" in poll_url
    rows = admin.client.get(re.sub(r"v=[^&]+", "v=stale", poll_url), headers={"HX-Request": "true"}).text
    assert "bobs" in rows and "admins" not in rows
    # A user's own filter parameter is ignored: they only ever see their own.
    bob = signed_in(app, "bob", "bob-password-1")
    assert "admins" not in bob.client.get("/?owner=admin").text


# -- the audit log ------------------------------------------------------------------------
def test_the_audit_log_records_who_did_what_and_never_a_secret(app, admin, libvirt_conn):
    add_user(app, "bob", "bob-password-1")
    Browserless(app.test_client()).login("bob", "wrong-secret-1")
    bob = signed_in(app, "bob", "bob-password-1", REMOTE_ADDR="192.0.2.7")
    assert bob.create(name="audited").status_code == 201
    bob.wait_state("audited", "running")
    vm_uuid = uuid_of(app, "audited")
    assert bob.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
    bob.wait_state("audited", "shutoff")
    ticket = bob.client.post(f"/vms/{vm_uuid}/console/ticket", headers={
        "X-CSRFToken": bob.csrf, "Accept": "application/json"}).json["ticket"]
    assert admin.htmx_post(f"/vms/{vm_uuid}/start").status_code == 202  # an admin on bob's VM
    assert bob.htmx_post("/vms/00000000-0000-0000-0000-000000000000/start").status_code == 404
    events = [(e.actor, e.action, e.vm_name, e.result) for e in audit_rows(app) if e.actor != "admin"
              or e.action.startswith("vm.")]
    assert (None, "sign-in", None, "SIGN_IN_FAILED") in events
    assert ("bob", "sign-in", None, "ok") in events
    assert ("bob", "vm.create", "audited", "accepted") in events
    assert ("bob", "vm.create", "audited", "ok") in events  # the operation's end
    assert ("bob", "vm.force-off", "audited", "accepted") in events
    assert ("admin", "vm.start", "audited", "accepted") in events
    assert ("bob", "vm.start", None, "VM_NOT_FOUND") in events
    created = audit_rows(app, action="vm.create", result="accepted")[0]
    assert created.ip == "192.0.2.7" and created.vm_uuid == vm_uuid and created.operation_id
    with app.app_context():
        dump = repr([tuple(r) for r in db.session.execute(db.text("SELECT * FROM audit_event"))])
    for secret in ("bob-password-1", "wrong-secret-1", ticket, cookie_of(bob)):
        assert secret not in dump

    page = admin.client.get("/admin/audit?actor=bob&action=vm.&result=refused").text
    assert "VM_NOT_FOUND" in page and "accepted" not in page
    page = admin.client.get("/admin/audit?vm=audited").text
    assert "<td>vm.force-off</td>" in page and "<td>sign-in</td>" not in page
    assert "No events match." in admin.client.get("/admin/audit?since=2999-01-01").text


def test_the_audit_log_pages_newest_first(app, admin):
    with app.app_context():
        for n in range(130):
            db.session.add(AuditEvent(action="test.event", result="ok", detail=f"event {n}"))
        db.session.commit()
    first = admin.client.get("/admin/audit?action=test.").text
    assert "event 129<" in first and "event 29<" not in first and "Older" in first
    second = admin.client.get("/admin/audit?action=test.&page=2").text
    assert "event 29<" in second and "event 129<" not in second


# -- behind a proxy -----------------------------------------------------------------------
# What a TLS proxy passes on; over HTTPS the CSRF check also wants a same-site Referer,
# which browsers send (Referrer-Policy: same-origin).
FORWARDED = {"HTTP_X_FORWARDED_FOR": "203.0.113.9", "HTTP_X_FORWARDED_PROTO": "https",
             "HTTP_X_FORWARDED_HOST": "limen.example", "HTTP_REFERER": "https://limen.example/"}


def console_url_and_address(app) -> tuple[str, str]:
    """Through the forwarding headers: the console URL a ticket names, and the address the
    audit log recorded for the sign-in."""
    admin = signed_in(app, "admin", admin_password(app), **FORWARDED)
    assert admin.create(name="behind").status_code == 201
    ticket = admin.client.post(f"/vms/{uuid_of(app, 'behind')}/console/ticket", headers={
        "X-CSRFToken": admin.csrf, "Accept": "application/json"}).json
    return ticket["ws_url"], audit_rows(app, action="sign-in")[-1].ip


def test_behind_a_trusted_proxy_address_and_scheme_come_from_it(make_app, node_xml):
    url, address = console_url_and_address(make_app(LIBVIRT_URI=f"test://{node_xml}", TRUSTED_PROXIES=1))
    assert url.startswith("wss://limen.example/vms/") and address == "203.0.113.9"


def test_without_trusted_proxies_forwarded_headers_are_ignored(app):
    url, address = console_url_and_address(app)
    assert url.startswith("ws://localhost/vms/") and address == "127.0.0.1"


def test_a_tenants_poll_cannot_tell_that_another_tenants_vm_changed(make_app, node_xml):
    """The table's poll answers 204 (nothing changed) to alice while only bob's VM changes:
    from 200 against 204 she would learn when another tenant acts."""
    # No guest watch: what it writes about her own VM a few seconds after it runs would be news.
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", GUEST_POLL_INTERVAL=3600)
    libvirt_conn = runtime.get(app).hypervisor.connection.get()
    add_user(app, "alice", "alice-password-1")
    add_user(app, "bob", "bob-password-1")
    alice, bob = signed_in(app, "alice", "alice-password-1"), signed_in(app, "bob", "bob-password-1")
    alice.create(name="alices")
    alice.wait_state("alices", "running")
    poll = re.search(r'hx-get="(/vms/rows\?v=[^"]+)"', alice.client.get("/").text).group(1)
    assert alice.client.get(poll, headers={"HX-Request": "true"}).status_code == 204
    bob.create(name="bobs")
    bob.wait_state("bobs", "running")
    libvirt_conn.lookupByName("bobs").destroy()
    bob.wait_state("bobs", "shutoff")
    assert alice.client.get(poll, headers={"HX-Request": "true"}).status_code == 204
    assert "bobs" in bob.rows()
    libvirt_conn.lookupByName("alices").destroy()  # her own VM: the poll says so
    changed = wait_until(lambda: (r := alice.client.get(poll, headers={"HX-Request": "true"})).status_code == 200 and r,
                         10, "alice's poll to show her VM's change")
    assert 'data-state="shutoff"' in changed.text
