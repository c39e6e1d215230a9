"""An open console ends when its user loses the right to it, whichever process took it away:
a disable from the host's command line, a demotion, a password reset, a sign-out, a revoked
API token (fast tier: the test driver, with a stub VNC server in place of QEMU)."""
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from helpers import Api, add_user, close_code, get_ticket, open_console, receive_exactly, signed_in, token_for
from limen.extensions import db
from limen.models import ApiToken
from test_console import BANNER, adopt, ws_url

ROOT = Path(__file__).resolve().parent.parent


def opened(base: str, vm_uuid: str, ticket: str):
    """A console, open and showing the VM's screen (the stub's banner)."""
    ws = open_console(ws_url(base, vm_uuid, ticket), base)
    assert receive_exactly(ws, len(BANNER)) == BANNER
    return ws


def still_open(ws) -> None:
    ws.send(b"still here")  # the stub echoes
    assert receive_exactly(ws, len(b"still here")) == b"still here"
    ws.close()


def test_flask_users_disable_in_another_process_closes_the_console(app, base, libvirt_conn, stub):
    add_user(app, "alice", "alice-password-1")
    alice = signed_in(app, "alice", "alice-password-1")
    vm = adopt(app, libvirt_conn, "alices-screen", stub.port, owner="alice")
    ws = opened(base, vm, get_ticket(alice, vm).json["ticket"])
    env = {**os.environ, "LIMEN_INSTANCE_PATH": app.instance_path, "LIMEN_LIBVIRT_URI": app.config["LIBVIRT_URI"]}
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "disable", "alice"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "alice disabled" in done.stdout
    assert close_code(ws, timeout=5) == (4403, "ACCOUNT_DISABLED")


def test_signing_out_ends_the_consoles_of_that_sign_in_only(app, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    here, there = signed_in(app, "bob", "bob-password-1"), signed_in(app, "bob", "bob-password-1")
    vm = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    from_here = opened(base, vm, get_ticket(here, vm).json["ticket"])
    from_there = opened(base, vm, get_ticket(there, vm).json["ticket"])
    assert here.client.post("/logout", data={"csrf_token": here.csrf}).status_code == 302
    assert close_code(from_here, timeout=5) == (4403, "SIGN_IN_ENDED")
    still_open(from_there)


def test_a_ticket_from_a_sign_in_that_has_ended_opens_nothing(app, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    vm = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    ticket = get_ticket(bob, vm).json["ticket"]
    assert bob.client.post("/logout", data={"csrf_token": bob.csrf}).status_code == 302
    assert close_code(open_console(ws_url(base, vm, ticket), base)) == (4401, "SIGN_IN_ENDED")


def test_a_password_reset_ends_the_users_consoles(app, admin, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    vm = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    ws = opened(base, vm, get_ticket(bob, vm).json["ticket"])
    reset = admin.client.post("/admin/users/bob/password", data={
        "csrf_token": admin.csrf, "password": "new-password-1", "confirm": "new-password-1"})
    assert reset.status_code == 302
    assert close_code(ws, timeout=5) == (4403, "SIGN_IN_ENDED")


def test_changing_ones_own_password_keeps_this_sign_ins_console(app, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    here, there = signed_in(app, "bob", "bob-password-1"), signed_in(app, "bob", "bob-password-1")
    vm = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    from_here = opened(base, vm, get_ticket(here, vm).json["ticket"])
    from_there = opened(base, vm, get_ticket(there, vm).json["ticket"])
    changed = here.client.post("/account", data={"csrf_token": here.csrf, "current": "bob-password-1",
                                                  "password": "new-password-1", "confirm": "new-password-1"})
    assert changed.status_code == 200
    assert close_code(from_there, timeout=5) == (4403, "SIGN_IN_ENDED")
    still_open(from_here)


def test_revoking_a_token_ends_the_consoles_opened_with_it(app, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    api = Api(app, token_for(app, "bob", "bob-password-1"))
    vm = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    by_token = open_console(ws_url(base, vm, None), origin=None, headers=api.headers)
    assert receive_exactly(by_token, len(BANNER)) == BANNER
    ticket = api("POST", f"/vms/{vm}/console").json["ticket"]  # a ticket the token asked for
    by_ticket = opened(base, vm, ticket)
    bob = signed_in(app, "bob", "bob-password-1")
    with app.app_context():
        token_id = db.session.scalar(select(ApiToken.id))
    assert bob.client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": bob.csrf}).status_code == 302
    for ws in (by_token, by_ticket):
        assert close_code(ws, timeout=5) == (4403, "TOKEN_INVALID")
