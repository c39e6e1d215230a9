"""User-mode forwards on the real QEMU (qemu tier): the host port listens while the VM runs,
comes back on any start (LIMEN's or another tool's), is the VM's own, and is refused by name
when another program holds it. The VMs have no OS; QEMU's user network listens for them."""
import socket

import pytest

from helpers import admin_password, free_port_range, token_for, uuid_of, wait_until

pytestmark = pytest.mark.qemu


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def forward_port(app, vm_uuid: str) -> int:
    """The VM's SSH forward, as the API tells a script."""
    token = token_for(app, "admin", admin_password(app))
    forwards = app.test_client().get(f"/api/v1/vms/{vm_uuid}", headers={"Authorization": f"Bearer {token}"}).json[
        "forwards"]
    assert [(f["protocol"], f["host_address"], f["guest_port"]) for f in forwards] == [("tcp", "127.0.0.1", 22)]
    return forwards[0]["host_port"]


def test_forwards_listen_while_the_vm_runs_and_come_back_on_any_start(qemu_admin, qemu_host):
    ports = free_port_range(3)
    app, admin = qemu_admin(NETWORK="user", FORWARD_PORTS=f"{ports.start}-{ports.stop - 1}")
    for name in ("fw-a", "fw-b"):
        assert admin.create(name=name, memory_mib="128").status_code == 201
        admin.wait_state(name, "running", 60)
    a, b = uuid_of(app, "fw-a"), uuid_of(app, "fw-b")
    port_a, port_b = forward_port(app, a), forward_port(app, b)
    assert port_a != port_b
    assert listening(port_a) and listening(port_b)

    # Off: QEMU is gone, and so is its listener. On again from outside LIMEN: the sync sees the
    # start and puts the forward back.
    assert admin.htmx_post(f"/vms/{a}/force-off").status_code == 202
    admin.wait_state("fw-a", "shutoff", 30)
    assert not listening(port_a)
    qemu_host.lookupByUUIDString(a).create()
    wait_until(lambda: listening(port_a), 15, "the forward of a VM started outside LIMEN")

    # Deleting a VM frees its port for the next VM.
    assert admin.htmx_post(f"/vms/{b}/delete").status_code == 202
    admin.wait_state("fw-b", None, 30)
    assert not listening(port_b)
    assert admin.create(name="fw-c", memory_mib="128").status_code == 201
    admin.wait_state("fw-c", "running", 60)
    assert forward_port(app, uuid_of(app, "fw-c")) == port_b

    # A port the owner adds to a running VM listens at once, and stops when removed.
    token = token_for(app, "admin", admin_password(app))
    c = uuid_of(app, "fw-c")
    added = app.test_client().post(f"/api/v1/vms/{c}/forwards", json={"guest_port": 80},
                                   headers={"Authorization": f"Bearer {token}"})
    assert added.status_code == 201, added.json
    assert listening(added.json["host_port"])
    assert app.test_client().delete(f"/api/v1/vms/{c}/forwards/{added.json['id']}",
                                    headers={"Authorization": f"Bearer {token}"}).status_code == 204
    assert not listening(added.json["host_port"]) and listening(port_b)


def test_a_start_whose_port_another_program_holds_fails_with_port_in_use_and_stays_off(qemu_admin):
    ports = free_port_range(2)
    app, admin = qemu_admin(NETWORK="user", FORWARD_PORTS=f"{ports.start}-{ports.stop - 1}")
    assert admin.create(name="fw-held", memory_mib="128").status_code == 201
    admin.wait_state("fw-held", "running", 60)
    vm_uuid = uuid_of(app, "fw-held")
    port = forward_port(app, vm_uuid)
    assert admin.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
    admin.wait_state("fw-held", "shutoff", 30)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", port))
        squatter.listen()
        assert admin.htmx_post(f"/vms/{vm_uuid}/start").status_code == 202
        status = wait_until(lambda: (s := admin.client.get(f"/vms/{vm_uuid}/status").json)["error"] and s,
                            60, "the start to fail")
        assert status["error"]["code"] == "PORT_IN_USE"
        assert f"127.0.0.1:{port}" in status["error"]["message"]
        # Nothing half-done: the VM is not left running unreachable.
        assert status["state"] == "shutoff"
