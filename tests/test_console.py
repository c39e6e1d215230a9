"""The console WebSocket on the test driver, with a stub VNC server in place of QEMU (fast
tier): tickets, Origin, refusals with their close codes, the bridge, and no leaks."""
import hashlib
import socket
import os
import threading
from datetime import datetime, timedelta

import libvirt
import pytest
from sqlalchemy import select, update

from helpers import (Browserless, add_user, audit_rows, close_code, get_ticket, open_console,
                      receive_exactly, wait_until)
from limen import runtime
from limen.extensions import db
from limen.models import VM, ConsoleSession, ConsoleTicket, Operation, User
from stub_vnc import StubVNC

BANNER = b"RFB 003.008\n"


def adopt(app, conn, name: str, port: int, owner: str = "admin") -> str:
    """A stopped domain whose VNC display is the stub, owned in LIMEN by ``owner``."""
    dom = conn.defineXML(
        f"<domain type='test'><name>{name}</name><memory>65536</memory><os><type>hvm</type></os>"
        f"<devices><graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/></devices></domain>")
    with app.app_context():
        user = db.session.scalar(select(User).where(User.username == owner))
        db.session.add(VM(uuid=dom.UUIDString(), name=name, owner_id=user.id, vcpus=1,
                          memory_mib=64, disk_gib=1, state="shutoff"))
        db.session.commit()
    return dom.UUIDString()


@pytest.fixture
def vm(app, libvirt_conn, stub):
    return adopt(app, libvirt_conn, "screen", stub.port)


def starts(app, vm_uuid) -> int:
    with app.app_context():
        return len(db.session.scalars(select(Operation).where(
            Operation.vm_uuid == vm_uuid, Operation.kind == "start")).all())


def ws_url(base: str, vm_uuid: str, ticket: str | None) -> str:
    url = f"ws{base.removeprefix('http')}/vms/{vm_uuid}/console/ws"
    return f"{url}?ticket={ticket}" if ticket is not None else url


# -- the way in ---------------------------------------------------------------------------
def test_a_ticket_is_random_stored_hashed_short_lived_and_names_the_websocket(app, admin, vm, base):
    response = get_ticket(admin, vm)
    assert response.status_code == 201  # as from the API
    body = response.json
    assert len(body["ticket"]) >= 43  # 32 random bytes, URL-safe base64
    assert body["ws_url"].endswith(f"/vms/{vm}/console/ws?ticket={body['ticket']}")
    assert body["ws_url"].startswith("ws://")
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(seconds=50) < expires - datetime.now(expires.tzinfo) <= timedelta(seconds=60)
    with app.app_context():
        stored = db.session.scalars(select(ConsoleTicket.token_hash)).all()
    assert stored == [hashlib.sha256(body["ticket"].encode()).hexdigest()]
    assert get_ticket(admin, vm).json["ticket"] != body["ticket"]


def test_a_ticket_needs_the_csrf_token_and_a_vm_of_ones_own(app, admin, vm):
    no_csrf = admin.client.post(f"/vms/{vm}/console/ticket", headers={"Accept": "application/json"})
    assert no_csrf.status_code == 400 and no_csrf.json["error"]["code"] == "CSRF_FAILED"
    unknown = get_ticket(admin, "00000000-0000-0000-0000-000000000000")
    assert unknown.status_code == 404 and unknown.json["error"]["code"] == "VM_NOT_FOUND"
    add_user(app, "alice", "alice-password-1")
    alice = Browserless(app.test_client())
    alice.login("alice", "alice-password-1")
    assert get_ticket(alice, vm).status_code == 404


def test_a_stopped_vm_is_started_and_bridged_both_ways(app, admin, vm, base, libvirt_conn, caplog):
    ticket = get_ticket(admin, vm).json
    ws = open_console(ws_url(base, vm, ticket["ticket"]), origin=base)
    assert receive_exactly(ws, len(BANNER)) == BANNER
    assert libvirt_conn.lookupByUUIDString(vm).isActive()
    ws.send(b"\x00" * 70_000)  # bigger than one read: the stub echoes it back whole
    assert receive_exactly(ws, 70_000) == b"\x00" * 70_000
    ws.close()

    def recorded():
        with app.app_context():
            return db.session.scalar(select(ConsoleSession).where(ConsoleSession.ended_at.is_not(None)))

    session = wait_until(recorded, 10, "the console session to be recorded")
    assert (session.end, session.bytes_from_client) == ("CLIENT_CLOSED", 70_000)
    assert session.bytes_to_client == 70_000 + len(BANNER)
    assert starts(app, vm) == 1
    assert ticket["ticket"] not in caplog.text  # never in a log line, the request line included
    # The audit log names the VM, as it does for every other action.
    assert {(e.action, e.vm_name) for e in audit_rows(app, vm_uuid=vm)} >= {("console.open", "screen"),
                                                                           ("console.close", "screen")}


def test_when_the_vnc_server_hangs_up_the_browser_is_told(app, admin, libvirt_conn, base):
    hang_up = StubVNC(close_after_banner=True)
    try:
        vm = adopt(app, libvirt_conn, "hangs-up", hang_up.port)
        ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), origin=base)
        assert receive_exactly(ws, len(BANNER)) == BANNER
        assert close_code(ws) == (1000, "VNC_CLOSED")
    finally:
        hang_up.close()


# -- refusals -----------------------------------------------------------------------------
def assert_refused(app, libvirt_conn, vm, ws, code, reason):
    assert close_code(ws) == (code, reason)
    assert not libvirt_conn.lookupByUUIDString(vm).isActive()
    assert starts(app, vm) == 0


def test_no_ticket_or_an_unknown_one(app, vm, base, libvirt_conn):
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, None), base), 4401, "TICKET_INVALID")
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, "made-up"), base), 4401, "TICKET_INVALID")


def test_an_expired_ticket(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    with app.app_context():
        db.session.execute(update(ConsoleTicket).values(expires_at=datetime(2000, 1, 1)))
        db.session.commit()
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, ticket["ticket"]), base), 4401, "TICKET_INVALID")


def test_a_ticket_works_once(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    first = open_console(ws_url(base, vm, ticket["ticket"]), base)
    assert receive_exactly(first, len(BANNER)) == BANNER
    first.close()
    libvirt_conn.lookupByUUIDString(vm).destroy()
    with app.app_context():
        db.session.execute(update(Operation).values(kind="start-before"))  # count anew
        db.session.commit()
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, ticket["ticket"]), base), 4401, "TICKET_INVALID")


def test_a_ticket_for_another_vm(app, admin, vm, base, libvirt_conn, stub):
    other = adopt(app, libvirt_conn, "other", stub.port)
    ticket = get_ticket(admin, other).json["ticket"]
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, ticket), base), 4401, "TICKET_INVALID")


def test_another_users_ticket(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    add_user(app, "mallory", "mallory-password-1")
    mallory = Browserless(app.test_client())
    mallory.login("mallory", "mallory-password-1")
    cookie = f"session={mallory.client.get_cookie('session').value}"
    ws = open_console(ws_url(base, vm, ticket["ticket"]), base, cookie=cookie)
    assert_refused(app, libvirt_conn, vm, ws, 4403, "NOT_ALLOWED")


def test_a_foreign_origin_is_refused_before_the_ticket_is_looked_at(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    for origin in ("http://evil.example", base.replace("127.0.0.1", "localhost")):
        ws = open_console(ws_url(base, vm, ticket["ticket"]), origin=origin)
        assert_refused(app, libvirt_conn, vm, ws, 4403, "FORBIDDEN_ORIGIN")
    ws = open_console(ws_url(base, vm, None), origin="http://evil.example")  # ticket or not
    assert_refused(app, libvirt_conn, vm, ws, 4403, "FORBIDDEN_ORIGIN")
    ws = open_console(ws_url(base, vm, ticket["ticket"]), origin=base)  # the ticket was not used up
    assert receive_exactly(ws, len(BANNER)) == BANNER
    ws.close()


def test_an_origin_allowed_by_configuration(make_app, node_xml, live_server, stub, tmp_path):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", ALLOWED_ORIGINS=["https://limen.example"])
    base = live_server(app)
    admin = Browserless(app.test_client())
    from helpers import admin_password
    admin.login("admin", admin_password(app))
    vm = adopt(app, runtime.get(app).hypervisor.connection.get(), "proxied", stub.port)
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), origin="https://limen.example")
    assert receive_exactly(ws, len(BANNER)) == BANNER
    ws.close()


def test_a_vm_deleted_after_its_ticket_was_issued(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    with app.app_context():
        db.session.execute(db.delete(VM))
        db.session.commit()
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, ticket["ticket"]), base), 4404, "VM_NOT_FOUND")


def test_a_disabled_user_cannot_use_a_ticket_issued_before(app, admin, vm, base, libvirt_conn):
    ticket = get_ticket(admin, vm).json
    with app.app_context():
        db.session.execute(update(User).values(disabled=True))
        db.session.commit()
    assert_refused(app, libvirt_conn, vm, open_console(ws_url(base, vm, ticket["ticket"]), base), 4403, "ACCOUNT_DISABLED")


def test_disabling_a_user_ends_their_open_consoles_at_once(app, admin, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    bob = Browserless(app.test_client())
    bob.login("bob", "bob-password-1")
    bobs = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    mine = adopt(app, libvirt_conn, "admins-screen", stub.port)
    bob_ws = open_console(ws_url(base, bobs, get_ticket(bob, bobs).json["ticket"]), base)
    admin_ws = open_console(ws_url(base, mine, get_ticket(admin, mine).json["ticket"]), base)
    assert receive_exactly(bob_ws, len(BANNER)) == BANNER
    assert receive_exactly(admin_ws, len(BANNER)) == BANNER
    response = admin.client.post("/admin/users/bob", data={"csrf_token": admin.csrf, "role": "user",
                                                          "disabled": "on"})
    assert response.status_code == 302
    assert close_code(bob_ws) == (4403, "ACCOUNT_DISABLED")
    try:
        admin_ws.send(b"still here")  # the admin's own console is untouched
        assert receive_exactly(admin_ws, len(b"still here")) == b"still here"
    finally:
        admin_ws.close()

    def recorded_end():
        with app.app_context():
            return db.session.scalar(select(ConsoleSession.end).where(ConsoleSession.vm_uuid == bobs))

    wait_until(lambda: recorded_end() == "ACCOUNT_DISABLED", what="the session's end to be recorded")


def test_an_admin_made_a_user_keeps_only_the_consoles_of_their_own_vms(app, admin, base, libvirt_conn, stub):
    add_user(app, "bob", "bob-password-1")
    add_user(app, "carol", "carol-password-1", role="admin")
    carol = Browserless(app.test_client())
    carol.login("carol", "carol-password-1")
    bobs = adopt(app, libvirt_conn, "bobs-screen", stub.port, owner="bob")
    carols = adopt(app, libvirt_conn, "carols-screen", stub.port, owner="carol")
    on_bobs = open_console(ws_url(base, bobs, get_ticket(carol, bobs).json["ticket"]), base)
    on_hers = open_console(ws_url(base, carols, get_ticket(carol, carols).json["ticket"]), base)
    assert receive_exactly(on_bobs, len(BANNER)) == BANNER
    assert receive_exactly(on_hers, len(BANNER)) == BANNER
    assert admin.client.post("/admin/users/carol", data={"csrf_token": admin.csrf, "role": "user"}).status_code == 302
    assert close_code(on_bobs) == (4403, "NOT_ALLOWED")
    try:
        on_hers.send(b"still here")  # her own VM's console still echoes through the stub
        assert receive_exactly(on_hers, len(b"still here")) == b"still here"
    finally:
        on_hers.close()


def test_sessions_left_open_by_a_previous_process_are_ended_at_start(make_app, node_xml, tmp_path):
    from limen import create_app

    cfg = {"TESTING": True, "INSTANCE_PATH": str(tmp_path / "old"), "NETWORK": "none",
           "STORAGE_DIR": str(tmp_path / "pool"), "LIBVIRT_URI": f"test://{node_xml}"}
    with create_app(cfg).app_context():  # as if a process had died with a console open
        db.session.add(ConsoleSession(user_id=1, vm_uuid="7a7a7a7a-0000-4000-8000-000000000002"))
        db.session.commit()
    app = make_app(**cfg)
    with app.app_context():
        session = db.session.scalar(select(ConsoleSession))
        assert session.end == "LIMEN_RESTARTED" and session.ended_at is not None


# -- no leaks -----------------------------------------------------------------------------
def _threads_and_fds() -> tuple[int, int]:
    """Threads, and open sockets: what a bridge holds. Other fds are left out: the database
    pool may keep one more SQLite connection (three files) after a busy moment, by design."""
    sockets = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            sockets += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass  # closed meanwhile
    return threading.active_count(), sockets


def _all_ended(app, count):
    with app.app_context():
        ends = db.session.scalars(select(ConsoleSession.end).where(ConsoleSession.ended_at.is_not(None))).all()
    return len(ends) == count and ends


def test_a_hundred_sessions_leave_no_thread_or_fd_behind(app, admin, vm, base, libvirt_conn):
    warm = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)  # starts the VM, warms pools
    receive_exactly(warm, len(BANNER))
    warm.close()
    wait_until(lambda: _all_ended(app, 1), 10, "the first session to end")
    threads_before, fds_before = _threads_and_fds()
    for _ in range(100):
        ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
        assert receive_exactly(ws, len(BANNER)) == BANNER
        ws.close()
    ends = wait_until(lambda: _all_ended(app, 101), 20, "all 101 sessions to end")
    assert set(ends) == {"CLIENT_CLOSED"}
    wait_until(lambda: _threads_and_fds()[0] <= threads_before, 15, f"threads to return to {threads_before}")
    wait_until(lambda: _threads_and_fds()[1] <= fds_before, 15, f"open sockets to return to {fds_before}")


def test_a_display_nobody_listens_on_closes_4502(make_app, node_xml, live_server):
    from helpers import admin_password

    app = make_app(LIBVIRT_URI=f"test://{node_xml}", VNC_CONNECT_TIMEOUT=0.5)
    base = live_server(app)
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    free = StubVNC()  # take a free port, then free it again
    port = free.port
    free.close()
    vm = adopt(app, runtime.get(app).hypervisor.connection.get(), "dark", port)
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    assert close_code(ws) == (4502, "VNC_UNREACHABLE")


def test_an_unreachable_hypervisor_closes_4503(make_app, tmp_path, live_server):
    from helpers import admin_password

    app = make_app(LIBVIRT_URI=f"test://{tmp_path}/gone.xml")
    base = live_server(app)
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    vm = "7a7a7a7a-0000-4000-8000-000000000001"
    with app.app_context():
        db.session.add(VM(uuid=vm, name="orphan", owner_id=1, vcpus=1, memory_mib=64, disk_gib=1,
                          state="shutoff"))
        db.session.commit()
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    assert close_code(ws) == (4503, "HYPERVISOR_UNAVAILABLE")
    assert wait_until(lambda: _all_ended(app, 1), 10, "the session to be recorded") == ["HYPERVISOR_UNAVAILABLE"]


def test_a_paused_vms_console_says_why_and_starts_nothing(app, admin, vm, base, libvirt_conn):
    dom = libvirt_conn.lookupByUUIDString(vm)
    dom.create()
    dom.suspend()  # paused by another tool: the sync sees it
    admin.wait_state("screen", "paused")
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    assert close_code(ws) == (4411, "VM_PAUSED")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED and starts(app, vm) == 0
    status = admin.client.get(f"/vms/{vm}/status").json
    assert (status["state"], status["reason"]) == ("paused", "paused by a user")


def test_a_frame_no_browser_sends_ends_the_console_with_1002(app, admin, vm, base):
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), origin=base)
    assert receive_exactly(ws, len(BANNER)) == BANNER
    ws.sock.sendall(bytes([0x82, 0x02]) + b"hi")  # unmasked, as only a server may send
    assert close_code(ws) == (1002, "PROTOCOL_ERROR")

    def ended():
        with app.app_context():
            return db.session.scalar(select(ConsoleSession.end).where(ConsoleSession.ended_at.is_not(None)))

    assert wait_until(ended, 10, "the session's end to be recorded") == "PROTOCOL_ERROR"


# -- capacity and floods ------------------------------------------------------------------
def test_consoles_over_a_cap_close_4429_naming_the_limit(make_app, node_xml, live_server, stub):
    from helpers import admin_password, audit_rows
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", CONSOLES_PER_USER=2, CONSOLES_MAX=3)
    base, conn = live_server(app), runtime.get(app).hypervisor.connection.get()
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    add_user(app, "bob", "bob-password-1")
    bob = Browserless(app.test_client())
    bob.login("bob", "bob-password-1")
    mine, bobs = adopt(app, conn, "mine", stub.port), adopt(app, conn, "bobs", stub.port, owner="bob")

    def console(who, vm):
        return open_console(ws_url(base, vm, get_ticket(who, vm).json["ticket"]), base)

    held = [console(admin, mine), console(admin, mine)]
    for ws in held:
        assert receive_exactly(ws, len(BANNER)) == BANNER
    assert close_code(console(admin, mine)) == (4429, "CONSOLE_LIMIT: at most 2 per user")
    first_of_bobs = console(bob, bobs)
    assert receive_exactly(first_of_bobs, len(BANNER)) == BANNER
    assert close_code(console(bob, bobs)) == (4429, "CONSOLE_LIMIT: at most 3 on this LIMEN")
    wait_until(lambda: [e.actor for e in audit_rows(app, action="console.open") if e.result == "CONSOLE_LIMIT"]
               == ["admin", "bob"], 10, "both refusals in the audit log")
    held[0].close()  # a console closed gives its place back

    def another_opens():
        ws = console(bob, bobs)
        try:
            return receive_exactly(ws, len(BANNER)) == BANNER
        except AssertionError:
            return False
        finally:
            ws.close()

    wait_until(another_opens, 10, "a console to open once one was closed")
    for ws in (held[1], first_of_bobs):
        ws.close()


def _refused_handshake(base: str, path: str) -> tuple[socket.socket, bytes]:
    """A WebSocket handshake made by hand, as a flooding script would, that the server
    refuses; returns the socket after the 101 answer, and what came after the answer in the
    same read (the close frame may)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                 f"Origin: {base}\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += sock.recv(4096)
    assert answer.startswith(b"HTTP/1.1 101"), answer
    return sock, answer.split(b"\r\n\r\n", 1)[1]


def test_a_refused_websocket_is_closed_without_waiting_for_the_peer(app, vm, base):
    """A peer that never answers the close frame does not hold the connection open (for
    the close grace, as a browser that is still there would be given)."""
    from limen.console.bridge import CLOSE_GRACE
    sock, received = _refused_handshake(base, f"/vms/{vm}/console/ws?ticket=made-up")
    sock.settimeout(CLOSE_GRACE / 2)  # the server closes well before a grace would be over
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"the server held the refused connection open; it sent {received!r}") from None
    assert received[:2] == b"\x88" + bytes([len(received) - 2]) and received[4:] == b"TICKET_INVALID"
    assert int.from_bytes(received[2:4], "big") == 4401
    sock.close()


def test_refusals_from_one_address_are_audited_only_up_to_a_limit(make_app, node_xml, live_server, stub, caplog):
    from helpers import audit_rows
    caplog.set_level("INFO", logger="limen.console.serve")
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", CONSOLE_REFUSALS_AUDITED="3 per minute")
    base = live_server(app)
    vm = adopt(app, runtime.get(app).hypervisor.connection.get(), "flooded", stub.port)
    for _ in range(8):
        assert close_code(open_console(ws_url(base, vm, "made-up"), base)) == (4401, "TICKET_INVALID")

    def unaudited() -> int:
        return sum("not audited: more than 3 per minute" in r.getMessage() for r in caplog.records)

    wait_until(lambda: unaudited() == 5 and len(audit_rows(app, action="console.open")) == 3, 10,
               "3 refusals audited and 5 only logged")
    assert [e.result for e in audit_rows(app, action="console.open")] == ["TICKET_INVALID"] * 3
