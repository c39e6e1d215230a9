"""The VM table, create-and-start in the background, polls and actions, on libvirt's test
driver (fast tier)."""
import re
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Browserless, add_user, audit_rows, find_row, uuid_of, wait_until


def _pool_volumes(conn) -> list[str]:
    pool = conn.storagePoolLookupByName("limen")
    pool.refresh(0)
    return pool.listVolumes()


def _assert_nothing_created(admin, conn):
    assert 'data-state' not in admin.rows()
    assert conn.listAllDomains() == []
    assert _pool_volumes(conn) == []


def _create_running(admin, name="web"):
    assert admin.create(name=name).status_code == 201
    admin.wait_state(name, "running")
    return name


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("field, value, message", [
    ("name", "a'b<c", "lower-case letters, digits and hyphens"),
    ("name", "", "lower-case letters"),
    ("name", "Web", "lower-case letters"),
    ("name", "-web", "starting with a letter or digit"),
    ("name", "a" * 64, "1 to 63"),
    ("name", "we b", "lower-case letters"),
    ("vcpus", "0", "from 1 to 16"),
    ("vcpus", "17", "from 1 to 16"),
    ("vcpus", "two", "whole number"),
    ("vcpus", "-1", "whole number"),
    ("memory_mib", "32", "from 64 to 3072 MiB"),
    ("memory_mib", "4096", "from 64 to 3072 MiB"),
    ("memory_mib", "1e3", "whole number"),
    ("disk_gib", "0", "at least 1 GiB"),
    ("disk_gib", "101", "has 100 GiB free"),
])
def test_invalid_input_is_shown_at_its_field_and_creates_nothing(admin, libvirt_conn, field, value, message):
    form = {"name": "ok-name", "vcpus": "1", "memory_mib": "64", "disk_gib": "1", field: value}
    response = admin.htmx_post("/vms", form)
    assert response.status_code == 422
    error = re.search(rf'<span class="field-error" id="err-{field}">([^<]*)</span>', response.text)
    assert error and message in error.group(1).replace("&#39;", "'")
    assert re.findall(r'class="field-error" id="err-(\w+)"', response.text) == [field]
    _assert_nothing_created(admin, libvirt_conn)


def test_a_hostile_name_is_refused_before_libvirt_and_echoed_escaped(admin, libvirt_conn):
    response = admin.create(name="a'b<c")
    assert response.status_code == 422
    assert 'value="a&#39;b&lt;c"' in response.text and "b<c" not in response.text
    _assert_nothing_created(admin, libvirt_conn)


def test_a_name_taken_in_limen_or_in_libvirt_is_refused(admin, libvirt_conn):
    _create_running(admin, "taken")
    response = admin.create(name="taken")
    assert response.status_code == 422 and "The name taken is already taken." in response.text
    libvirt_conn.defineXML("<domain type='test'><name>outside</name><memory>65536</memory>"
                           "<os><type>hvm</type></os></domain>")
    response = admin.create(name="outside")
    assert response.status_code == 422 and "The name outside is already taken." in response.text
    # Not LIMEN's VM: admins see it as another tool's domain, nothing more.
    wait_until(lambda: admin.row_state("outside") == "unmanaged", 5, "outside to be listed as unmanaged")


def test_without_htmx_a_bad_form_renders_the_whole_page_with_errors(admin):
    response = admin.client.post("/vms", data={"name": "", "vcpus": "1", "memory_mib": "64",
                                               "disk_gib": "1", "csrf_token": admin.csrf})
    assert response.status_code == 422
    assert "<table" in response.text and 'id="err-name"' in response.text


# -- create and the table -----------------------------------------------------------------
def test_create_answers_at_once_and_the_vm_comes_up_running(app, admin, libvirt_conn):
    response = admin.create(name="web-1", vcpus="2", memory_mib="256", disk_gib="3")
    assert response.status_code == 201
    # The answer carries a fresh form and the table with the new row, out of band.
    assert 'id="create-form"' in response.text and 'hx-swap-oob="true"' in response.text
    row = find_row(response.text, "web-1")
    assert row is not None and row.attrs["data-state"] in ("creating", "running")

    admin.wait_state("web-1", "running")
    uuid = uuid_of(app, "web-1")
    dom = libvirt_conn.lookupByUUIDString(uuid)
    assert dom.isActive() and dom.name() == "web-1"
    xml = ET.fromstring(dom.XMLDesc(0))
    # Two vCPUs, and room to plug in more while it runs, up to the host's CPU count.
    assert (xml.find("vcpu").get("current"), xml.findtext("vcpu")) == ("2", str(libvirt_conn.getInfo()[2]))
    assert int(xml.findtext("memory")) == 256 * 1024
    assert xml.find("devices/graphics").get("listen") == "127.0.0.1"
    assert _pool_volumes(libvirt_conn) == [f"{uuid}.qcow2"]
    vol = libvirt_conn.storagePoolLookupByName("limen").storageVolLookupByName(f"{uuid}.qcow2")
    assert vol.info()[1] == 3 * 1024 ** 3
    row = admin.row_html("web-1")
    assert "2</td>" in row and "256 MiB" in row and "3 GiB" in row


def test_create_records_each_step_of_its_operation(app, admin):
    from limen.extensions import db
    from limen.models import Operation
    from sqlalchemy import select

    _create_running(admin, "steps")
    uuid = uuid_of(app, "steps")
    with app.app_context():
        op = wait_until(lambda: db.session.scalar(select(Operation).where(
            Operation.vm_uuid == uuid, Operation.state == "done")), what="the create to finish")
        assert [s["step"] for s in op.steps] == [
            "Creating the disk", "Defining the VM", "Starting the VM", "Waiting for it to run"]


def test_an_unchanged_poll_is_204_with_no_body_and_a_change_shows_at_the_next(admin, libvirt_conn):
    _create_running(admin, "polled")
    rows = admin.rows()
    version = re.search(r'rows\?v=([^"]+)"', rows).group(1)
    unchanged = admin.client.get(f"/vms/rows?v={version}", headers={"HX-Request": "true"})
    assert unchanged.status_code == 204 and unchanged.data == b""

    libvirt_conn.lookupByName("polled").destroy()  # behind LIMEN's back
    changed = wait_until(lambda: (r := admin.client.get(f"/vms/rows?v={version}")).status_code == 200 and r,
                         what="the poll to report the change")
    row = find_row(changed.text, "polled")
    assert row is not None and row.attrs["data-state"] == "shutoff"
    assert "(forced off)" in changed.text


def test_a_vm_whose_domain_vanished_shows_missing(admin, libvirt_conn):
    _create_running(admin, "vanish")
    dom = libvirt_conn.lookupByName("vanish")
    dom.destroy()
    dom.undefine()
    admin.wait_state("vanish", "missing")
    row = admin.row_html("vanish")
    assert 'a-delete' in row and "a-start" not in row
    assert "console-link" not in row  # there is no screen to open


# -- actions ------------------------------------------------------------------------------
def _act(admin, app, name, action):
    return admin.htmx_post(f"/vms/{uuid_of(app, name)}/{action}")


def test_shutdown_force_off_start_reboot(app, admin, libvirt_conn):
    _create_running(admin, "acts")
    dom = libvirt_conn.lookupByName("acts")

    assert _act(admin, app, "acts", "shutdown").status_code == 202
    admin.wait_state("acts", "shutoff")
    assert not dom.isActive()

    assert _act(admin, app, "acts", "start").status_code == 202
    admin.wait_state("acts", "running")
    assert dom.isActive() and "a-shutdown" in admin.row_html("acts")

    assert _act(admin, app, "acts", "reboot").status_code == 202
    admin.wait_state("acts", "running")
    assert "failed" not in admin.row_html("acts")

    assert _act(admin, app, "acts", "force-off").status_code == 202
    admin.wait_state("acts", "shutoff")
    assert "(forced off)" in admin.row_html("acts")


def test_pause_and_resume(app, admin, libvirt_conn):
    _create_running(admin, "held")
    dom = libvirt_conn.lookupByName("held")
    assert "a-pause" in admin.row_html("held") and "a-resume" not in admin.row_html("held")

    assert _act(admin, app, "held", "pause").status_code == 202
    admin.wait_state("held", "paused")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    row = admin.row_html("held")
    assert "(paused by a user)" in row
    assert "a-resume" in row and "a-force-off" in row and "a-pause" not in row and "a-shutdown" not in row
    assert 'data-confirm="Force off held? It is like pulling the plug' in row  # asked before it is done
    assert _act(admin, app, "held", "pause").status_code == 409  # already paused: refused, nothing queued

    assert _act(admin, app, "held", "resume").status_code == 202
    admin.wait_state("held", "running")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    events = [(e.action, e.result) for e in audit_rows(app) if e.action in ("vm.pause", "vm.resume")]
    assert events == [("vm.pause", "accepted"), ("vm.pause", "ok"), ("vm.pause", "VM_STATE_CONFLICT"),
                      ("vm.resume", "accepted"), ("vm.resume", "ok")]


def test_an_action_the_state_does_not_allow_is_refused_with_its_code(app, admin):
    _create_running(admin, "busy")
    response = _act(admin, app, "busy", "start")
    assert response.status_code == 409
    assert response.headers["HX-Retarget"] == "#flash"
    assert "VM_STATE_CONFLICT" in response.text and "running" in response.text


def test_delete_removes_domain_volume_and_row(app, admin, libvirt_conn):
    _create_running(admin, "gone")
    uuid = uuid_of(app, "gone")
    assert _act(admin, app, "gone", "delete").status_code == 202
    admin.wait_state("gone", None)
    assert libvirt_conn.listAllDomains() == []
    assert f"{uuid}.qcow2" not in _pool_volumes(libvirt_conn)
    assert _act(admin, app, "gone", "delete").status_code == 404


def test_unknown_vm_is_404(admin):
    response = admin.htmx_post("/vms/00000000-0000-0000-0000-000000000000/start")
    assert response.status_code == 404 and "VM_NOT_FOUND" in response.text
    assert admin.htmx_post("/vms/not-a-uuid/start").status_code == 404


def test_a_user_sees_and_touches_only_their_own_vms(app, admin, libvirt_conn):
    _create_running(admin, "admins-vm")
    add_user(app, "alice", "alice-password-1")
    alice = Browserless(app.test_client())
    assert alice.login("alice", "alice-password-1").status_code == 302
    assert "admins-vm" not in alice.client.get("/").text
    response = alice.htmx_post(f"/vms/{uuid_of(app, 'admins-vm')}/force-off")
    assert response.status_code == 404
    assert libvirt_conn.lookupByName("admins-vm").isActive()
    assert alice.create(name="alices-vm").status_code == 201
    alice.wait_state("alices-vm", "running")
    assert admin.row_state("alices-vm") == "running"  # admins see every VM


def test_health_reports_libvirt(app, make_app, tmp_path):
    assert app.test_client().get("/healthz").json == {
        "status": "ok", "checks": {"database": "ok", "libvirt": "ok", "event_loop": "ok"}}
    broken = make_app(LIBVIRT_URI=f"test://{tmp_path}/no-such-node.xml",
                      INSTANCE_PATH=str(tmp_path / "other"))
    response = broken.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.json["checks"]["libvirt"] == "failed: HYPERVISOR_UNAVAILABLE"


def test_hypervisor_down_at_create_is_a_clear_503(make_app, tmp_path):
    broken = make_app(LIBVIRT_URI=f"test://{tmp_path}/no-such-node.xml")
    b = Browserless(broken.test_client())
    from helpers import admin_password
    assert b.login("admin", admin_password(broken)).status_code == 302
    response = b.create(name="nohv")
    assert response.status_code == 503 and "HYPERVISOR_UNAVAILABLE" in response.text
    assert b.row_state("nohv") is None


def test_every_refusal_reaches_the_message_area_with_a_code(admin):
    """A stale CSRF token, an unknown URL or a wrong method must not replace the table."""
    stale = admin.client.post("/vms/00000000-0000-0000-0000-000000000000/start",
                              headers={"HX-Request": "true", "X-CSRFToken": "stale"})
    assert stale.status_code == 400 and stale.headers["HX-Retarget"] == "#flash"
    assert "CSRF_FAILED" in stale.text and "Reload" in stale.text
    unknown = admin.htmx_post("/vms/00000000-0000-0000-0000-000000000000/explode")
    assert unknown.status_code == 404 and unknown.headers["HX-Retarget"] == "#flash"
    assert "NOT_FOUND" in unknown.text
    page = admin.client.get("/no-such-page")
    assert page.status_code == 404 and "NOT_FOUND" in page.text and "<html" in page.text


def test_an_interrupted_create_is_undone_at_the_next_start(make_app, node_xml, tmp_path):
    """LIMEN stopped after defining the domain: the next start removes domain and disk."""
    from limen import create_app, runtime
    from limen.extensions import db
    from limen.models import VM, Operation
    from sqlalchemy import select

    cfg = {"TESTING": True, "INSTANCE_PATH": str(tmp_path / "crashed"), "NETWORK": "none",
           "STORAGE_DIR": str(tmp_path / "pool"), "LIBVIRT_URI": f"test://{node_xml}"}
    app = create_app(cfg)  # not started: as if the process had died mid-operation
    hv = runtime.get(app).hypervisor
    uuid = "11111111-2222-3333-4444-555555555555"
    with app.app_context():
        db.session.add(VM(uuid=uuid, name="half", owner_id=1, vcpus=1, memory_mib=64, disk_gib=1))
        db.session.add(Operation(kind="create", vm_uuid=uuid, state="running", step="Starting the VM", steps=[]))
        db.session.commit()
    hv.disks.create_volume(f"{uuid}.qcow2", 1)
    hv.domains.define(uuid=uuid, name="half", vcpus=1, memory_mib=64, volume=f"{uuid}.qcow2")
    try:
        runtime.start(app)
        conn = hv.connection.get()
        assert conn.listAllDomains() == []
        assert _pool_volumes(conn) == []
        with app.app_context():
            vm = db.session.scalar(select(VM).where(VM.uuid == uuid))
            assert vm.state == "error" and vm.state_reason.startswith("OPERATION_INTERRUPTED")
            op = db.session.scalar(select(Operation))
            assert (op.state, op.error_code) == ("failed", "OPERATION_INTERRUPTED")
    finally:
        runtime.stop(app)
