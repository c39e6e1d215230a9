"""The serial console on the real libvirtd and QEMU (qemu tier): libvirt's console stream, one
holder at a time, take-over, and how each end is named. The guest tier signs in through it."""
import json

import libvirt
import pytest

from helpers import audit_rows, close_code, open_console, unique_name, wait_until
from limen.extensions import db
from limen.models import ConsoleSession

pytestmark = pytest.mark.qemu
OPEN = {"event": "open"}


@pytest.fixture
def serial_env(qemu_admin, live_server):
    """(app, admin, base URL, a stopped VM's uuid) on the real libvirtd."""
    app, admin = qemu_admin()
    base = live_server(app)
    uuid = admin.create_stopped(app, unique_name())
    return app, admin, base, uuid


def serial_url(base, admin, uuid, take_over=False):
    response = admin.client.post(f"/vms/{uuid}/console/ticket?kind=serial",
                                 headers={"X-CSRFToken": admin.csrf, "Accept": "application/json"})
    assert response.status_code == 201, response.json
    ticket = response.json["ticket"]
    assert response.json["ws_url"].endswith(f"/vms/{uuid}/serial/ws?ticket={ticket}")
    return f"ws{base.removeprefix('http')}/vms/{uuid}/serial/ws?ticket={ticket}" + ("&take_over=1" if take_over else "")


def opened(ws) -> dict:
    """The one text message LIMEN sends once it holds the line."""
    message = ws.receive(timeout=60)
    assert isinstance(message, str), message
    return json.loads(message)


def read_until(ws, wanted: bytes, timeout: float = 60) -> bytes:
    data = b""
    while wanted not in data:
        chunk = ws.receive(timeout=timeout)
        assert chunk is not None, f"no {wanted!r} within {timeout:g} s; got {data[-200:]!r}"
        data += chunk
    return data


def test_a_stopped_vms_serial_console_starts_it_and_carries_the_firmwares_words(serial_env, qemu_host):
    app, admin, base, uuid = serial_env
    ws = open_console(serial_url(base, admin, uuid), base)
    assert opened(ws) == OPEN
    assert qemu_host.lookupByUUIDString(uuid).isActive()
    # SeaBIOS says what it boots on the serial line too, about 2 s after the start here.
    assert b"SeaBIOS" in read_until(ws, b"SeaBIOS")
    ws.close()
    with app.app_context():
        session = wait_until(lambda: db.session.query(ConsoleSession).filter(
            ConsoleSession.vm_uuid == uuid, ConsoleSession.ended_at.is_not(None)).one_or_none(), 10,
            "the session to end")
        assert (session.kind, session.end) == ("serial", "CLIENT_CLOSED")
        assert session.bytes_to_client > 0
    assert any(r.detail.startswith("serial session") for r in audit_rows(app, action="console.open", vm_uuid=uuid))


def test_one_holder_at_a_time_and_a_take_over_names_who_took_it(serial_env, qemu_host):
    app, admin, base, uuid = serial_env
    first = open_console(serial_url(base, admin, uuid), base)
    assert opened(first) == OPEN
    second = open_console(serial_url(base, admin, uuid), base)
    assert close_code(second) == (4409, "SERIAL_BUSY: admin")  # stay out: the first keeps it
    assert first.connected

    third = open_console(serial_url(base, admin, uuid, take_over=True), base)
    assert opened(third) == OPEN
    assert close_code(first) == (4409, "SERIAL_TAKEN_OVER: admin")
    opens = [r.detail for r in audit_rows(app, action="console.open", vm_uuid=uuid)]
    assert any(d.endswith("taken over from admin") for d in opens), opens

    # The VM stops: the holder is told the line closed, not that something failed.
    qemu_host.lookupByUUIDString(uuid).destroy()
    assert close_code(third, 30) == (1000, "SERIAL_CLOSED")


def test_a_client_outside_limen_is_named_and_can_be_taken_over(serial_env, qemu_host):
    app, admin, base, uuid = serial_env
    first = open_console(serial_url(base, admin, uuid), base)
    assert opened(first) == OPEN  # started the VM
    first.close()
    dom = qemu_host.lookupByUUIDString(uuid)

    def outsider_holds_it():
        stream = qemu_host.newStream(0)
        try:
            dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE)
            return stream
        except libvirt.libvirtError:  # LIMEN's stream may not be gone yet
            stream.abort()
            return None

    stream = wait_until(outsider_holds_it, 10, "the test's own client to hold the serial line")
    ws = open_console(serial_url(base, admin, uuid), base)
    assert close_code(ws) == (4409, "SERIAL_BUSY: a client outside LIMEN (such as virsh console)")
    ws = open_console(serial_url(base, admin, uuid, take_over=True), base)
    assert opened(ws) == OPEN
    with pytest.raises(libvirt.libvirtError):
        stream.recv(1)  # the outsider's stream has failed
    ws.close()


def test_a_ticket_opens_only_the_console_it_was_issued_for(serial_env):
    app, admin, base, uuid = serial_env
    serial = serial_url(base, admin, uuid)
    screen_url = serial.replace("/serial/ws", "/console/ws")
    ws = open_console(screen_url, base)
    assert close_code(ws) == (4401, "TICKET_INVALID")
    ticket = admin.client.post(f"/vms/{uuid}/console/ticket",
                               headers={"X-CSRFToken": admin.csrf, "Accept": "application/json"}).json["ticket"]
    ws = open_console(f"ws{base.removeprefix('http')}/vms/{uuid}/serial/ws?ticket={ticket}", base)
    assert close_code(ws) == (4401, "TICKET_INVALID")
    bad = admin.client.post(f"/vms/{uuid}/console/ticket?kind=printer",
                            headers={"X-CSRFToken": admin.csrf, "Accept": "application/json"})
    assert bad.status_code == 422 and "kind" in bad.json["error"]["details"]["fields"]


def test_served_behind_nginx_the_line_is_announced_open(limen, qemu_host):
    """As `make run` serves it: gunicorn on a unix socket behind nginx."""
    import urllib.request

    limen.start()
    limen.sign_in()
    name = unique_name("f")
    assert limen.create(name) == 302
    wait_until(lambda: limen.row_state(name) == "running" and limen.settled(), 60, f"{name} to run")
    uuid, = limen.db("SELECT uuid FROM vm WHERE name = ?", name)[0]
    request = urllib.request.Request(f"{limen.base}/vms/{uuid}/console/ticket?kind=serial", method="POST",
                                     headers={"X-CSRFToken": limen.csrf, "Accept": "application/json"})
    ticket = json.load(limen.opener.open(request))["ticket"]
    ws = open_console(f"ws{limen.base.removeprefix('http')}/vms/{uuid}/serial/ws?ticket={ticket}", limen.base)
    assert opened(ws) == OPEN
    ws.close()
