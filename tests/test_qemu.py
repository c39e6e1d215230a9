"""The VM lifecycle through LIMEN's HTTP interface on the real libvirtd and QEMU (qemu tier).
The VMs have an empty disk: the BIOS runs, no operating system does."""
import os
import re
import subprocess

import libvirt
import pytest

from helpers import audit_rows, unique_name, uuid_of, wait_until

pytestmark = pytest.mark.qemu
START = 60  # seconds; TCG is slower than KVM


def _act(admin, app, name, action):
    return admin.htmx_post(f"/vms/{uuid_of(app, name)}/{action}")


def _volumes(host, app):
    pool = host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    pool.refresh(0)
    return pool.listVolumes()


def test_create_shutdown_force_off_start_delete(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    name = unique_name()
    assert admin.create(name=name, memory_mib="128", disk_gib="1").status_code == 201
    admin.wait_state(name, "running", START)
    uuid = uuid_of(app, name)
    dom = qemu_host.lookupByUUIDString(uuid)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    path = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"]).storageVolLookupByName(
        f"{uuid}.qcow2").path()
    assert open(path, "rb").read(4) == b"QFI\xfb"  # a real qcow2 file

    # ACPI shutdown: a guest with no operating system ignores it, and LIMEN says so.
    assert _act(admin, app, name, "shutdown").status_code == 202
    waiting = wait_until(lambda: "Waiting for the guest to power off" in (r := admin.row_html(name)) and r,
                         10, "the shutdown to wait for the guest")
    assert "a-force-off" in waiting and "a-start" not in waiting  # force off stays at hand
    wait_until(lambda: "SHUTDOWN_TIMEOUT" in admin.row_html(name), 30, "the shutdown to time out")
    assert admin.row_state(name) == "running" and dom.isActive()

    assert _act(admin, app, name, "force-off").status_code == 202
    admin.wait_state(name, "shutoff", 30)
    assert dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF and "(forced off)" in admin.row_html(name)

    assert _act(admin, app, name, "start").status_code == 202
    admin.wait_state(name, "running", START)
    assert dom.isActive()

    # A reboot it ignores as well: said, not reported as done.
    assert _act(admin, app, name, "reboot").status_code == 202
    wait_until(lambda: "REBOOT_TIMEOUT" in admin.row_html(name), 30, "the reboot to time out")
    assert admin.row_state(name) == "running"

    assert _act(admin, app, name, "delete").status_code == 202
    admin.wait_state(name, None, 30)
    with pytest.raises(libvirt.libvirtError):
        qemu_host.lookupByUUIDString(uuid)
    assert _volumes(qemu_host, app) == [] and not os.path.exists(path)


def test_a_shutdown_counts_down_and_a_force_off_cuts_it_short(qemu_admin):
    app, admin = qemu_admin(SHUTDOWN_TIMEOUT=90)
    name = unique_name()
    assert admin.create(name=name, memory_mib="128", disk_gib="1").status_code == 201
    admin.wait_state(name, "running", START)
    assert _act(admin, app, name, "shutdown").status_code == 202
    row = wait_until(lambda: "countdown" in (r := admin.row_html(name)) and r, 10, "the shutdown's countdown")
    left = int(re.search(r'class="countdown" datetime="[^"]+Z">(\d+) s</time> left', row)[1])
    assert 0 < left <= 90 and "Force off ends it at once" in row

    assert _act(admin, app, name, "force-off").status_code == 202
    admin.wait_state(name, "shutoff", 30)
    ends = wait_until(lambda: [e for e in audit_rows(app, action="vm.shutdown") if e.result != "accepted"], 10,
                      "the shutdown's end in the audit log")
    assert [e.result for e in ends] == ["SHUTDOWN_CUT_SHORT"]
    assert [e.result for e in audit_rows(app, action="vm.force-off")] == ["accepted", "ok"]

    # A reboot the guest ignores can be cut short the same way, and says so.
    assert _act(admin, app, name, "start").status_code == 202
    admin.wait_state(name, "running", START)
    assert _act(admin, app, name, "reboot").status_code == 202
    row = wait_until(lambda: "Asking the guest to reboot" in (r := admin.row_html(name)) and r, 10, "the reboot")
    assert "a-force-off" in row
    assert _act(admin, app, name, "force-off").status_code == 202
    admin.wait_state(name, "shutoff", 30)
    ends = wait_until(lambda: [e for e in audit_rows(app, action="vm.reboot") if e.result != "accepted"], 10,
                      "the reboot's end in the audit log")
    assert [(e.result, e.detail) for e in ends] == [
        ("VM_NOT_RUNNING", "The VM is shutoff (forced off); its guest did not restart.")]
    assert _act(admin, app, name, "delete").status_code == 202
    admin.wait_state(name, None, 30)


def test_a_create_that_fails_part_way_leaves_nothing_behind(qemu_admin, qemu_host):
    # A domain type this QEMU cannot run: the disk is made, then libvirt refuses the domain.
    # (A missing network no longer gets this far: the create refuses it up front.)
    app, admin = qemu_admin(DOMAIN_TYPE="xen")
    name = unique_name()
    assert admin.create(name=name).status_code == 201
    admin.wait_state(name, "error", START)
    row = admin.row_html(name)
    assert "xen" in row  # libvirt's own reason
    with pytest.raises(libvirt.libvirtError):
        qemu_host.lookupByName(name)
    assert _volumes(qemu_host, app) == []
    assert "a-delete" in row and "a-start" not in row
    assert _act(admin, app, name, "delete").status_code == 202
    admin.wait_state(name, None, 30)


def test_a_disk_larger_than_the_pool_is_refused_and_creates_nothing(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    name = unique_name()
    response = admin.create(name=name, disk_gib="1000000")
    assert response.status_code == 422 and "GiB free" in response.text
    assert admin.row_state(name) is None
    assert _volumes(qemu_host, app) == []
    with pytest.raises(libvirt.libvirtError):
        qemu_host.lookupByName(name)


def test_changes_made_with_virsh_show_in_the_table(qemu_admin):
    app, admin = qemu_admin()
    name = unique_name()
    assert admin.create(name=name, memory_mib="128").status_code == 201
    admin.wait_state(name, "running", START)

    def virsh(*args):
        subprocess.run(["virsh", "-q", "-c", "qemu:///system", *args], check=True, capture_output=True)

    virsh("destroy", name)
    admin.wait_state(name, "shutoff", 5)
    virsh("start", name)
    admin.wait_state(name, "running", START)
    virsh("destroy", name)
    virsh("undefine", name)
    admin.wait_state(name, "missing", 5)


def test_a_pause_libvirt_has_no_reason_for_is_explained_by_qemus_run_state(qemu_admin, qemu_host):
    """QEMU stopping a guest on its own (a KVM internal error, on hosts whose KVM cannot run
    the guest's code) reaches libvirt as "paused, reason unknown". A stop through QEMU's
    monitor does the same, on any host: LIMEN asks QEMU why, and says it."""
    import libvirt_qemu

    app, admin = qemu_admin()
    name = unique_name()
    assert admin.create(name=name, memory_mib="128", disk_gib="1").status_code == 201
    admin.wait_state(name, "running", START)
    dom = qemu_host.lookupByUUIDString(uuid_of(app, name))
    libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "stop"}', 0)
    admin.wait_state(name, "paused", 30)
    assert dom.state() == [libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN]
    assert "(paused through QEMU&#39;s monitor)" in admin.row_html(name)
    assert _act(admin, app, name, "resume").status_code == 202
    admin.wait_state(name, "running", 30)
    assert _act(admin, app, name, "delete").status_code == 202
    admin.wait_state(name, None, 30)


def test_a_running_vms_screen_is_a_png_of_what_qemu_shows(qemu_admin):
    """QEMU answers libvirt's screenshot with a PPM image: LIMEN gives the page a PNG of it."""
    import struct

    app, admin = qemu_admin()
    name = unique_name()
    assert admin.create(name=name, memory_mib="128", disk_gib="1").status_code == 201
    admin.wait_state(name, "running", START)
    shot = admin.client.get(f"/vms/{uuid_of(app, name)}/screen.png")
    assert shot.status_code == 200 and shot.data.startswith(b"\x89PNG\r\n\x1a\n")
    width, height, depth, colour = struct.unpack(">IIBB", shot.data[16:26])
    assert 320 <= width <= 2048 and 200 <= height <= 2048 and (depth, colour) == (8, 2)
    # Its pixels are all there: a row is a filter byte and three bytes a pixel.
    import zlib

    idat = shot.data.index(b"IDAT")
    size = struct.unpack(">I", shot.data[idat - 4:idat])[0]
    assert len(zlib.decompress(shot.data[idat + 4:idat + 4 + size])) == height * (1 + 3 * width)
