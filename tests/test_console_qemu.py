"""The console on the real libvirtd and QEMU (qemu tier): a stopped VM's console starts it
and speaks RFB; five consoles at once start it once; a VM that cannot start says why."""
import struct
import threading

import pytest

from helpers import (Reader, close_code, get_ticket, open_console, receive_exactly,
                      unique_name)
from limen.extensions import db
from limen.models import Operation

pytestmark = pytest.mark.qemu
BANNER = b"RFB 003.008\n"


@pytest.fixture
def console_env(qemu_admin, live_server):
    """(app, admin, base URL, a stopped VM's uuid) on the real libvirtd."""
    app, admin = qemu_admin()
    base = live_server(app)
    name = unique_name()
    uuid = admin.create_stopped(app, name)
    return app, admin, base, uuid, name


def ws_url(base, uuid, ticket):
    return f"ws{base.removeprefix('http')}/vms/{uuid}/console/ws?ticket={ticket}"


def starts(app, uuid) -> int:
    with app.app_context():
        return db.session.query(Operation).filter_by(vm_uuid=uuid, kind="start").count()


def test_a_stopped_vms_console_speaks_rfb_with_the_vms_screen(console_env, qemu_host):
    app, admin, base, uuid, name = console_env
    ws = open_console(ws_url(base, uuid, get_ticket(admin, uuid).json["ticket"]), base)
    rfb = Reader(ws)
    assert rfb.read(12) == BANNER
    assert qemu_host.lookupByUUIDString(uuid).isActive()

    ws.send(BANNER)
    types = rfb.read(rfb.read(1)[0])
    assert 1 in types  # security type None: libvirt hands LIMEN the display itself
    ws.send(bytes([1]))
    assert rfb.read(4) == b"\x00\x00\x00\x00"  # SecurityResult: OK
    ws.send(bytes([1]))  # ClientInit, shared
    init = rfb.read(24)
    width, height = struct.unpack(">HH", init[:4])
    desktop = rfb.read(struct.unpack(">I", init[20:24])[0]).decode()
    assert 320 <= width <= 4096 and 200 <= height <= 4096  # the BIOS screen
    assert name in desktop
    ws.close()
    assert starts(app, uuid) == 1


def test_five_consoles_at_once_start_the_vm_once(console_env, qemu_host):
    app, admin, base, uuid, _ = console_env
    tickets = [get_ticket(admin, uuid).json["ticket"] for _ in range(5)]
    banners, errors = [], []
    go = threading.Barrier(5)

    def client(ticket):
        try:
            go.wait(10)
            ws = open_console(ws_url(base, uuid, ticket), base)
            banners.append(receive_exactly(ws, 12))
            ws.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(t,)) for t in tickets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert errors == [] and banners == [BANNER] * 5
    assert starts(app, uuid) == 1
    assert qemu_host.lookupByUUIDString(uuid).isActive()


def test_a_vm_that_cannot_start_closes_4409_with_libvirts_reason(console_env, qemu_host):
    app, admin, base, uuid, name = console_env
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    pool.storageVolLookupByName(f"{uuid}.qcow2").delete(0)  # behind LIMEN's back
    ws = open_console(ws_url(base, uuid, get_ticket(admin, uuid).json["ticket"]), base)
    assert close_code(ws, 60) == (4409, "VM_START_FAILED")
    status = admin.client.get(f"/vms/{uuid}/status").json
    assert status["error"]["code"] == "VM_START_FAILED"
    assert f"{uuid}.qcow2" in status["error"]["message"]  # libvirt's own words name the disk
    assert not qemu_host.lookupByUUIDString(uuid).isActive()


def test_a_start_that_outlasts_the_deadline_closes_4410(qemu_admin, live_server, qemu_host):
    """LIMEN_CONSOLE_START_TIMEOUT shorter than QEMU needs to start: VM_NOT_RUNNING, in time."""
    app, admin = qemu_admin(CONSOLE_START_TIMEOUT=0.01)
    base = live_server(app)
    name = unique_name()
    uuid = admin.create_stopped(app, name)
    ws = open_console(ws_url(base, uuid, get_ticket(admin, uuid).json["ticket"]), base)
    assert close_code(ws, 30) == (4410, "VM_NOT_RUNNING")
    admin.wait_state(name, "running", 60)  # the start itself goes on and succeeds
