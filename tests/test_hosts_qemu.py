"""LIMEN with a second libvirt host (qemu tier): added by an admin over SSH with its key checked,
VMs made there and run there, and that host going away while the local host's VMs keep
working. The second host is scripts/second-host (tests/fixtures/hosts.py)."""
import os
import re
import signal
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import Reader, close_code, find_row, get_ticket, open_console, open_libvirt, wait_until
from limen import remote, runtime
from test_console_qemu import BANNER, ws_url
from test_serial_qemu import OPEN, opened, serial_url

pytestmark = pytest.mark.qemu


def post(b, url: str, data: dict | None = None):
    return b.client.post(url, data={**(data or {}), "csrf_token": b.csrf})


def add_second(app, admin, second_host, name: str = "second"):
    """The admin's way: LIMEN's key onto the host, a connection test, the key checked, added."""
    second_host.authorize(remote.public_key(app.instance_path))
    tried = post(admin, "/admin/hosts/probe", {"name": name, "uri": second_host.uri})
    assert tried.status_code == 200, tried.text[-3000:]
    assert remote.fingerprint(second_host.host_key) in tried.text  # what the admin checks on the host
    shown = re.search(r'name="host_key" value="([^"]+)"', tried.text).group(1)
    added = post(admin, "/admin/hosts", {"name": name, "uri": second_host.uri, "host_key": shown})
    assert added.status_code == 302, added.text[-3000:]
    return shown


def host_cell(admin, name: str) -> str:
    row = find_row(admin.rows(), name)
    assert row is not None, name
    return row.html


def test_a_vm_made_on_the_second_host_runs_there_and_its_host_going_away_touches_only_its_row(
        qemu_admin, qemu_host, second_host, live_server):
    app, admin = qemu_admin()
    add_second(app, admin, second_host)
    hosts_page = admin.client.get("/admin/hosts").text
    assert 'data-host="second"' in hosts_page and remote.fingerprint(second_host.host_key) in hosts_page

    assert admin.create(name="far", host="second").status_code == 201
    assert admin.create(name="near", host="local").status_code == 201
    admin.wait_state("far", "running", 30)
    admin.wait_state("near", "running", 30)
    assert '<td class="host">second</td>' in host_cell(admin, "far")
    assert '<td class="host">local</td>' in host_cell(admin, "near")
    assert running_there(second_host) == {"far"}  # on the second host, and only there
    assert "far" not in {d.name() for d in qemu_host.listAllDomains()}

    # Each host's sampler reads its own VMs and CPUs: the far VM's graphs have points, and the
    # overview shows each host with its VMs and how busy its CPUs are.
    far = uuid_in(host_cell(admin, "far"))
    sampler = runtime.get(app).hosts[2].stats
    wait_until(lambda: (sampler.sample(), admin.client.get(f"/vms/{far}/stats").json["t"])[1], 30,
               "the far VM's graphs to have a point")
    for parts in runtime.get(app).hosts.values():
        wait_until(lambda: (parts.stats.sample(), parts.stats.host_cpu_percent is not None)[1], 30,
                   f"a share of host {parts.name}'s CPUs")
    overview = admin.client.get("/host").text
    for name in ("local", "second"):
        part = overview.split(f'data-host="{name}"', 1)[1].split('class="host-part"', 1)[0]
        assert '<span class="badge s-running">running</span> 1' in part, name  # its own VM, alone
        assert re.search(r"<td>\d+% busy</td>", part), name

    # Its screen, through an SSH channel to the second host's 127.0.0.1 (libvirt hands over no
    # socket on a remote connection). Both hosts share this machine's loopback, so the channel
    # itself is what shows the way it went.
    base = live_server(app)
    ws = open_console(ws_url(base, far, get_ticket(admin, far).json["ticket"]), base)
    try:
        assert Reader(ws).read(12) == BANNER
        tunnel = runtime.get(app).hosts[2].hypervisor.tunnel
        assert tunnel is not None and tunnel._client.get_transport().is_active()
    finally:
        ws.close()
    # Its serial line, through libvirt's stream over the SSH transport.
    serial = open_console(serial_url(base, admin, far), base)
    try:
        assert opened(serial) == OPEN
    finally:
        serial.close()

    second_host.libvirtd("stop")
    wait_until(lambda: "Host second is unreachable" in host_cell(admin, "far"), 30,
               "the far VM's row to say its host is unreachable")
    assert "unreachable" not in host_cell(admin, "near")  # the local host's rows are untouched
    assert 'id="hypervisor-banner"' not in admin.rows()
    assert admin.htmx_post(f"/vms/{uuid_in(host_cell(admin, 'near'))}/force-off").status_code == 202
    admin.wait_state("near", "shutoff", 30)  # the local host keeps working

    refused = admin.create(name="nowhere", host="second")
    assert refused.status_code == 503 and "HOST_UNREACHABLE" in refused.text
    near = uuid_in(host_cell(admin, "near"))
    unmoved = post(admin, f"/vms/{near}/migrate", {"host": "second"})  # nor does a VM move there
    assert unmoved.status_code == 503 and "HOST_UNREACHABLE" in unmoved.text
    assert migrated_op(app, near) is None and '<td class="host">local</td>' in host_cell(admin, "near")
    assert find_row(admin.rows(), "nowhere") is None

    second_host.libvirtd("start")
    wait_until(lambda: "unreachable" not in host_cell(admin, "far"), 30, "the far VM's host to be back")
    assert 'data-state="running"' in host_cell(admin, "far")  # its guest ran on meanwhile

    assert post(admin, "/admin/hosts/2/remove").status_code == 409  # a VM lives there
    assert post(admin, "/admin/hosts/2/disable").status_code == 302
    wait_until(lambda: "Host second is disabled" in host_cell(admin, "far"), 10, "the row to say so")
    page = admin.client.get(f"/vms/{far}")  # its page shows what LIMEN knows, and that its host is disabled
    assert page.status_code == 200 and "Host second is disabled" in page.text
    assert admin.create(name="nowhere", host="second").status_code == 422
    assert post(admin, "/admin/hosts/2/enable").status_code == 302

    wait_until(lambda: admin.htmx_post(f"/vms/{far}/delete").status_code == 202, 30, "the delete to be taken")
    wait_until(lambda: find_row(admin.rows(), "far") is None, 30, "the far VM to be deleted")
    assert running_there(second_host) == set()  # gone from the second host
    assert post(admin, "/admin/hosts/2/remove").status_code == 302
    assert 'data-host="second"' not in admin.client.get("/admin/hosts").text


def running_there(second_host) -> set[str]:
    """The names of the domains the second host has, asked over a connection of the test's own."""
    there = open_libvirt(second_host.test_uri)
    try:
        return {d.name() for d in there.listAllDomains()}
    finally:
        there.close()


def uuid_in(row_html: str) -> str:
    return re.search(r'id="vm-([0-9a-f-]{36})"', row_html).group(1)


def test_a_host_that_shows_another_key_than_the_one_checked_is_refused(qemu_admin, second_host):
    app, admin = qemu_admin()
    second_host.authorize(remote.public_key(app.instance_path))
    other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIErwO63EUNOzKeR5tkPzsp+IHn6vOS5Y/r1XxUBhVPXf"
    refused = post(admin, "/admin/hosts", {"name": "second", "uri": second_host.uri, "host_key": other})
    assert refused.status_code == 502
    assert "HOST_KEY_MISMATCH" in refused.text
    assert 'data-host="second"' not in admin.client.get("/admin/hosts").text


def test_auto_places_a_vm_on_a_host_that_can_take_it_and_one_machine_is_not_added_twice(
        qemu_admin, qemu_host, second_host):
    app, admin = qemu_admin()
    # Added from the command line this time: the key the host showed, confirmed by its operator.
    cli = app.test_cli_runner()
    second_host.authorize(cli.invoke(args=["hosts", "key"]).output)
    added = cli.invoke(args=["hosts", "add", "second", second_host.uri], input="y\n")
    assert added.exit_code == 0, added.output
    assert remote.fingerprint(second_host.host_key) in added.output and "added host second" in added.output
    assert re.search(rf"^second\t{re.escape(second_host.uri)}\treachable\t0\tSSH key SHA256:", cli.invoke(args=["hosts", "list"]).output, re.M)
    # The same machine under another URI (another scheme here) is named, and not added.
    again = post(admin, "/admin/hosts/probe", {"name": "again", "uri": second_host.uri.replace("+libssh:", "+ssh:")})
    assert again.status_code == 422 and "That machine is the host second already" in again.text

    # A libvirt network only the second host has (isolated, with no address: it carries nothing
    # here): "auto" can only put a VM that asks for it there.
    port = second_host.uri.rsplit(":", 1)[1].split("/")[0]  # this run's own names
    name = f"limen-only-{port}"
    there = open_libvirt(second_host.test_uri)
    net = there.networkDefineXML(f"<network><name>{name}</name><bridge name='lmo{port}'/></network>")
    # And a storage pool of LIMEN's name there that cannot be started (its directory is a file).
    broken = there.storagePoolDefineXML(f"<pool type='dir'><name>{app.config['STORAGE_POOL']}</name>"
                                        "<target><path>/etc/hostname</path></target></pool>")
    try:
        net.create()
        refused = admin.create(name="placed", network=f"network:{name}", memory_mib="64")
        assert refused.status_code == 422
        assert re.search(r"No host can take this VM now: local: There is no libvirt network limen-only-\d+;.*"
                         r" second: its storage pool cannot be used", refused.text), refused.text[-3000:]
        # Nor does a VM move there: DEST_POOL_MISSING, and it runs on where it was.
        assert admin.create(name="stuck", host="local").status_code == 201
        admin.wait_state("stuck", "running", 30)
        stuck = uuid_in(host_cell(admin, "stuck"))
        assert post(admin, f"/vms/{stuck}/migrate", {"host": "second"}).status_code == 302
        wait_until(lambda: (op := migrated_op(app, stuck)) is not None and not op.active, 60, "the migration to end")
        assert (migrated_op(app, stuck).state, migrated_op(app, stuck).error_code) == ("failed", "DEST_POOL_MISSING")
        wait_until(lambda: 'data-state="running"' in host_cell(admin, "stuck"), 10, "the row to show it running")
        assert '<td class="host">local</td>' in host_cell(admin, "stuck")
        assert qemu_host.lookupByUUIDString(stuck).isActive()
        assert admin.htmx_post(f"/vms/{stuck}/delete").status_code == 202
        wait_until(lambda: find_row(admin.rows(), "stuck") is None, 30, "the stuck VM to be deleted")
        broken.undefine()  # LIMEN makes its pool there at the next need
        broken = None
        placed = admin.create(name="placed", network=f"network:{name}", memory_mib="64")
        assert placed.status_code == 201, placed.text[-2000:]
        admin.wait_state("placed", "running", 60)
        assert '<td class="host">second</td>' in host_cell(admin, "placed")
        # No host has room for this disk: the pool of the host tried says so, and nothing is made.
        too_big = admin.create(name="huge", disk_gib=str(2**20))
        assert too_big.status_code == 422 and "No host can take this VM now: local: its storage pool has" in too_big.text
        assert find_row(admin.rows(), "huge") is None
        assert admin.htmx_post(f"/vms/{uuid_in(host_cell(admin, 'placed'))}/delete").status_code == 202
        wait_until(lambda: find_row(admin.rows(), "placed") is None, 30, "the placed VM to be deleted")
        assert cli.invoke(args=["hosts", "disable", "second"]).output == "second disabled\n"
        assert cli.invoke(args=["hosts", "remove", "second"]).output == "second removed\n"
        assert "second" not in cli.invoke(args=["hosts", "list"]).output
    finally:
        if broken is not None:
            broken.undefine()
        if net.isActive():
            net.destroy()
        net.undefine()
        there.close()


def migrated_op(app, vm_uuid: str):
    from sqlalchemy import select

    from limen.extensions import db
    from limen.models import Operation

    with app.app_context():
        op = db.session.scalar(select(Operation).where(Operation.vm_uuid == vm_uuid, Operation.kind == "migrate")
                               .order_by(Operation.id.desc()).limit(1))
        db.session.expunge_all()
        return op


def volumes(conn, pool: str) -> set[str]:
    found = conn.storagePoolLookupByName(pool)
    found.refresh(0)
    return set(found.listVolumes())


def test_a_running_vm_migrates_live_to_the_second_host_and_back_and_its_row_follows(
        qemu_admin, qemu_host, second_host, live_server):
    app, admin = qemu_admin()
    add_second(app, admin, second_host)
    assert admin.create(name="mover", host="local").status_code == 201
    admin.wait_state("mover", "running", 30)
    vm = uuid_in(host_cell(admin, "mover"))
    pool = app.config["STORAGE_POOL"]
    assert f"{vm}.qcow2" in volumes(qemu_host, pool)

    page = admin.client.get(f"/vms/{vm}").text
    assert 'id="vm-host">local<' in page and "<option>second</option>" in page
    base = live_server(app)
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    assert Reader(ws).read(12) == BANNER
    assert post(admin, f"/vms/{vm}/migrate", {"host": "second"}).status_code == 302
    wait_until(lambda: (op := migrated_op(app, vm)) is not None and not op.active, 120, "the migration to end")
    op = migrated_op(app, vm)
    assert op.state == "done", (op.error_code, op.error_message)
    assert any(s["step"].startswith("Migrating live to second") for s in op.steps)
    # What libvirt's statistics on the destination tell, once it is over.
    assert any(re.fullmatch(r"Moved in [\d.]+ s \(\d+ MiB sent\); the guest paused \d+ ms at the switch", s["step"])
               for s in op.steps), op.steps
    there = open_libvirt(second_host.test_uri)
    try:  # and LIMEN left them there for an admin's virsh domjobinfo --completed
        assert "downtime" in there.lookupByUUIDString(vm).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    finally:
        there.close()
    wait_until(lambda: '<td class="host">second</td>' in host_cell(admin, "mover"), 10, "the row to follow it")
    assert 'data-state="running"' in host_cell(admin, "mover")
    assert running_there(second_host) == {"mover"}
    assert "mover" not in {d.name() for d in qemu_host.listAllDomains()}  # nothing left here
    assert f"{vm}.qcow2" not in volumes(qemu_host, pool)
    # The console open on it was told where it went, and opens again on the second host.
    assert close_code(ws) == (4409, "VM_MIGRATED")
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    assert Reader(ws).read(12) == BANNER
    ws.close()

    # And back, driven by LIMEN over both connections (the second host holds no key for this one).
    assert post(admin, f"/vms/{vm}/migrate", {"host": "local"}).status_code == 302
    wait_until(lambda: (op := migrated_op(app, vm)) is not None and op.steps[-1:] != [] and not op.active
               and op.params["to"] == 1, 120, "the migration back to end")
    op = migrated_op(app, vm)
    assert op.state == "done", (op.error_code, op.error_message)
    wait_until(lambda: '<td class="host">local</td>' in host_cell(admin, "mover"), 10, "the row to follow it")
    assert qemu_host.lookupByUUIDString(vm).isActive()
    assert running_there(second_host) == set()


def test_a_running_vm_is_not_moved_to_a_host_whose_cpu_cannot_run_it(qemu_admin, qemu_host, second_host):
    """Both test hosts are one machine, so this host is described to the second as another
    machine's would be: a CPU of the other vendor. The second libvirtd's own compareCPU answers."""
    app, admin = qemu_admin()
    add_second(app, admin, second_host)
    source = runtime.get(app).hosts[1].hypervisor.migration
    here = ET.fromstring(source.host_cpu())
    other = "Intel" if here.findtext("vendor") == "AMD" else "AMD"
    foreign = (f"<cpu><arch>x86_64</arch><model>{'EPYC' if other == 'AMD' else 'Skylake-Client'}</model>"
               f"<vendor>{other}</vendor></cpu>")
    source.host_cpu = lambda: foreign
    assert admin.create(name="native", host="local").status_code == 201
    admin.wait_state("native", "running", 30)
    vm = uuid_in(host_cell(admin, "native"))
    refused = post(admin, f"/vms/{vm}/migrate", {"host": "second"})
    assert refused.status_code == 409 and "INCOMPATIBLE_CPU" in refused.text
    assert migrated_op(app, vm) is None  # refused before anything started
    assert 'data-state="running"' in host_cell(admin, "native") and '<td class="host">local</td>' in host_cell(admin, "native")
    assert "native" not in running_there(second_host)
    assert admin.htmx_post(f"/vms/{vm}/delete").status_code == 202
    wait_until(lambda: find_row(admin.rows(), "native") is None, 30, "the VM to be deleted")


def test_a_shut_off_vm_moves_with_its_disk_and_starts_there(qemu_admin, qemu_host, second_host):
    app, admin = qemu_admin()
    add_second(app, admin, second_host)
    vm = stopped_here(app, admin, "still")
    assert post(admin, f"/vms/{vm}/migrate", {"host": "local"}).status_code == 422  # it is there
    assert post(admin, f"/vms/{vm}/migrate", {"host": "mars"}).status_code == 422
    assert migrated_op(app, vm) is None

    assert "Move</button>" in admin.client.get(f"/vms/{vm}").text
    assert post(admin, f"/vms/{vm}/migrate", {"host": "second"}).status_code == 302
    wait_until(lambda: (op := migrated_op(app, vm)) is not None and not op.active, 60, "the move to end")
    op = migrated_op(app, vm)
    assert op.state == "done", (op.error_code, op.error_message)
    assert [s["step"] for s in op.steps] == [
        "Preparing second's storage pool", f"Copying {vm}.qcow2 to second", "Defining it on second",
        "Removing it from local"]
    wait_until(lambda: '<td class="host">second</td>' in host_cell(admin, "still"), 10, "the row to follow it")
    assert 'data-state="shutoff"' in host_cell(admin, "still")
    assert vm not in {d.UUIDString() for d in qemu_host.listAllDomains()}
    assert f"{vm}.qcow2" not in volumes(qemu_host, app.config["STORAGE_POOL"])

    assert admin.htmx_post(f"/vms/{vm}/start").status_code == 202
    admin.wait_state("still", "running", 30)
    assert running_there(second_host) == {"still"}
    assert admin.htmx_post(f"/vms/{vm}/delete").status_code == 202
    wait_until(lambda: find_row(admin.rows(), "still") is None, 30, "the VM to be deleted")
    assert running_there(second_host) == set()


def stopped_here(app, admin, name: str) -> str:
    """A VM made on the local host (with two hosts, "auto" might choose either), run once, then
    forced off; its UUID."""
    assert admin.create(name=name, host="local", memory_mib="128").status_code == 201
    admin.wait_state(name, "running", 60)
    vm = uuid_in(host_cell(admin, name))
    assert admin.htmx_post(f"/vms/{vm}/force-off").status_code == 202
    admin.wait_state(name, "shutoff", 30)
    return vm


def slow_to_move(app, admin, name: str) -> str:
    """A running VM whose disk holds 48 MiB that are not zeros (written with qemu-io while it
    was shut off): at the app's MIGRATION_BANDWIDTH, its migration takes seconds to copy them."""
    import subprocess

    vm = stopped_here(app, admin, name)
    disk = f"{app.config['STORAGE_DIR']}/{vm}.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 48M", disk], check=True, capture_output=True)
    assert admin.htmx_post(f"/vms/{vm}/start").status_code == 202
    admin.wait_state(name, "running", 30)
    return vm


def migrating(app, vm: str) -> bool:
    op = migrated_op(app, vm)
    return op is not None and op.active and "% (" in (op.step or "")


def test_a_migration_cancelled_or_cut_off_leaves_the_vm_running_where_it_was(qemu_admin, qemu_host, second_host):
    app, admin = qemu_admin(MIGRATION_BANDWIDTH=2)
    add_second(app, admin, second_host)
    vm = slow_to_move(app, admin, "stayer")

    assert post(admin, f"/vms/{vm}/migrate", {"host": "second"}).status_code == 302
    wait_until(lambda: migrating(app, vm), 30, "the migration to show its progress")
    assert 'data-state="migrating"' in host_cell(admin, "stayer")
    busy = post(admin, "/admin/hosts/2/disable")  # its connection is in use
    assert busy.status_code == 409 and "HOST_IN_USE" in busy.text
    assert "Cancel the migration" in admin.client.get(f"/vms/{vm}").text
    assert post(admin, f"/vms/{vm}/migrate/cancel").status_code == 302
    wait_until(lambda: not migrated_op(app, vm).active, 60, "the cancelled migration to end")
    op = migrated_op(app, vm)
    assert (op.state, op.error_code) == ("failed", "MIGRATION_CANCELLED")
    wait_until(lambda: 'data-state="running"' in host_cell(admin, "stayer"), 10, "the row to show it running")
    assert '<td class="host">local</td>' in host_cell(admin, "stayer")
    assert qemu_host.lookupByUUIDString(vm).isActive()
    let_go(second_host, "stayer")

    # The destination's libvirtd goes away mid-way: MIGRATION_FAILED, and the VM runs on here.
    assert post(admin, f"/vms/{vm}/migrate", {"host": "second"}).status_code == 302
    wait_until(lambda: migrating(app, vm), 30, "the second migration to show its progress")
    second_host.libvirtd("stop")
    try:
        failed_here(app, admin, qemu_host, vm, "stayer")
    finally:
        second_host.libvirtd("start")
    let_go(second_host, "stayer")

    # The destination's QEMU is killed mid-way: MIGRATION_FAILED again, and the VM runs on here.
    wait_until(lambda: runtime.get(app).hosts[2].sync.problem is None, 30, "LIMEN to reach the second host again")
    assert post(admin, f"/vms/{vm}/migrate", {"host": "second"}).status_code == 302
    wait_until(lambda: migrating(app, vm), 30, "the third migration to show its progress")
    incoming = int((second_host.home / "run" / "qemu" / "stayer.pid").read_text())
    os.kill(incoming, signal.SIGKILL)
    failed_here(app, admin, qemu_host, vm, "stayer")
    let_go(second_host, "stayer")


def let_go(second_host, name: str) -> None:
    """The second host has no domain ``name``: the one it half received is gone. libvirtd removes
    it as it learns the migration failed (its QEMU ended, or when it starts again), which may
    be after the source gave up."""
    wait_until(lambda: name not in running_there(second_host), 30, f"the second host to let go of {name}", every=0.5)


def failed_here(app, admin, qemu_host, vm: str, name: str) -> None:
    """The VM's migration ended with MIGRATION_FAILED, and it runs on, here, as its row says."""
    wait_until(lambda: not migrated_op(app, vm).active, 90, "the failed migration to end")
    op = migrated_op(app, vm)
    assert (op.state, op.error_code) == ("failed", "MIGRATION_FAILED"), op.error_message
    wait_until(lambda: 'data-state="running"' in host_cell(admin, name), 10, "the row to show it running")
    assert '<td class="host">local</td>' in host_cell(admin, name)
    assert qemu_host.lookupByUUIDString(vm).isActive()
