"""Domains LIMEN did not make, and rows whose domain vanished (fast tier): admins see the
first as "unmanaged" and may adopt them; they may forget the second. Users may do neither."""
from xml.sax.saxutils import escape

from sqlalchemy import select

from helpers import add_user, signed_in, uuid_of, wait_until
from limen.extensions import db
from limen.models import VM, AuditEvent


def define(conn, name: str, vcpus: int = 2, memory_mib: int = 128):
    return conn.defineXML(f"<domain type='test'><name>{escape(name)}</name><memory>{memory_mib * 1024}</memory>"
                          f"<vcpu>{vcpus}</vcpu><os><type>hvm</type></os></domain>")


def test_a_domain_another_tool_made_is_listed_for_admins_and_can_be_adopted(app, admin, libvirt_conn):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    dom = define(libvirt_conn, "outsider")
    wait_until(lambda: admin.row_state("outsider") == "unmanaged", 5, "the domain to be listed")
    assert "outsider" not in bob.rows()
    url = f"/unmanaged/{dom.UUIDString()}/adopt"
    assert bob.htmx_post(url, {"owner": "bob"}).status_code == 403
    assert admin.htmx_post(url, {"owner": "nobody"}).status_code == 422

    assert admin.htmx_post(url, {"owner": "bob"}).status_code == 200
    assert admin.row_state("outsider") == "shutoff"
    row = bob.row_html("outsider")
    assert '<td class="vcpus">2</td>' in row and '<td class="memory">128 MiB</td>' in row and "not LIMEN&#39;s" in row
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "vm.adopt")).all()
        assert [(e.actor, e.result) for e in events] == [
            ("bob", "NOT_ALLOWED"), ("admin", "VALIDATION_FAILED"), ("admin", "ok")]
        assert (events[-1].target, events[-1].vm_name) == ("bob", "outsider")
    # Bob can use it as his own, and deleting it removes the domain.
    assert bob.htmx_post(f"/vms/{dom.UUIDString()}/start").status_code == 202
    bob.wait_state("outsider", "running")
    assert bob.htmx_post(f"/vms/{dom.UUIDString()}/delete").status_code == 202
    bob.wait_state("outsider", None)
    assert "outsider" not in [d.name() for d in libvirt_conn.listAllDomains()]


def test_a_domain_that_goes_away_leaves_the_unmanaged_list(app, admin, libvirt_conn):
    define(libvirt_conn, "passing")
    wait_until(lambda: admin.row_state("passing") == "unmanaged", 5, "the domain to be listed")
    libvirt_conn.lookupByName("passing").undefine()
    wait_until(lambda: admin.row_state("passing") is None, 5, "the domain to leave the list")


def test_a_hostile_domain_name_is_listed_as_text(app, admin, libvirt_conn):
    hostile = "<img src=x onerror=alert(1)>"
    define(libvirt_conn, hostile)
    wait_until(lambda: "&lt;img src=x onerror=alert(1)&gt;" in admin.rows(), 5, "the domain to be listed")
    assert hostile not in admin.rows()


def test_an_admin_forgets_a_missing_vm_and_a_user_may_not(app, admin, libvirt_conn):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.create(name="vanishing").status_code == 201
    bob.wait_state("vanishing", "running")
    vm_uuid = uuid_of(app, "vanishing")
    assert admin.htmx_post(f"/vms/{vm_uuid}/forget").status_code == 409  # it still exists
    dom = libvirt_conn.lookupByName("vanishing")
    dom.destroy()
    dom.undefine()
    bob.wait_state("vanishing", "missing")
    assert ">Forget<" not in bob.row_html("vanishing") and ">Forget<" in admin.row_html("vanishing")
    assert bob.htmx_post(f"/vms/{vm_uuid}/forget").status_code == 403
    assert admin.htmx_post(f"/vms/{vm_uuid}/forget").status_code == 200
    assert bob.row_state("vanishing") is None
    with app.app_context():
        assert db.session.scalar(select(VM).where(VM.uuid == vm_uuid)) is None
        assert db.session.scalars(select(AuditEvent.result).where(AuditEvent.action == "vm.forget")).all() == [
            "VM_STATE_CONFLICT", "NOT_ALLOWED", "ok"]
