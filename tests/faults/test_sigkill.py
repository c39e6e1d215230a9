"""LIMEN killed (SIGKILL, the whole service) right after each step of create-and-start, of
delete and of a snapshot and its revert, and in the middle of a snapshot, then started again:
every unfinished Operation is carried on, rolled back or settled, with no orphan domain, no
orphan volume, and no row claiming what libvirt does not have (qemu tier)."""
import os
import signal

import pytest

from helpers import open_libvirt, unique_name, wait_until

pytestmark = pytest.mark.qemu

CREATE_STEPS = ["Queued", "Creating the disk", "Defining the VM", "Starting the VM",
                "Waiting for it to run"]
DELETE_STEPS = ["Queued", "Powering off", "Removing the VM definition", "Deleting the disks"]
LIBVIRT_STATES = {"running", "paused", "shutting-down", "shutoff", "crashed", "suspended", "nostate"}


def answer_or_killed(request) -> None:
    """The request is recorded before its work starts; the kill may come before the answer."""
    try:
        assert request() == 302
    except OSError:  # the connection died with LIMEN
        pass


def assert_consistent(limen, qemu_host) -> dict[str, str]:
    """Rows and libvirt agree; returns {name: state} of the rows."""
    import libvirt

    rows = {uuid: (name, state) for uuid, name, state in limen.db("SELECT uuid, name, state FROM vm")}
    pool = qemu_host.storagePoolLookupByName(limen.pool)
    pool.refresh(0)
    volumes = set(pool.listVolumes())
    mine = {d.UUIDString(): d for d in qemu_host.listAllDomains() if d.name().startswith("f-")}
    for uuid in mine:
        assert uuid in rows, f"orphan domain {mine[uuid].name()}"
    for volume in volumes:
        uuid = volume.removesuffix(".qcow2")
        assert uuid in rows and rows[uuid][1] != "error", f"orphan volume {volume}"
    for uuid, (name, state) in rows.items():
        assert state not in ("creating", "deleting"), f"{name} is still {state}"
        if state == "error":
            assert uuid not in mine and f"{uuid}.qcow2" not in volumes, f"{name}: error row, but libvirt has it"
        else:
            assert state in LIBVIRT_STATES, f"{name}: {state}"
            try:
                dom = qemu_host.lookupByUUIDString(uuid)
            except libvirt.libvirtError:
                raise AssertionError(f"{name} shows {state}, but libvirt has no such domain") from None
            assert dom.isActive() == (state == "running"), f"{name}: row {state}, libvirt {dom.state()}"
    return {name: state for name, state in rows.values()}


@pytest.mark.parametrize("step", CREATE_STEPS)
def test_killed_during_create_and_started_again(limen, qemu_host, step):
    limen.start(KILL_AFTER_STEP=f"create/{step}")
    limen.sign_in()
    name = unique_name("f")
    answer_or_killed(lambda: limen.create(name))
    limen.wait_killed()

    limen.start()
    wait_until(lambda: limen.settled(), 60, "the interrupted create to be settled")
    limen.sign_in()
    states = assert_consistent(limen, qemu_host)
    # Done when it had finished its work (after the last step), else rolled back.
    assert states[name] == ("running" if step == CREATE_STEPS[-1] else "error")
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'create'")[0]
    assert op_state == ("done" if step == CREATE_STEPS[-1] else "failed")
    wait_until(lambda: limen.row_state(name) == states[name], 10, f"the table to show {name} {states[name]}")


@pytest.mark.parametrize("step", DELETE_STEPS)
def test_killed_during_delete_and_started_again(limen, qemu_host, step):
    limen.start(KILL_AFTER_STEP=f"delete/{step}")
    limen.sign_in()
    name = unique_name("f")
    assert limen.create(name) == 302
    wait_until(lambda: limen.row_state(name) == "running" and limen.settled(), 60, f"{name} to run, created")
    uuid, = limen.db("SELECT uuid FROM vm WHERE name = ?", name)[0]
    answer_or_killed(lambda: limen.post(f"/vms/{uuid}/delete"))
    limen.wait_killed()

    limen.start()
    wait_until(lambda: limen.settled(), 60, "the interrupted delete to be carried on")
    assert assert_consistent(limen, qemu_host) == {}  # carried on to the end: nothing is left
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'delete'")[0]
    assert op_state == "done"


SNAPSHOT_STEPS = ["Queued", "Taking snapshot live", "Measuring what it takes"]


def running_vm(limen) -> str:
    name = unique_name("f")
    assert limen.create(name) == 302
    wait_until(lambda: limen.row_state(name) == "running" and limen.settled(), 60, f"{name} to run, created")
    uuid, = limen.db("SELECT uuid FROM vm WHERE name = ?", name)[0]
    return uuid


def assert_snapshots_settled(limen, qemu_host, uuid: str, kind: str) -> list[str]:
    """The interrupted Operation ended, the row agrees with libvirt; the snapshots libvirt has."""
    limen.start()
    wait_until(lambda: limen.settled(), 60, f"the interrupted {kind} to be settled")
    limen.sign_in()
    assert_consistent(limen, qemu_host)
    taken = [s.getName() for s in qemu_host.lookupByUUIDString(uuid).listAllSnapshots()]
    count, claimed = limen.db("SELECT snapshots, snapshot_mib FROM vm WHERE uuid = ?", uuid)[0]
    assert count == len(taken)
    assert (claimed > 0) == bool(taken)  # a memory snapshot's claim stays; one never taken is given back
    return taken


@pytest.mark.parametrize("step", SNAPSHOT_STEPS)
def test_killed_after_a_snapshot_step_and_started_again(limen, qemu_host, step):
    limen.start(KILL_AFTER_STEP=f"snapshot/{step}")
    limen.sign_in()
    uuid = running_vm(limen)
    answer_or_killed(lambda: limen.post(f"/vms/{uuid}/snapshots", {"name": "live"}))
    limen.wait_killed()
    taken = assert_snapshots_settled(limen, qemu_host, uuid, "snapshot")
    assert taken == ([] if step == "Queued" else ["live"])
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'snapshot'")[0]
    assert op_state == ("done" if taken else "failed")


def test_killed_in_the_middle_of_a_snapshot_and_started_again(limen, qemu_host):
    """SIGKILL while libvirt writes the snapshot: libvirtd finishes it or not on its own."""
    limen.start()
    limen.sign_in()
    uuid = running_vm(limen)
    assert limen.post(f"/vms/{uuid}/snapshots", {"name": "live"}) == 302
    wait_until(lambda: limen.db("SELECT step FROM operation WHERE kind = 'snapshot'")[0][0]
               in ("Taking snapshot live", "Measuring what it takes"), 30, "the snapshot to be under way")
    os.killpg(limen.proc.pid, signal.SIGKILL)
    limen.wait_killed()
    taken = assert_snapshots_settled(limen, qemu_host, uuid, "snapshot")
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'snapshot'")[0]
    assert op_state == ("done" if taken == ["live"] else "failed")
    assert qemu_host.lookupByUUIDString(uuid).isActive()  # the guest runs on, whichever it was


@pytest.mark.parametrize("step", ["Queued", "Reverting to snapshot live"])
def test_killed_during_a_revert_and_started_again(limen, qemu_host, step):
    limen.start(KILL_AFTER_STEP=f"revert/{step}")
    limen.sign_in()
    uuid = running_vm(limen)
    assert limen.post(f"/vms/{uuid}/snapshots", {"name": "live"}) == 302
    wait_until(lambda: limen.settled(), 60, "the snapshot to be taken")
    assert limen.post(f"/vms/{uuid}/force-off") == 302
    wait_until(lambda: limen.settled(), 60, "the VM to be off")
    answer_or_killed(lambda: limen.post(f"/vms/{uuid}/snapshots/live/revert"))
    limen.wait_killed()
    assert assert_snapshots_settled(limen, qemu_host, uuid, "revert") == ["live"]
    reverted = qemu_host.lookupByUUIDString(uuid).isActive()  # the memory snapshot runs again
    assert reverted == (step != "Queued")
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'revert'")[0]
    assert op_state == "failed"  # interrupted; the row shows the VM as libvirt has it


def test_killed_in_the_middle_of_a_migration_and_started_again(limen, qemu_host, second_host):
    """SIGKILL while the local libvirtd migrates a VM to the second host (peer to peer: it carries
    on without LIMEN). At the next start LIMEN stops the migration if it still runs, and the row
    names the one host the VM runs on."""
    import subprocess

    import libvirt

    from limen import remote

    limen.start(MIGRATION_BANDWIDTH=2)  # 48 MiB of disk to copy: some 24 s
    limen.sign_in()
    uuid = running_vm(limen)  # made before there is a second host: it is the local host's
    second_host.authorize(remote.public_key(str(limen.instance)))
    assert limen.post("/admin/hosts", {"name": "second", "uri": second_host.uri, "host_key": second_host.host_key}) == 302
    assert limen.post(f"/vms/{uuid}/force-off") == 302
    wait_until(lambda: limen.db("SELECT state FROM vm WHERE uuid = ?", uuid)[0][0] == "shutoff" and limen.settled(),
               30, "the VM to be shut off")
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 48M", f"{limen.pool_dir}/{uuid}.qcow2"],
                   check=True, capture_output=True)
    assert limen.post(f"/vms/{uuid}/start") == 302
    wait_until(lambda: limen.db("SELECT state FROM vm WHERE uuid = ?", uuid)[0][0] == "running" and limen.settled(),
               30, "the VM to run again")
    assert limen.post(f"/vms/{uuid}/migrate", {"host": "second"}) == 302
    wait_until(lambda: "%" in (limen.db("SELECT step FROM operation WHERE kind = 'migrate'")[0][0] or ""), 30,
               "the migration to be under way")
    os.killpg(limen.proc.pid, signal.SIGKILL)
    limen.wait_killed()

    limen.start(MIGRATION_BANDWIDTH=2)
    wait_until(lambda: limen.settled(), 90, "the interrupted migration to be settled")
    (host_id, state), = limen.db("SELECT host_id, state FROM vm WHERE uuid = ?", uuid)
    op_state, = limen.db("SELECT state FROM operation WHERE kind = 'migrate'")[0]
    there = open_libvirt(second_host.test_uri)
    try:
        on = {1: qemu_host, 2: there}
        running = [h for h, conn in on.items() if uuid in {d.UUIDString() for d in conn.listAllDomains(
            libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}]
        assert running == [host_id], f"runs on {running}, its row says host {host_id}"  # never on two
        assert state == "running"
        assert op_state == ("done" if host_id == 2 else "failed")
        if host_id == 2:  # moved after all: its domain and disk here are gone, and the VM goes
            there.lookupByUUIDString(uuid).destroy()
    finally:
        there.close()
