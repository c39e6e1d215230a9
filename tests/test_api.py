"""/api/v1 (fast tier): tokens, every endpoint's answer and its errors, the same rules as the
pages underneath, and the OpenAPI document that describes it."""
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from helpers import (Api, Browserless, add_user, admin_password, close_code, open_console, receive_exactly,
                     signed_in, token_for, wait_until)
from limen.extensions import db
from limen.models import ApiToken, AuditEvent, utcnow
from stub_vnc import StubVNC
from test_console import BANNER


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def test_create_poll_act_and_delete(app, api, libvirt_conn):
    created = api("POST", "/vms", {"name": "scripted", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert created.status_code == 202
    vm, op = created.json["vm"], created.json["operation"]
    assert (vm["name"], vm["state"], vm["owner"], op["kind"]) == ("scripted", "creating", "admin", "create")
    done = api.wait_op(op["id"])
    assert [s["step"] for s in done["steps"]] == ["Creating the disk", "Defining the VM", "Starting the VM",
                                                  "Waiting for it to run"]
    assert api("GET", f"/vms/{vm['uuid']}").json["state"] == "running"
    refused = api("POST", f"/vms/{vm['uuid']}/actions/start")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "VM_STATE_CONFLICT"
    off = api("POST", f"/vms/{vm['uuid']}/actions/force-off")
    assert off.status_code == 202 and api.wait_op(off.json["operation"]["id"])["kind"] == "force-off"
    assert api("GET", f"/vms/{vm['uuid']}").json["state"] == "shutoff"
    gone = api("DELETE", f"/vms/{vm['uuid']}")
    assert gone.status_code == 202
    api.wait_op(gone.json["operation"]["id"])
    assert api("GET", f"/vms/{vm['uuid']}").json["error"]["code"] == "VM_NOT_FOUND"
    assert libvirt_conn.listAllDomains() == []


def test_validation_names_every_field_and_creates_nothing(app, api, libvirt_conn):
    response = api("POST", "/vms", {"name": "Bad Name", "vcpus": "two", "memory_mib": 64, "extra": 1})
    assert response.status_code == 422
    error = response.json["error"]
    assert error["code"] == "VALIDATION_FAILED"
    assert set(error["details"]["fields"]) == {"vcpus", "disk_gib", "extra"}  # its shape first
    # Then the values, judged by the same rules and words as the page's form.
    values = api("POST", "/vms", {"name": "Bad Name", "vcpus": 0, "memory_mib": 64, "disk_gib": 1})
    assert values.status_code == 422 and values.json["error"]["details"]["fields"] == {
        "name": "Use 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit.",
        "vcpus": "Choose from 1 to 16 (the host's CPU count)."}
    odd = api("POST", "/vms", {"name": "\ud800", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert odd.status_code == 422 and "lone surrogate" in odd.json["error"]["details"]["fields"]["name"]
    assert api("POST", "/vms", [1, 2]).json["error"]["details"]["fields"] == {
        "body": "Send a JSON object (Content-Type: application/json)."}
    too_big = api("POST", "/vms", {"name": "huge", "vcpus": 1, "memory_mib": 10 ** 9, "disk_gib": 1})
    assert too_big.status_code == 422 and "memory_mib" in too_big.json["error"]["details"]["fields"]
    assert api("GET", "/vms").json["total"] == 0 and libvirt_conn.listAllDomains() == []


def test_the_list_filters_and_pages(app, api):
    add_user(app, "bob", "bob-password-1")
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    for n in range(3):
        api("POST", "/vms", {"name": f"a{n}", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    bob("POST", "/vms", {"name": "bobs", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    wait_until(lambda: api("GET", "/vms?state=running").json["total"] == 4, 10, "four running VMs")
    page = api("GET", "/vms?per_page=2&page=2").json
    assert (page["total"], [v["name"] for v in page["items"]]) == (4, ["a2", "bobs"])
    assert [v["name"] for v in api("GET", "/vms?owner=bob").json["items"]] == ["bobs"]
    assert [v["name"] for v in bob("GET", "/vms?owner=admin").json["items"]] == ["bobs"]  # only his
    assert api("GET", "/vms?per_page=0").status_code == 422


def test_another_users_vm_and_operation_are_not_found(app, api):
    add_user(app, "bob", "bob-password-1")
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    created = api("POST", "/vms", {"name": "admins", "vcpus": 1, "memory_mib": 64, "disk_gib": 1}).json
    uuid, op_id = created["vm"]["uuid"], created["operation"]["id"]
    for method, path in (("GET", f"/vms/{uuid}"), ("DELETE", f"/vms/{uuid}"),
                         ("POST", f"/vms/{uuid}/actions/reboot"), ("POST", f"/vms/{uuid}/console")):
        response = bob(method, path)
        assert response.status_code == 404 and response.json["error"]["code"] == "VM_NOT_FOUND", path
    assert bob("GET", f"/operations/{op_id}").json["error"]["code"] == "OPERATION_NOT_FOUND"  # as if none
    assert api("GET", "/operations/999").json["error"]["code"] == "OPERATION_NOT_FOUND"
    assert bob("GET", "/users").status_code == 403


def test_the_quota_applies_as_on_the_page(app):
    add_user(app, "bob", "bob-password-1", quota_vms=1)
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    assert bob("POST", "/vms", {"name": "one", "vcpus": 1, "memory_mib": 64, "disk_gib": 1}).status_code == 202
    refused = bob("POST", "/vms", {"name": "two", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert refused.status_code == 409 and refused.json["error"]["code"] == "QUOTA_EXCEEDED"
    assert refused.json["error"]["details"]["fields"]["name"] == "VM quota: 1 of 1 VMs used, 1 requested"


# -- tokens -------------------------------------------------------------------------------
def test_no_token_a_wrong_token_and_a_session_cookie_are_all_401(app, admin):
    for headers in ({}, {"Authorization": "Bearer limen_nope"}, {"Authorization": "Basic YWRtaW4="}):
        response = app.test_client().get("/api/v1/vms", headers=headers)
        assert response.status_code == 401 and response.json["error"]["code"] == "TOKEN_INVALID"
        assert response.headers["WWW-Authenticate"] == "Bearer"
    cookie_only = admin.client.get("/api/v1/vms")  # signed in to the pages: not to the API
    assert cookie_only.status_code == 401


def test_a_wrong_password_gets_no_token_and_says_nothing_more(app):
    for username in ("admin", "nobody"):
        response = app.test_client().post("/api/v1/auth/tokens", json={
            "username": username, "password": "wrong-password", "name": "t"})
        assert response.status_code == 401 and response.json["error"] == {
            "code": "SIGN_IN_FAILED", "message": "Wrong username or password.", "details": {}}


def test_token_requests_share_the_sign_in_limit(make_app, node_xml):
    from limen.config import Config

    app = make_app(LIBVIRT_URI=f"test://{node_xml}", LOGIN_LIMIT_PER_IP=Config.LOGIN_LIMIT_PER_IP)
    client = app.test_client()
    for _ in range(3):  # guesses on the sign-in page count here too
        assert Browserless(client).login("admin", "guess").status_code == 401
    answers = [client.post("/api/v1/auth/tokens", json={"username": "admin", "password": "guess",
                                                        "name": "t"}).status_code for _ in range(3)]
    assert answers == [401, 401, 429]
    assert Browserless(client).login("admin", admin_password(app)).status_code == 429
    last = client.post("/api/v1/auth/tokens", json={"username": "admin", "password": "x", "name": "t"})
    assert last.json["error"]["code"] == "TOO_MANY_ATTEMPTS" and int(last.headers["Retry-After"]) >= 1


def test_an_expired_or_revoked_token_stops_working(app, admin):
    token = token_for(app, "admin", admin_password(app), expires_days=1)
    api = Api(app, token)
    assert api("GET", "/vms").status_code == 200
    with app.app_context():
        row = db.session.scalars(select(ApiToken)).one()
        assert row.token_hash != token and token not in repr(db.session.execute(select(ApiToken)).all())
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    assert api("GET", "/vms").json["error"]["message"] == "This API token has expired."

    page = admin.client.post("/account/tokens", data={"csrf_token": admin.csrf, "name": "deploy"})
    assert page.status_code == 201
    made = re.search(r'<code id="new-token">([^<]+)</code>', page.text).group(1)
    assert "<td>deploy</td>" in page.text
    deploy = Api(app, made)
    assert deploy("GET", "/vms").status_code == 200
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id).where(ApiToken.name == "deploy"))
    assert made not in admin.client.get("/account").text  # shown once
    assert admin.client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": admin.csrf}).status_code == 302
    assert deploy("GET", "/vms").json["error"]["message"] == "This API token was revoked."


def test_a_disabled_users_token_stops_working(app, admin):
    add_user(app, "bob", "bob-password-1")
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    assert bob("GET", "/vms").status_code == 200
    admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user", "disabled": "on"})
    assert bob("GET", "/vms").status_code == 401
    # Enabled again, bob signs in; the token of before stays dead (it may be what got him disabled).
    admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user"})
    assert signed_in(app, "bob", "bob-password-1")
    assert bob("GET", "/vms").json["error"]["message"] == "This API token was revoked."


@pytest.mark.parametrize("keep", [False, True])
def test_changing_ones_own_password_revokes_ones_tokens_unless_kept(app, keep):
    add_user(app, "bob", "bob-password-1")
    token = Api(app, token_for(app, "bob", "bob-password-1"))
    bob = signed_in(app, "bob", "bob-password-1")
    form = {"csrf_token": bob.csrf, "current": "bob-password-1", "password": "bob-password-2",
            "confirm": "bob-password-2", **({"keep_tokens": "on"} if keep else {})}
    page = bob.client.post("/account", data=form)
    assert page.status_code == 200 and "Your password is changed" in page.text
    if keep:
        assert "revoked" not in page.text.split("Your password is changed")[1].split("</p>")[0]
        assert token("GET", "/vms").status_code == 200
    else:
        assert "your 1 API token revoked" in page.text
        assert token("GET", "/vms").json["error"]["message"] == "This API token was revoked."


def test_tokens_from_the_command_line(app):
    result = app.test_cli_runner().invoke(args=["tokens", "create", "admin", "--name", "backup"])
    assert result.exit_code == 0
    assert Api(app, result.output.strip())("GET", "/vms").status_code == 200
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "token.create")).one()
        assert (event.actor, event.target, event.result) == ("cli", "admin", "ok")
        assert result.output.strip() not in (event.detail or "")


# -- users (admins) -----------------------------------------------------------------------
def test_admins_manage_users(app, api):
    made = api("POST", "/users", {"username": "carol", "password": "carol-password-1"})
    assert made.status_code == 201 and made.json["role"] == "user"
    assert api("POST", "/users", {"username": "carol", "password": "carol-password-1"}).status_code == 422
    patched = api("PATCH", f"/users/{made.json['id']}", {"quota_memory_mib": 1024, "role": "admin"})
    assert patched.status_code == 200
    assert (patched.json["quota"]["memory_mib"], patched.json["role"]) == (1024, "admin")
    assert api("PATCH", f"/users/{made.json['id']}", {"quota_vms": None}).json["quota"]["vms"] == 10
    assert api("PATCH", "/users/999", {"disabled": True}).json["error"]["code"] == "USER_NOT_FOUND"
    assert api("PATCH", f"/users/{made.json['id']}", {}).status_code == 422
    assert any(u["username"] == "carol" for u in api("GET", "/users").json)


# -- the console --------------------------------------------------------------------------
def test_a_script_opens_the_console_with_a_ticket_or_its_token(app, api, libvirt_conn, live_server):
    from test_console import adopt, ws_url

    stub = StubVNC()
    try:
        base = live_server(app)
        vm_uuid = adopt(app, libvirt_conn, "scripted-screen", stub.port)
        ticket = api("POST", f"/vms/{vm_uuid}/console")
        assert ticket.status_code == 201
        url = ticket.json["ws_url"].replace("ws://localhost", f"ws{base.removeprefix('http')}")
        ws = open_console(url, origin=None)
        assert receive_exactly(ws, len(BANNER)) == BANNER
        ws.close()
        ws = open_console(ws_url(base, vm_uuid, None), origin=None, headers=api.headers)
        assert receive_exactly(ws, len(BANNER)) == BANNER
        ws.close()
        ws = open_console(ws_url(base, vm_uuid, None), origin=None, headers={"Authorization": "Bearer nope"})
        assert close_code(ws) == (4401, "TOKEN_INVALID")
    finally:
        stub.close()


def test_a_console_ticket_names_its_kind(app, api):
    vm_uuid = api("POST", "/vms", {"name": "ticketed", "vcpus": 1, "memory_mib": 64, "disk_gib": 1}).json["vm"]["uuid"]
    serial = api("POST", f"/vms/{vm_uuid}/console", {"kind": "serial"})
    assert serial.status_code == 201
    assert serial.json["ws_url"].endswith(f"/vms/{vm_uuid}/serial/ws?ticket={serial.json['ticket']}")
    screen = api("POST", f"/vms/{vm_uuid}/console", {"kind": "screen"})
    assert screen.json["ws_url"].endswith(f"/vms/{vm_uuid}/console/ws?ticket={screen.json['ticket']}")
    for body, field in (({"kind": "printer"}, "kind"), ({"kind": 1}, "kind"), ({"colour": "red"}, "colour")):
        refused = api("POST", f"/vms/{vm_uuid}/console", body)
        assert refused.status_code == 422, body
        assert field in refused.json["error"]["details"]["fields"], refused.json


# -- the contract -------------------------------------------------------------------------
def test_the_openapi_document_lists_exactly_the_api_routes(app):
    spec = app.test_client().get("/api/v1/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    documented = {(f"/api/v1{path}", method.upper()) for path, item in spec["paths"].items()
                  for method in item if method != "parameters"}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("api.") and rule.endpoint != "api.openapi":
            path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
            path = path.replace("{vm_uuid}", "{uuid}").replace("{op_id}", "{id}").replace("{user_id}", "{id}") \
                       .replace("{medium_id}", "{id}").replace("{host_id}", "{id}")
            path = re.sub(r"\{any\([^)]*\):action\}|<any\([^>]*\):action>", "{action}", path)
            routes |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == routes


def test_the_docs_page_renders_the_document(app):
    page = app.test_client().get("/api/docs")
    assert page.status_code == 200
    assert "POST /api/v1/vms" in page.text and 'id="schema-VMCreate"' in page.text


def test_a_password_reset_revokes_the_users_tokens(app, admin):
    """A reset is how an account is taken back: a token minted by whoever had it must die too."""
    add_user(app, "bob", "bob-password-1")
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    assert bob("GET", "/vms").status_code == 200
    assert admin.client.post("/admin/users/bob/password", data={
        "csrf_token": admin.csrf, "password": "bob-password-2", "confirm": "bob-password-2"}).status_code == 302
    assert bob("GET", "/vms").json["error"]["message"] == "This API token was revoked."


def test_an_over_long_value_is_cut_and_marked_in_the_audit_log_not_refused(app):
    """A user's refusal carries what they sent: a megabyte of it is kept as 64 characters."""
    add_user(app, "bob", "bob-password-1")
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    huge = "n" * 2 ** 20
    response = bob("POST", f"/media?kind=iso&name={huge}&os_kind=linux", {})
    assert (response.status_code, response.json["error"]["code"]) == (403, "NOT_ALLOWED")
    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "media.upload")).one()
        assert (event.actor, event.result) == ("bob", "NOT_ALLOWED")
        assert len(event.target) == 64 and event.target == "n" * 58 + "…[cut]"


def _answer_to_headers_alone(base: str, request: bytes, timeout: float = 5.0) -> bytes:
    """Send only ``request``'s head (its Content-Length promises a body that never comes) and
    return the status line: a server that waited for the body would answer nothing in time."""
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(base)
    with socket.create_connection((url.hostname, url.port), timeout=timeout) as s:
        s.sendall(request)
        return s.recv(4096).split(b"\r\n", 1)[0]


def test_a_body_over_the_limit_is_refused_before_it_is_read(app, base):
    head = (b"POST /api/v1/auth/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 157286400\r\n\r\n{")
    assert _answer_to_headers_alone(base, head) == b"HTTP/1.1 413 REQUEST ENTITY TOO LARGE"
    # Within the limit, the same route answers as before.
    response = app.test_client().post("/api/v1/auth/tokens", json={"username": "admin", "password": "x" * 1000,
                                                                   "name": "t"})
    assert response.status_code == 401
