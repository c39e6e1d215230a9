"""A VM's disks (fast tier, libvirt's test driver, which plugs in no disk): listed; bad sizes,
shrinking, the boot disk, a disk that is not there and the disk quota are refused and change
nothing; a disk that cannot be plugged in leaves no volume behind. The qemu tier adds, grows
and removes disks on QEMU, the guest tier sees them from inside."""
import pytest

from helpers import Api, add_user, admin_password, signed_in, token_for
from limen import runtime
from test_edit import made_vm


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def volumes(app) -> list[str]:
    with app.app_context():
        return runtime.get().hypervisor.disks.names("")


def test_the_disks_are_listed_with_their_size_and_bus(app, api):
    vm = made_vm(api, "disky")
    [disk] = api("GET", f"/vms/{vm}/disks").json
    assert (disk["dev"], disk["bus"], disk["volume"], disk["capacity_bytes"]) == ("vda", "virtio", f"{vm}.qcow2", 1024**3)
    page = signed_in(app, "admin", admin_password(app)).client.get(f"/vms/{vm}").text
    assert 'data-dev="vda"' in page and "(boot)" in page and "Add a disk" in page


def test_bad_sizes_shrinking_and_missing_disks_are_refused_and_change_nothing(app, api):
    vm = made_vm(api, "disky")
    before = volumes(app), api("GET", f"/vms/{vm}").json["disk_gib"]
    with app.app_context():
        free = runtime.get().hypervisor.disks.free_bytes() // 1024**3
    for method, path, body, status, says in (
        ("POST", f"/vms/{vm}/disks", {"gib": 0}, 422, "at least 1 GiB"),
        ("POST", f"/vms/{vm}/disks", {"gib": "2"}, 422, "integer"),
        ("POST", f"/vms/{vm}/disks", {"gib": free + 1}, 422, "GiB free"),
        ("POST", f"/vms/{vm}/disks", {"gib": 1, "bus": "scsi"}, 422, "Not a field"),
        ("PATCH", f"/vms/{vm}/disks/vda", {"gib": 1}, 422, "grows disks only"),
        ("PATCH", f"/vms/{vm}/disks/vdz", {"gib": 5}, 404, "no disk vdz"),
        ("DELETE", f"/vms/{vm}/disks/vda", None, 409, "boot disk"),
        ("DELETE", f"/vms/{vm}/disks/vdq", None, 404, "no disk vdq"),
    ):
        refused = api(method, path, body)
        assert refused.status_code == status, (path, body, refused.json)
        assert says in str(refused.json["error"]), (path, body, refused.json)
    assert (volumes(app), api("GET", f"/vms/{vm}").json["disk_gib"]) == before


def test_a_new_disk_must_fit_the_owners_disk_quota(app, api):
    add_user(app, "bob", "bob-password-1", quota_disk_gib=2)
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    vm = made_vm(bob, "bobs")
    before = volumes(app)
    refused = bob("POST", f"/vms/{vm}/disks", {"gib": 2})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "QUOTA_EXCEEDED")
    assert refused.json["error"]["details"]["fields"]["disk_gib"] == \
        "disk quota: 1 of 2 GiB used, 2 requested (a new disk)"
    grown = bob("PATCH", f"/vms/{vm}/disks/vda", {"gib": 4})
    assert grown.json["error"]["details"]["fields"]["disk_gib"] == "disk quota: 1 of 2 GiB used, 3 requested (vda grown)"
    assert volumes(app) == before


def test_a_disk_that_cannot_be_plugged_in_leaves_no_volume(app, api):
    vm = made_vm(api, "disky", running=True)  # the test driver plugs nothing into a running VM
    before = volumes(app)
    refused = api("POST", f"/vms/{vm}/disks", {"gib": 1})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_STATE_CONFLICT")
    assert "shut it off and add the disk then" in refused.json["error"]["message"]
    assert volumes(app) == before
    assert api("GET", f"/vms/{vm}").json["disk_gib"] == 1
