"""A VM's NICs on the real libvirtd and QEMU (qemu tier): one added while shut off and one
plugged in while it runs, a model changed and a link set down and up (in the running QEMU at
once), a NIC removed while shut off, and the last one its forwarded ports can go through kept."""
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Api, admin_password, free_port_range, token_for, unique_name

pytestmark = pytest.mark.qemu


def nics(dom: libvirt.virDomain, flags: int = 0) -> dict[str, tuple[str, str, str]]:
    """mac -> (type, model, link state) of the domain's NICs."""
    found = {}
    for el in ET.fromstring(dom.XMLDesc(flags)).findall("./devices/interface"):
        link = el.find("link")
        found[el.find("mac").get("address")] = (el.get("type"), el.find("model").get("type"),
                                                link.get("state") if link is not None else "up")
    return found


def test_nics_are_added_changed_and_removed(qemu_admin, qemu_host):
    ports = free_port_range(3)
    app, admin = qemu_admin(NETWORK="user", FORWARD_PORTS=f"{ports.start}-{ports.stop - 1}")
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    vm = admin.create_stopped(app, name)
    dom = qemu_host.lookupByUUIDString(vm)
    [first] = nics(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    kept = api("DELETE", f"/vms/{vm}/nics/{first}")  # SSH's forward goes through its only user-mode NIC
    assert (kept.status_code, kept.json["error"]["code"]) == (409, "VM_STATE_CONFLICT")
    assert "forwarded ports" in kept.json["error"]["message"]

    added = api("POST", f"/vms/{vm}/nics", {"network": "user", "model": "e1000e"})
    assert added.status_code == 201, added.json
    second = added.json["mac"]
    assert nics(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)[second] == ("user", "e1000e", "up")
    assert api("PATCH", f"/vms/{vm}/nics/{second}", {"model": "virtio", "link": "down"}).json == \
        {"mac": second, "network": "user", "model": "virtio", "link": "down"}
    assert nics(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)[second] == ("user", "virtio", "down")

    api.wait_op(api("POST", f"/vms/{vm}/actions/start").json["operation"]["id"])
    live = api("POST", f"/vms/{vm}/nics", {"network": "user"})
    assert live.status_code == 201, live.json
    assert set(nics(dom)) == {first, second, live.json["mac"]}  # in the running QEMU
    assert api("PATCH", f"/vms/{vm}/nics/{second}", {"link": "up"}).status_code == 200
    assert nics(dom)[second][2] == "up" and nics(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)[second][2] == "up"
    assert api("PATCH", f"/vms/{vm}/nics/{first}", {"model": "e1000"}).json["error"]["code"] == "VM_STATE_CONFLICT"
    assert api("DELETE", f"/vms/{vm}/nics/{second}").json["error"]["code"] == "VM_STATE_CONFLICT"

    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    admin.wait_state(name, "shutoff", 30)
    assert api("DELETE", f"/vms/{vm}/nics/{second}").status_code == 204
    assert set(nics(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)) == {first, live.json["mac"]}
    assert [n["mac"] for n in api("GET", f"/vms/{vm}/nics").json] == [first, live.json["mac"]]
