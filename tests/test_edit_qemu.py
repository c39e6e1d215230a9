"""Changing a VM on the real libvirtd and QEMU (qemu tier): cold changes of vCPUs, memory,
name, description and autostart, then a start: the running domain has them, with the same UUID
and disk. A change that fails part-way leaves the definition byte for byte as it was."""
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Api, admin_password, token_for, unique_name, uuid_of

pytestmark = pytest.mark.qemu


def test_cold_changes_show_in_the_started_domain_and_a_rename_keeps_uuid_and_disk(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name, new_name = unique_name(), unique_name()
    vm = admin.create_stopped(app, name)
    dom = qemu_host.lookupByUUIDString(vm)
    disks = [d.find("source").get("file") for d in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk[@device='disk']")]

    changed = api("PATCH", f"/vms/{vm}", {"name": new_name, "vcpus": 2, "memory_mib": 192,
                                          "description": "proved on QEMU", "autostart": True})
    assert changed.status_code == 200, changed.json
    try:
        started = api("POST", f"/vms/{vm}/actions/start")
        api.wait_op(started.json["operation"]["id"])
        dom = qemu_host.lookupByUUIDString(vm)
        live = ET.fromstring(dom.XMLDesc(0))
        assert (dom.name(), dom.UUIDString(), dom.isActive()) == (new_name, vm, 1)
        assert (live.findtext("vcpu"), live.find("memory").text, live.find("memory").get("unit")) == \
            ("2", str(192 * 1024), "KiB")
        assert live.findtext("description") == "proved on QEMU" and dom.autostart() == 1
        assert [d.find("source").get("file") for d in live.findall("./devices/disk[@device='disk']")] == disks
        assert dom.info()[3] == 2  # QEMU runs two vCPUs
    finally:
        dom.setAutostart(0)  # the host's own autostart list is not the test's to keep


def test_a_change_that_fails_part_way_leaves_the_definition_as_it_was(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    vm = admin.create_stopped(app, name)
    dom = qemu_host.lookupByUUIDString(vm)
    dom.snapshotCreateXML("<domainsnapshot><name>pinned</name></domainsnapshot>", 0)  # libvirt then refuses a rename
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    refused = api("PATCH", f"/vms/{vm}", {"memory_mib": 256, "description": "never", "name": unique_name()})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_STATE_CONFLICT"), refused.json
    assert "snapshots" in refused.json["error"]["message"]
    assert dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE) == before
    assert api("GET", f"/vms/{vm}").json["memory_mib"] == 128


def test_a_running_vm_gets_a_vcpu_at_once_and_more_memory_at_its_next_start(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    assert admin.create(name=name, memory_mib="128").status_code == 201
    admin.wait_state(name, "running", 60)
    vm = uuid_of(app, name)
    dom = qemu_host.lookupByUUIDString(vm)
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_VCPU_MAXIMUM | libvirt.VIR_DOMAIN_AFFECT_LIVE) == qemu_host.getInfo()[2]

    plugged = api("PATCH", f"/vms/{vm}", {"vcpus": 2})
    assert (plugged.json["vcpus"], plugged.json["pending"]) == (2, None), plugged.json
    assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2  # QEMU runs a second vCPU now
    # QEMU could not bring back a memory snapshot holding that vCPU: refused before libvirt is asked.
    refused = api("POST", f"/vms/{vm}/snapshots", {"name": "after-plugging"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "SNAPSHOT_UNSUPPORTED"), refused.json
    assert dom.snapshotNum(0) == 0
    later = api("PATCH", f"/vms/{vm}", {"memory_mib": 256})  # more than it started with
    assert (later.json["memory_mib"], later.json["pending"]) == (128, {"vcpus": 2, "memory_mib": 256})
    assert "256 MiB at next start" in admin.row_html(name)
    assert dom.maxMemory() == 128 * 1024  # the running QEMU's memory is as it was

    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{vm}/actions/start").json["operation"]["id"])
    assert (dom.maxMemory(), dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE)) == (256 * 1024, 2)
    shown = api("GET", f"/vms/{vm}").json
    assert (shown["vcpus"], shown["memory_mib"], shown["pending"]) == (2, 256, None)
