"""Clones on the real libvirtd and QEMU (qemu tier): a full copy stands on its own, a linked
clone boots on its source's disk and protects it. The guest tier boots a clone of a guest."""
import json
import subprocess

import libvirt
import pytest

from helpers import Api, admin_password, token_for, unique_name

pytestmark = pytest.mark.qemu


@pytest.fixture
def env(qemu_admin):
    """(app, api, a shut-off VM's uuid) on the real libvirtd."""
    app, admin = qemu_admin()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    name = unique_name()
    source = admin.create_stopped(app, name)
    return app, api, source


def backing_of(path: str) -> str | None:
    info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True,
                                     capture_output=True, text=True).stdout)
    return info.get("backing-filename")


def clone(api, source: str, name: str, disk: str) -> str:
    cloned = api("POST", f"/vms/{source}/clone", {"name": name, "disk": disk})
    assert cloned.status_code == 202, cloned.json
    done = api.wait_op(cloned.json["operation"]["id"])
    assert done["state"] == "done"
    return cloned.json["vm"]["uuid"]


def test_a_full_copy_stands_on_its_own_and_a_linked_clone_on_its_source(env, qemu_host):
    app, api, source = env
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    origin = pool.storageVolLookupByName(f"{source}.qcow2").path()
    full = clone(api, source, unique_name("full"), "full")
    linked = clone(api, source, unique_name("linked"), "linked")
    pool.refresh(0)
    assert backing_of(pool.storageVolLookupByName(f"{full}.qcow2").path()) is None
    assert backing_of(pool.storageVolLookupByName(f"{linked}.qcow2").path()) == origin
    doms = [qemu_host.lookupByUUIDString(u) for u in (source, full, linked)]
    macs = [d.XMLDesc(0).split("<mac address='")[1][:17] for d in doms if "<mac address=" in d.XMLDesc(0)]
    assert len(set(macs)) == len(macs)  # libvirt chose each its own (where they have a NIC)

    # Both clones start on QEMU; the linked clone's source may not, nor go.
    for uuid in (full, linked):
        api.wait_op(api("POST", f"/vms/{uuid}/actions/start").json["operation"]["id"])
        assert qemu_host.lookupByUUIDString(uuid).isActive()
    for method, path in (("POST", f"/vms/{source}/actions/start"), ("DELETE", f"/vms/{source}")):
        refused = api(method, path)
        assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_HAS_LINKED_CLONES")
    assert not qemu_host.lookupByUUIDString(source).isActive()

    # Without its linked clone, the source is free again.
    api.wait_op(api("DELETE", f"/vms/{linked}").json["operation"]["id"])
    api.wait_op(api("DELETE", f"/vms/{source}").json["operation"]["id"])
    with pytest.raises(libvirt.libvirtError):
        qemu_host.lookupByUUIDString(source)
    assert qemu_host.lookupByUUIDString(full).isActive()  # the full copy never needed it
