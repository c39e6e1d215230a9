"""Changing a VM after it is made (fast tier, libvirt's test driver): name, description,
autostart, vCPUs and memory through the API and the Details page; bad input, the quota, a
running VM and a second edit at once are refused and change nothing, and a change that fails
part-way undoes the ones made before it. The qemu tier proves them on QEMU."""
import threading
import xml.etree.ElementTree as ET

import libvirt
import pytest
from sqlalchemy import select

from helpers import Api, add_user, admin_password, signed_in, token_for, wait_until
from limen import accounts, runtime
from limen.errors import HypervisorError
from limen.extensions import db
from limen.models import AuditEvent, User


@pytest.fixture
def api(app):
    return Api(app, token_for(app, "admin", admin_password(app)))


def made_vm(api, name="editable", running=False, vcpus=1, memory_mib=64) -> str:
    created = api("POST", "/vms", {"name": name, "vcpus": vcpus, "memory_mib": memory_mib, "disk_gib": 1})
    assert created.status_code == 202, created.json
    api.wait_op(created.json["operation"]["id"])
    vm = created.json["vm"]["uuid"]
    if not running:
        api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    return vm


def domain(app, vm: str) -> libvirt.virDomain:
    with app.app_context():
        return runtime.get().hypervisor.connection.get().lookupByUUIDString(vm)


def defined(app, vm: str) -> tuple[str, int, int, str | None, bool]:
    """What libvirt holds for the next start: the name, vCPUs, memory (MiB), description and
    autostart."""
    dom = domain(app, vm)
    xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    vcpu, memory = xml.find("vcpu"), xml.find("currentMemory")
    unit = {"KiB": 1, "MiB": 1024}[memory.get("unit", "KiB")]
    description = xml.findtext("description")
    return dom.name(), int(vcpu.get("current", vcpu.text)), int(memory.text) * unit // 1024, description, \
        bool(dom.autostart())


def edits(app) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "vm.edit",
                                                                      AuditEvent.result == "ok")
                                       .order_by(AuditEvent.id)))


def test_a_shut_off_vm_is_renamed_resized_described_and_set_to_autostart(app, api):
    vm = made_vm(api)
    changed = api("PATCH", f"/vms/{vm}", {"name": "renamed", "vcpus": 2, "memory_mib": 96,
                                          "description": "web <front>\nsecond line", "autostart": True})
    assert changed.status_code == 200, changed.json
    assert (changed.json["uuid"], changed.json["name"], changed.json["vcpus"], changed.json["memory_mib"],
            changed.json["description"]) == (vm, "renamed", 2, 96, "web <front>\nsecond line")
    assert defined(app, vm) == ("renamed", 2, 96, "web <front>\nsecond line", True)
    assert sorted(edits(app)) == ["autostart: off → on", "description: '' → 'web <front>\\nsecond line'",
                                  "memory: 64 MiB → 96 MiB", "name: editable → renamed", "vCPUs: 1 → 2"]
    admin = signed_in(app, "admin", admin_password(app))
    row = admin.row_html("renamed")
    assert '<td class="vcpus">2</td>' in row and '<td class="memory">96 MiB</td>' in row  # the new values
    page = admin.client.get(f"/vms/{vm}").text
    assert "web &lt;front&gt;\nsecond line" in page  # shown escaped, as written
    # The same values again change nothing, and say so.
    again = api("PATCH", f"/vms/{vm}", {"vcpus": 2, "autostart": True})
    assert again.status_code == 200 and len(edits(app)) == 5
    off = api("PATCH", f"/vms/{vm}", {"autostart": False, "description": ""})
    assert off.status_code == 200 and defined(app, vm)[3:] == (None, False)


def test_the_details_page_changes_memory_and_says_what_is_wrong(app, api):
    vm = made_vm(api)
    admin = signed_in(app, "admin", admin_password(app))
    saved = admin.client.post(f"/vms/{vm}/edit", data={"csrf_token": admin.csrf, "vcpus": "1", "memory_mib": "128"})
    assert saved.status_code == 302 and saved.location.endswith(f"/vms/{vm}?done=edited")
    assert "128 MiB" in admin.client.get(saved.location).text
    assert defined(app, vm)[2] == 128
    refused = admin.client.post(f"/vms/{vm}/edit", data={"csrf_token": admin.csrf, "vcpus": "1",
                                                         "memory_mib": "12345678"})
    assert refused.status_code == 422
    assert "Choose from 64 to" in refused.text and 'value="12345678"' in refused.text
    assert defined(app, vm)[2] == 128


def test_the_boot_order_names_the_drives_it_boots_from(app, api):
    vm = made_vm(api)
    assert api("GET", f"/vms/{vm}").json["boot_order"] == ["vda"]
    drives = [t.get("dev") for t in ET.fromstring(domain(app, vm).XMLDesc(0)).findall("./devices/disk/target")]
    cdrom = next(d for d in drives if d != "vda")
    changed = api("PATCH", f"/vms/{vm}", {"boot_order": [cdrom, "vda"]})
    assert changed.status_code == 200 and changed.json["boot_order"] == [cdrom, "vda"]
    assert changed.json["boot_cdrom"] is True  # the CD-ROM card says so too
    assert edits(app)[-1] == f"boot order: vda → {cdrom}, vda"
    for order, says in (([], "at least one"), (["vda", "vda"], "once"), (["vdz"], "no drive vdz")):
        refused = api("PATCH", f"/vms/{vm}", {"boot_order": order})
        assert refused.status_code == 422 and says in refused.json["error"]["details"]["fields"]["boot_order"], order
    assert api("GET", f"/vms/{vm}").json["boot_order"] == [cdrom, "vda"]
    # The Details page's form: one select per place, an empty one boots nothing more.
    admin = signed_in(app, "admin", admin_password(app))
    page = admin.client.get(f"/vms/{vm}").text
    assert f'<option value="{cdrom}" selected>{cdrom} (CD-ROM)</option>' in page
    saved = admin.client.post(f"/vms/{vm}/edit", data={"csrf_token": admin.csrf, "boot_order": ["vda", ""]})
    assert saved.status_code == 302 and api("GET", f"/vms/{vm}").json["boot_order"] == ["vda"]
    refused = admin.client.post(f"/vms/{vm}/edit", data={"csrf_token": admin.csrf, "boot_order": ["", ""]})
    assert refused.status_code == 422 and "Choose at least one drive to boot from." in refused.text


def test_bad_input_is_refused_and_changes_nothing(app, api):
    vm = made_vm(api)
    made_vm(api, "taken")
    before = defined(app, vm)
    with app.app_context():
        host = runtime.get().hypervisor.host.limits()
        cpus, memory_mib = host.cpus, host.memory_mib
    for body, field in (({"name": "Bad_Name"}, "name"), ({"name": "taken"}, "name"), ({"name": ""}, "name"),
                        ({"vcpus": 0}, "vcpus"), ({"vcpus": cpus + 1}, "vcpus"),
                        ({"memory_mib": 63}, "memory_mib"), ({"memory_mib": memory_mib + 1}, "memory_mib"),
                        ({"vcpus": "2"}, "vcpus"), ({"description": "d" * 1001}, "description"),
                        ({"description": "bell\a"}, "description"), ({"autostart": "maybe"}, "autostart"),
                        ({"disk_gib": 9}, "disk_gib"), ({"vcpus": 2, "name": "-x"}, "name"), ({}, "name")):
        refused = api("PATCH", f"/vms/{vm}", body)
        assert refused.status_code == 422, body
        assert field in refused.json["error"]["details"]["fields"], (body, refused.json)
    assert defined(app, vm) == before
    assert edits(app) == []


def test_growth_is_checked_against_the_owners_quota_and_shrinking_is_not(app, api):
    add_user(app, "bob", "bob-password-1", quota_vcpus=3, quota_memory_mib=256)
    bob = Api(app, token_for(app, "bob", "bob-password-1"))
    vm = made_vm(bob, "bobs", vcpus=2, memory_mib=128)
    refused = bob("PATCH", f"/vms/{vm}", {"vcpus": 4, "memory_mib": 512})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "QUOTA_EXCEEDED")
    assert refused.json["error"]["details"]["fields"] == {
        "vcpus": "vCPU quota: 2 of 3 vCPUs used, 2 more requested",
        "memory_mib": "memory quota: 128 of 256 MiB used, 384 more requested"}
    assert defined(app, vm)[1:3] == (2, 128)
    # An admin's change counts against the owner's quota too.
    assert api("PATCH", f"/vms/{vm}", {"vcpus": 4}).json["error"]["code"] == "QUOTA_EXCEEDED"
    assert bob("PATCH", f"/vms/{vm}", {"vcpus": 3, "memory_mib": 256}).status_code == 200
    with app.app_context():  # the admin lowers the quota under what the VM takes: it may still shrink
        db.session.execute(User.__table__.update().where(User.username == "bob").values(quota_vcpus=1,
                                                                                         quota_memory_mib=64))
        db.session.commit()
    assert bob("PATCH", f"/vms/{vm}", {"vcpus": 2, "memory_mib": 64}).status_code == 200
    assert defined(app, vm)[1:3] == (2, 64)


def test_a_running_vm_takes_what_it_can_at_once_and_the_rest_at_its_next_start(app, api):
    vm = made_vm(api, running=True, memory_mib=128)
    # A vCPU plugged in (up to the host's count), memory given back through the balloon: at once.
    now = api("PATCH", f"/vms/{vm}", {"vcpus": 2, "memory_mib": 96, "description": "live"})
    assert now.status_code == 200, now.json
    assert (now.json["vcpus"], now.json["memory_mib"], now.json["pending"]) == (2, 96, None)
    live = ET.fromstring(domain(app, vm).XMLDesc(0))
    assert (live.find("vcpu").get("current"), live.findtext("currentMemory")) == ("2", str(96 * 1024))
    assert domain(app, vm).metadata(libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, None,
                                    libvirt.VIR_DOMAIN_AFFECT_LIVE) == "live"
    # A vCPU taken away, and more memory than it started with: from its next start.
    later = api("PATCH", f"/vms/{vm}", {"vcpus": 1, "memory_mib": 256})
    assert (later.json["vcpus"], later.json["memory_mib"], later.json["pending"]) == \
        (2, 96, {"vcpus": 1, "memory_mib": 256})
    assert defined(app, vm)[1:3] == (1, 256)
    assert edits(app)[-2:] == ["vCPUs: 2 → 1 (from its next start)", "memory: 96 MiB → 256 MiB (from its next start)"]
    admin = signed_in(app, "admin", admin_password(app))
    row = admin.row_html("editable")
    assert "→ 1 at next start" in row and "→ 256 MiB at next start" in row
    assert "256 MiB takes effect at next start" in admin.client.get(f"/vms/{vm}").text
    with app.app_context():  # the quota counts the larger of what it has and what it is set to
        owner = db.session.scalar(select(User).where(User.username == "admin"))
        assert accounts.usage_of(owner).vcpus == 2 and accounts.usage_of(owner).memory_mib == 256
    renamed = api("PATCH", f"/vms/{vm}", {"name": "other"})
    assert (renamed.status_code, renamed.json["error"]["code"]) == (409, "VM_STATE_CONFLICT")
    assert "Shut the VM off to rename it" in renamed.json["error"]["message"]

    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])
    off = wait_until(lambda: (r := api("GET", f"/vms/{vm}").json)["pending"] is None and r, 10,
                     "the stopped VM to have what it is set to")
    assert (off["vcpus"], off["memory_mib"]) == (1, 256)
    assert "at next start" not in admin.row_html("editable")


def test_a_change_that_fails_part_way_undoes_the_ones_before_it(app, api, monkeypatch):
    vm = made_vm(api)
    api("PATCH", f"/vms/{vm}", {"description": "kept", "autostart": True})
    before = defined(app, vm)
    with app.app_context():
        domains = runtime.get().hypervisor.domains

    def refuse(uuid, name):
        raise HypervisorError("the rename failed")

    monkeypatch.setattr(domains, "rename", refuse)
    failed = api("PATCH", f"/vms/{vm}", {"description": "new", "autostart": False, "memory_mib": 200,
                                         "name": "renamed"})
    assert failed.status_code == 502, failed.json
    assert defined(app, vm) == before
    shown = api("GET", f"/vms/{vm}").json
    assert (shown["name"], shown["memory_mib"], shown["description"]) == ("editable", 64, "kept")


def test_two_edits_at_once_one_wins_and_the_other_is_vm_busy(app, api, monkeypatch):
    vm = made_vm(api)
    with app.app_context():
        domains = runtime.get().hypervisor.domains
    entered, release = threading.Event(), threading.Event()
    real = domains.autostart

    def slow(uuid):  # what the first edit reads under the VM's lock, before it changes anything
        entered.set()
        assert release.wait(10), "the test did not let the first edit go on"
        return real(uuid)

    monkeypatch.setattr(domains, "autostart", slow)
    first = {}
    thread = threading.Thread(target=lambda: first.update(r=api("PATCH", f"/vms/{vm}", {"vcpus": 2,
                                                                                         "autostart": True})))
    thread.start()
    try:
        assert entered.wait(10), "the first edit never reached libvirt"
        second = api("PATCH", f"/vms/{vm}", {"memory_mib": 128})
        assert (second.status_code, second.json["error"]["code"]) == (409, "VM_BUSY")
    finally:
        release.set()
        thread.join(10)
    assert first["r"].status_code == 200
    assert defined(app, vm)[1:3] == (2, 64)
    monkeypatch.setattr(domains, "autostart", real)
    wait_until(lambda: api("PATCH", f"/vms/{vm}", {"memory_mib": 128}).status_code == 200, 5,
               "the VM's lock to be free again")
