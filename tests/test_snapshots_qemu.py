"""Snapshots on the real libvirtd and QEMU (qemu tier): a memory snapshot of a running VM and
its revert, what it adds to the disk quota, a disk QEMU cannot snapshot, and a VM deleted with
its snapshots. The guest tier proves them from inside a guest (test_guest_snapshots)."""
import os
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Api, admin_password, token_for, unique_name, uuid_of

pytestmark = pytest.mark.qemu


@pytest.fixture
def env(qemu_admin):
    """(app, api, a running VM's uuid, its libvirt domain) on the real libvirtd."""
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    assert admin.create(name=name, memory_mib="128").status_code == 201
    admin.wait_state(name, "running", 60)
    return app, api, uuid_of(app, name), admin


def test_a_running_vms_snapshot_holds_its_memory_and_counts_what_it_takes(env, qemu_host):
    app, api, vm, admin = env
    taken = api("POST", f"/vms/{vm}/snapshots", {"name": "live", "description": "with memory"})
    assert taken.status_code == 202
    api.wait_op(taken.json["operation"]["id"])
    dom = qemu_host.lookupByUUIDString(vm)
    snap = ET.fromstring(dom.snapshotLookupByName("live").getXMLDesc(0))
    assert (snap.findtext("state"), snap.find("memory").get("snapshot")) == ("running", "internal")
    state = api("GET", f"/vms/{vm}").json
    assert state["snapshots"] == 1 and state["snapshot_mib"] > 0  # QEMU wrote the memory into the disk file
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING  # the guest runs on after it

    dom.destroy()  # behind LIMEN's back
    admin.wait_state(state["name"], "shutoff", 30)
    reverted = api("POST", f"/vms/{vm}/snapshots/live/revert")
    api.wait_op(reverted.json["operation"]["id"])
    assert dom.state() == [libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_RUNNING_FROM_SNAPSHOT]
    admin.wait_state(state["name"], "running", 30)

    deleted = api("DELETE", f"/vms/{vm}/snapshots/live")
    api.wait_op(deleted.json["operation"]["id"])
    assert dom.listAllSnapshots() == []
    assert api("GET", f"/vms/{vm}").json["snapshot_mib"] == 0


def test_a_disk_that_is_not_qcow2_answers_snapshot_unsupported_and_changes_nothing(env, qemu_host):
    app, api, vm, admin = env
    dom = qemu_host.lookupByUUIDString(vm)
    dom.destroy()
    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    root.find("./devices/disk[@device='disk']/driver").set("type", "raw")  # as another tool might define it
    qemu_host.defineXML(ET.tostring(root, encoding="unicode"))
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    volume = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"]).storageVolLookupByName(f"{vm}.qcow2")
    size = os.stat(volume.path()).st_size
    refused = api("POST", f"/vms/{vm}/snapshots", {"name": "never"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "SNAPSHOT_UNSUPPORTED")
    assert "Its disk vda is raw, not qcow2" in refused.json["error"]["message"]
    assert "convert a raw disk with qemu-img" in refused.json["error"]["message"]  # what to do
    assert dom.listAllSnapshots() == [] and dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    assert os.stat(volume.path()).st_size == size
    assert api("GET", f"/vms/{vm}").json["snapshot_mib"] == 0


def test_deleting_a_vm_deletes_its_snapshots(env, qemu_host):
    app, api, vm, admin = env
    api.wait_op(api("POST", f"/vms/{vm}/snapshots", {"name": "one"}).json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{vm}/snapshots", {"name": "two"}).json["operation"]["id"])
    name = api("GET", f"/vms/{vm}").json["name"]
    records = f"/var/lib/libvirt/qemu/snapshot/{name}"
    assert sorted(os.listdir(records)) == ["one.xml", "two.xml"]  # libvirt's record of them
    api.wait_op(api("DELETE", f"/vms/{vm}").json["operation"]["id"])
    with pytest.raises(libvirt.libvirtError):
        qemu_host.lookupByUUIDString(vm)
    assert not os.path.exists(records) or os.listdir(records) == []
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    pool.refresh(0)
    assert f"{vm}.qcow2" not in pool.listVolumes()  # their data was inside it
