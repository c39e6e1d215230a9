"""Clones (fast tier, libvirt's test driver): a shut-off VM cloned by a full copy or a linked
disk, as an Operation; the clone is a VM of its own; a linked clone's source is protected; bad
input, a running source and the quota are refused and change nothing. The guest tier boots both."""
import pytest
from sqlalchemy import func, select

from helpers import Api, add_user, admin_password, signed_in, token_for
from limen.extensions import db
from limen.models import VM


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def shut_off_vm(api, name="origin") -> str:
    created = api("POST", "/vms", {"name": name, "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert created.status_code == 202, created.json
    api.wait_op(created.json["operation"]["id"])
    uuid = created.json["vm"]["uuid"]
    api.wait_op(api("POST", f"/vms/{uuid}/actions/force-off").json["operation"]["id"])
    return uuid


def counts(app, libvirt_conn, pool) -> tuple[int, int, int]:
    with app.app_context():
        rows = db.session.scalar(select(func.count(VM.id)))
    return rows, len(libvirt_conn.listAllDomains()), len(libvirt_conn.storagePoolLookupByName(pool).listVolumes())


def test_a_full_clone_is_a_vm_of_its_own(app, api, libvirt_conn):
    source = shut_off_vm(api)
    cloned = api("POST", f"/vms/{source}/clone", {"name": "copy"})
    assert cloned.status_code == 202, cloned.json
    clone, op = cloned.json["vm"], cloned.json["operation"]
    assert (clone["name"], clone["state"], op["kind"]) == ("copy", "creating", "clone")
    done = api.wait_op(op["id"])
    assert [s["step"] for s in done["steps"]] == ["Copying origin's disk", "Defining the VM"]
    assert clone["uuid"] != source
    assert api("GET", f"/vms/{clone['uuid']}").json["state"] == "shutoff"
    dom = libvirt_conn.lookupByUUIDString(clone["uuid"])
    assert dom.name() == "copy"
    volumes = libvirt_conn.storagePoolLookupByName(app.config["STORAGE_POOL"]).listVolumes()
    assert f"{clone['uuid']}.qcow2" in volumes
    # It starts at once, and the source is free to start and to be deleted.
    api.wait_op(api("POST", f"/vms/{clone['uuid']}/actions/start").json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{source}/actions/start").json["operation"]["id"])
    api.wait_op(api("DELETE", f"/vms/{source}").json["operation"]["id"])
    assert api("GET", f"/vms/{clone['uuid']}").json["state"] == "running"


def test_a_linked_clones_source_may_not_start_or_go_while_it_exists(app, api, libvirt_conn):
    source = shut_off_vm(api)
    cloned = api("POST", f"/vms/{source}/clone", {"name": "linked", "disk": "linked"})
    done = api.wait_op(cloned.json["operation"]["id"])
    assert done["steps"][0]["step"] == "Creating a linked disk on origin's"
    for method, path, body in (("POST", f"/vms/{source}/actions/start", None), ("DELETE", f"/vms/{source}", None),
                               ("POST", f"/vms/{source}/snapshots", {"name": "s"})):
        refused = api(method, path, body)
        assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_HAS_LINKED_CLONES"), path
        assert "Linked clones: linked." in refused.json["error"]["message"]
    clone = cloned.json["vm"]["uuid"]
    api.wait_op(api("POST", f"/vms/{clone}/actions/start").json["operation"]["id"])  # the clone runs
    api.wait_op(api("POST", f"/vms/{clone}/actions/force-off").json["operation"]["id"])
    api.wait_op(api("DELETE", f"/vms/{clone}").json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{source}/actions/start").json["operation"]["id"])  # free again


def test_bad_requests_change_nothing(app, api, libvirt_conn):
    source = shut_off_vm(api)
    before = counts(app, libvirt_conn, app.config["STORAGE_POOL"])
    for body, field in (({"name": "Bad Name"}, "name"), ({"name": "origin"}, "name"),
                        ({"name": "ok", "disk": "thin"}, "disk"), ({"name": "ok", "ci_password": "password-1"},
                                                                   "ci_password"), ({}, "name")):
        refused = api("POST", f"/vms/{source}/clone", body)
        assert refused.status_code == 422, body
        assert field in refused.json["error"]["details"]["fields"], (body, refused.json)
    api.wait_op(api("POST", f"/vms/{source}/actions/start").json["operation"]["id"])
    running = api("POST", f"/vms/{source}/clone", {"name": "ok"})
    assert (running.status_code, running.json["error"]["code"]) == (409, "VM_STATE_CONFLICT")
    assert "Shut the VM down to clone it" in running.json["error"]["message"]
    assert counts(app, libvirt_conn, app.config["STORAGE_POOL"]) == before


def test_the_clone_is_the_requesters_and_claims_their_quota(app, libvirt_conn):
    add_user(app, "dave", "dave-password-1", quota_vms=1)
    dave = Api(app, token_for(app, "dave", "dave-password-1"))
    source = shut_off_vm(dave)
    before = counts(app, libvirt_conn, app.config["STORAGE_POOL"])
    over = dave("POST", f"/vms/{source}/clone", {"name": "second"})
    assert (over.status_code, over.json["error"]["code"]) == (409, "QUOTA_EXCEEDED")
    assert counts(app, libvirt_conn, app.config["STORAGE_POOL"]) == before
    add_user(app, "mallory", "mallory-password-1")
    other = Api(app, token_for(app, "mallory", "mallory-password-1"))
    assert other("POST", f"/vms/{source}/clone", {"name": "stolen"}).json["error"]["code"] == "VM_NOT_FOUND"
    admin = Api(app, token_for(app, "admin", admin_password(app)))
    cloned = admin("POST", f"/vms/{source}/clone", {"name": "admins-copy"})
    admin.wait_op(cloned.json["operation"]["id"])
    assert cloned.json["vm"]["owner"] == "admin"


def test_the_details_page_clones(app, api, libvirt_conn):
    source = shut_off_vm(api)
    admin = signed_in(app, "admin", admin_password(app))
    assert "a full copy" in admin.client.get(f"/vms/{source}").text
    refused = admin.client.post(f"/vms/{source}/clone", data={"csrf_token": admin.csrf, "name": "Bad"})
    assert refused.status_code == 422 and "Use 1 to 63 lower-case letters" in refused.text
    made = admin.client.post(f"/vms/{source}/clone", data={"csrf_token": admin.csrf, "name": "from-page"})
    assert made.status_code == 302
    admin.wait_state("from-page", "shutoff", 10)
