"""A VM's disks on the real libvirtd and QEMU (qemu tier): a data disk added while shut off and
while running (plugged in at once), the boot disk grown both ways, a data disk removed with its
volume, and the VM's delete taking its data disks too. A refused change leaves the definition
and the pool's volumes byte for byte as they were."""
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Api, admin_password, token_for, unique_name

pytestmark = pytest.mark.qemu
GIB = 1024**3


def disk_targets(dom: libvirt.virDomain, flags: int = 0) -> dict[str, str]:
    """dev -> file of the domain's disks (not its CD-ROM)."""
    xml = ET.fromstring(dom.XMLDesc(flags))
    return {d.find("target").get("dev"): d.find("source").get("file")
            for d in xml.findall("./devices/disk[@device='disk']")}


def pool_volumes(qemu_host, app) -> dict[str, int]:
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    pool.refresh(0)
    return {v.name(): v.info()[1] for v in pool.listAllVolumes()}


def test_data_disks_come_and_go_and_disks_grow(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    vm = admin.create_stopped(app, name)
    dom = qemu_host.lookupByUUIDString(vm)

    added = api("POST", f"/vms/{vm}/disks", {"gib": 2})
    assert added.status_code == 201, added.json
    assert (added.json["dev"], added.json["bus"], added.json["capacity_bytes"]) == ("vdb", "virtio", 2 * GIB)
    data = added.json["volume"]
    assert data == f"{vm}-data-1.qcow2" and pool_volumes(qemu_host, app)[data] == 2 * GIB
    assert disk_targets(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)["vdb"].endswith(data)
    ordered = api("PATCH", f"/vms/{vm}", {"boot_order": ["vdb", "vda"]})
    assert ordered.status_code == 200 and ordered.json["boot_order"] == ["vdb", "vda"]
    booting = {d.find("target").get("dev"): d.find("boot").get("order")
               for d in ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findall("./devices/disk")
               if d.find("boot") is not None}
    assert booting == {"vdb": "1", "vda": "2"}
    assert api("PATCH", f"/vms/{vm}", {"boot_order": ["vda"]}).json["boot_order"] == ["vda"]
    cloned = api("POST", f"/vms/{vm}/clone", {"name": unique_name()})
    assert cloned.status_code == 409 and "1 data disk" in cloned.json["error"]["message"]
    # A disk grows though it holds snapshots (LIMEN's qcow2 volumes are version 3).
    api.wait_op(api("POST", f"/vms/{vm}/snapshots", {"name": "before-growing"}).json["operation"]["id"])
    grown = api("PATCH", f"/vms/{vm}/disks/vda", {"gib": 2})
    assert grown.json["capacity_bytes"] == 2 * GIB and pool_volumes(qemu_host, app)[f"{vm}.qcow2"] == 2 * GIB
    assert api("GET", f"/vms/{vm}").json["disk_gib"] == 4  # 2 + 2: what the quota counts
    # While a snapshot holds the VM's disks as they are, none comes or goes.
    for method, path, body in (("POST", f"/vms/{vm}/disks", {"gib": 1}), ("DELETE", f"/vms/{vm}/disks/vdb", None)):
        refused = api(method, path, body)
        assert refused.status_code == 409 and "delete them first" in refused.json["error"]["message"], refused.json
    api.wait_op(api("DELETE", f"/vms/{vm}/snapshots/before-growing").json["operation"]["id"])

    # Running: a disk plugged in at once, and a disk grown by QEMU itself.
    api.wait_op(api("POST", f"/vms/{vm}/actions/start").json["operation"]["id"])
    live = api("POST", f"/vms/{vm}/disks", {"gib": 1})
    assert live.status_code == 201 and live.json["dev"] == "vdc", live.json
    assert set(disk_targets(dom)) == {"vda", "vdb", "vdc"}  # in the running QEMU
    assert set(disk_targets(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)) == {"vda", "vdb", "vdc"}  # and from its next start
    assert api("PATCH", f"/vms/{vm}/disks/vdb", {"gib": 3}).status_code == 200
    assert dom.blockInfo("vdb")[0] == 3 * GIB  # QEMU's own answer
    refused = api("DELETE", f"/vms/{vm}/disks/vdc")
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_STATE_CONFLICT")

    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    admin.wait_state(name, "shutoff", 30)
    assert api("DELETE", f"/vms/{vm}/disks/vdc").status_code == 204
    assert "vdc" not in disk_targets(dom, libvirt.VIR_DOMAIN_XML_INACTIVE)
    assert f"{vm}-data-2.qcow2" not in pool_volumes(qemu_host, app)
    assert api("GET", f"/vms/{vm}").json["disk_gib"] == 5  # 2 + 3

    assert api("PATCH", f"/vms/{vm}/disks/vda", {"gib": 3}).status_code == 200  # shut off, with its snapshot

    api.wait_op(api("DELETE", f"/vms/{vm}").json["operation"]["id"])
    assert not [v for v in pool_volumes(qemu_host, app) if v.startswith(vm)]  # its data disk went with it


def test_a_refused_disk_change_leaves_the_definition_and_the_volumes_as_they_were(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    vm = admin.create_stopped(app, name)
    dom = qemu_host.lookupByUUIDString(vm)
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE), pool_volumes(qemu_host, app)
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    free_gib = pool.info()[3] // GIB
    for method, path, body in (("POST", f"/vms/{vm}/disks", {"gib": free_gib + 1}),  # no room in the pool
                               ("PATCH", f"/vms/{vm}/disks/vda", {"gib": free_gib + 2})):
        refused = api(method, path, body)
        assert refused.status_code == 422 and "GiB free" in refused.json["error"]["details"]["fields"]["gib"]
    assert (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE),
            pool_volumes(qemu_host, app)) == before
