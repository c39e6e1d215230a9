"""A VM's NICs (fast tier, libvirt's test driver, which plugs in no NIC): bad networks, models
and links, and a NIC that is not there, are refused and change nothing. The qemu tier adds,
changes and removes NICs on QEMU, the guest tier sees a link go down from inside."""
import pytest

from helpers import Api, admin_password, token_for


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def test_bad_requests_are_refused_and_change_nothing(app, api):
    created = api("POST", "/vms", {"name": "nicless", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    vm = created.json["vm"]["uuid"]
    before = api("GET", f"/vms/{vm}/nics").json
    for method, path, body, status, says in (
        ("POST", f"/vms/{vm}/nics", {"network": "bridge:nope0"}, 422, "no host bridge nope0"),
        ("POST", f"/vms/{vm}/nics", {"network": "none"}, 422, "attached to something"),
        ("POST", f"/vms/{vm}/nics", {"network": "user", "model": "rtl8139"}, 422, "virtio"),
        ("POST", f"/vms/{vm}/nics", {"network": "user"}, 409, "shut it off and add the NIC then"),
        ("PATCH", f"/vms/{vm}/nics/52:54:00:00:00:09", {"link": "down"}, 404, "no NIC 52:54:00:00:00:09"),
        ("PATCH", f"/vms/{vm}/nics/52:54:00:00:00:09", {"link": "sideways"}, 422, "up"),
        ("PATCH", f"/vms/{vm}/nics/52:54:00:00:00:09", {}, 422, "link, or model"),
        ("DELETE", f"/vms/{vm}/nics/52:54:00:00:00:09", None, 404, "no NIC"),
    ):
        refused = api(method, path, body)
        assert refused.status_code == status, (path, body, refused.json)
        assert says in str(refused.json["error"]), (path, body, refused.json)
    assert api("GET", f"/vms/{vm}/nics").json == before
