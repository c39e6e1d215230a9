"""Snapshots (fast tier, libvirt's test driver): take, list as a tree, revert to and delete them
through the API and the Details page, each an Operation; bad input, a busy VM and the disk quota
are refused and change nothing. The qemu tier proves them on QEMU, the guest tier on a guest."""
import pytest
from sqlalchemy import select

from helpers import Api, add_user, admin_password, signed_in, token_for, wait_until
from limen.extensions import db
from limen.models import VM, Operation, User


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def running_vm(api, name="snappy", memory_mib=64) -> str:
    created = api("POST", "/vms", {"name": name, "vcpus": 1, "memory_mib": memory_mib, "disk_gib": 1})
    assert created.status_code == 202, created.json
    api.wait_op(created.json["operation"]["id"])
    return created.json["vm"]["uuid"]


def operations(app) -> int:
    with app.app_context():
        return db.session.query(Operation).count()


def test_snapshots_make_a_tree_and_each_change_is_an_operation(app, api):
    vm = running_vm(api)
    taken = api("POST", f"/vms/{vm}/snapshots", {"name": "first", "description": "before <anything>"})
    assert taken.status_code == 202 and taken.json["operation"]["kind"] == "snapshot"
    done = api.wait_op(taken.json["operation"]["id"])
    assert [s["step"] for s in done["steps"]] == ["Taking snapshot first", "Measuring what it takes"]
    off = api("POST", f"/vms/{vm}/actions/force-off")
    api.wait_op(off.json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{vm}/snapshots", {"name": "second"}).json["operation"]["id"])

    listed = api("GET", f"/vms/{vm}/snapshots").json
    assert [(s["name"], s["parent"], s["memory"], s["vm_state"], s["current"]) for s in listed] == [
        ("first", None, True, "running", False),
        ("second", "first", False, "shutoff", True),
    ]
    assert listed[0]["description"] == "before <anything>"
    assert api("GET", f"/vms/{vm}").json["snapshots"] == 2
    admin = signed_in(app, "admin", admin_password(app))
    assert "2 snapshots" in admin.row_html("snappy")  # the table shows how many

    reverted = api("POST", f"/vms/{vm}/snapshots/first/revert")
    assert reverted.status_code == 202
    api.wait_op(reverted.json["operation"]["id"])
    assert api("GET", f"/vms/{vm}").json["state"] == "running"  # the memory snapshot resumes the VM
    assert [s["current"] for s in api("GET", f"/vms/{vm}/snapshots").json] == [True, False]

    deleted = api("DELETE", f"/vms/{vm}/snapshots/first")
    api.wait_op(deleted.json["operation"]["id"])
    [left] = api("GET", f"/vms/{vm}/snapshots").json
    assert (left["name"], left["parent"]) == ("second", None)  # its child moved up
    assert api("GET", f"/vms/{vm}").json["snapshots"] == 1


def test_bad_input_and_unknown_snapshots_are_refused_and_change_nothing(app, api):
    vm = running_vm(api)
    api.wait_op(api("POST", f"/vms/{vm}/snapshots", {"name": "kept"}).json["operation"]["id"])
    before = operations(app)
    for body, field in (({"name": ""}, "name"), ({"name": "-x"}, "name"), ({"name": "a/b"}, "name"),
                        ({"name": "x" * 64}, "name"), ({"name": "ok", "description": "bell\a"}, "description"),
                        ({"name": "ok", "description": "d" * 1001}, "description"), ({"name": "kept"}, "name"),
                        ({"name": "ok", "memory": True}, "memory"), ({}, "name")):
        refused = api("POST", f"/vms/{vm}/snapshots", body)
        assert refused.status_code == 422, body
        assert field in refused.json["error"]["details"]["fields"], (body, refused.json)
    for method, path in (("POST", f"/vms/{vm}/snapshots/nope/revert"), ("DELETE", f"/vms/{vm}/snapshots/nope")):
        missing = api(method, path)
        assert (missing.status_code, missing.json["error"]["code"]) == (404, "SNAPSHOT_NOT_FOUND")
    assert operations(app) == before
    assert [s["name"] for s in api("GET", f"/vms/{vm}/snapshots").json] == ["kept"]


def test_a_busy_vm_answers_vm_busy(app, api):
    vm = running_vm(api)
    with app.app_context():  # an Operation under way on it, as if another request were first
        db.session.add(Operation(kind="reboot", vm_uuid=vm, state="running", step="Rebooting", steps=[]))
        db.session.commit()
    for method, path, body in (("POST", f"/vms/{vm}/snapshots", {"name": "now"}),
                               ("POST", f"/vms/{vm}/snapshots/now/revert", None)):
        busy = api(method, path, body)
        assert (busy.status_code, busy.json["error"]["code"]) == (409, "VM_BUSY")


def test_a_memory_snapshot_is_claimed_on_the_disk_quota(app):
    add_user(app, "carol", "carol-password-1", quota_disk_gib=2, quota_memory_mib=4096)
    api = Api(app, token_for(app, "carol", "carol-password-1"))
    vm = running_vm(api, memory_mib=1536)  # 1 GiB of disk: 1 GiB left, less than its memory
    refused = api("POST", f"/vms/{vm}/snapshots", {"name": "full"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "QUOTA_EXCEEDED")
    assert refused.json["error"]["details"]["fields"]["disk_gib"] == (
        "disk quota: 1 of 2 GiB used, 2 requested (the snapshot's memory)")
    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    taken = api("POST", f"/vms/{vm}/snapshots", {"name": "disks"})  # shut off: no memory to hold
    assert taken.status_code == 202
    api.wait_op(taken.json["operation"]["id"])
    with app.app_context():  # the claim became what libvirt measured (the test driver: nothing)
        assert db.session.scalar(select(VM.snapshot_mib).where(VM.uuid == vm)) == 0


def test_another_users_vm_has_no_snapshots_for_them(app, api):
    vm = running_vm(api)
    add_user(app, "mallory", "mallory-password-1")
    other = Api(app, token_for(app, "mallory", "mallory-password-1"))
    for method, path, body in (("GET", f"/vms/{vm}/snapshots", None), ("POST", f"/vms/{vm}/snapshots", {"name": "x"}),
                               ("POST", f"/vms/{vm}/snapshots/x/revert", None),
                               ("DELETE", f"/vms/{vm}/snapshots/x", None)):
        assert other(method, path, body).json["error"]["code"] == "VM_NOT_FOUND", path


def test_the_details_page_takes_lists_and_reverts(app, api):
    vm = running_vm(api)
    admin = signed_in(app, "admin", admin_password(app))
    page = admin.client.get(f"/vms/{vm}").text
    assert "Snapshots" in page and "No snapshots yet." in page and "holds its memory too" in page
    card = admin.htmx_post(f"/vms/{vm}/snapshots", {"name": "from-page", "description": "a <b>tag</b>"})
    assert card.status_code == 202 and 'id="snapshots"' in card.text
    # Listed once taken; its Operation ends a moment later, after measuring what it takes.
    wait_until(lambda: 'data-snapshot="from-page"' in admin.client.get(f"/vms/{vm}/snapshots").text
               and (api("GET", f"/vms/{vm}").json["operation"] or {}).get("state") in (None, "done"), 10,
               "the card to list the snapshot, and its Operation to end")
    listed = admin.client.get(f"/vms/{vm}/snapshots").text
    assert "a &lt;b&gt;tag&lt;/b&gt;" in listed and "memory and disks" in listed and "current" in listed
    refused = admin.htmx_post(f"/vms/{vm}/snapshots", {"name": "bad name"})
    assert refused.status_code == 422 and "1 to 63 letters" in refused.text
    reverted = admin.htmx_post(f"/vms/{vm}/snapshots/from-page/revert")
    assert reverted.status_code == 202
    wait_until(lambda: "Revert to from-page: done." in admin.client.get(f"/vms/{vm}/snapshots").text, 10,
               "the revert to end")


def test_an_adopted_vms_snapshots_are_listed_and_left_alone(app, api, libvirt_conn):
    dom = libvirt_conn.defineXML("<domain type='test'><name>elsewhere</name><memory>65536</memory>"
                                 "<os><type>hvm</type></os></domain>")
    dom.snapshotCreateXML("<domainsnapshot><name>theirs</name><description>made by virsh</description>"
                          "</domainsnapshot>", 0)
    with app.app_context():
        admin_id = db.session.scalar(select(User.id).where(User.username == "admin"))
        db.session.add(VM(uuid=dom.UUIDString(), name="elsewhere", owner_id=admin_id, vcpus=1, memory_mib=64,
                          disk_gib=1, state="shutoff", adopted=True))
        db.session.commit()
    vm = dom.UUIDString()
    [listed] = api("GET", f"/vms/{vm}/snapshots").json
    assert (listed["name"], listed["description"]) == ("theirs", "made by virsh")
    for method, path, body in (("POST", f"/vms/{vm}/snapshots", {"name": "mine"}),
                               ("POST", f"/vms/{vm}/snapshots/theirs/revert", None),
                               ("DELETE", f"/vms/{vm}/snapshots/theirs", None)):
        refused = api(method, path, body)
        assert (refused.status_code, refused.json["error"]["code"]) == (409, "VM_STATE_CONFLICT"), path
        assert "leaves an adopted VM's snapshots alone" in refused.json["error"]["message"]
    assert [s.getName() for s in dom.listAllSnapshots()] == ["theirs"]
    admin = signed_in(app, "admin", admin_password(app))
    card = admin.client.get(f"/vms/{vm}/snapshots").text
    assert "theirs" in card and "leaves them alone" in card and "a-revert" not in card
