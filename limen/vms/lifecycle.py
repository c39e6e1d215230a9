"""What a VM may do in which state, and the one way an action on it is queued: under the VM's
own lock, only while no other Operation is under way on it (VM_BUSY otherwise)."""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import and_, or_, select

from .. import audit, runtime
from ..errors import LimenError, VMBusy, VMIsBase
from ..extensions import db
from ..hypervisor import ACTIVE_STATES
from ..models import CREATING, DELETING, VM, Operation, User

# Which libvirt states allow which action (delete is allowed in any state no Operation owns).
ACTIONS: dict[str, frozenset[str]] = {
    "start": frozenset({"shutoff", "crashed", "nostate"}),
    "shutdown": frozenset({"running"}),
    "force-off": ACTIVE_STATES,  # not "crashed": its QEMU is gone already
    "reboot": frozenset({"running"}),
    "pause": frozenset({"running"}),
    "resume": frozenset({"paused"}),
}
# The shutdown's step while it waits for the guest (the table counts down to its deadline).
WAITING_FOR_POWER_OFF = "Waiting for the guest to power off"
# An action that may be requested while an Operation of the given kind is still active.
MAY_OVERTAKE = {("force-off", "shutdown"), ("force-off", "reboot")}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def volume_name(vm_uuid: str) -> str:
    """A VM's disk is named by its UUID, never by its name."""
    return f"{vm_uuid}.qcow2"


def data_volume_prefix(vm_uuid: str) -> str:
    """What a VM's data disks' volumes are named by: ``<uuid>-data-<n>.qcow2``."""
    return f"{vm_uuid}-data-"


def seed_name(vm_uuid: str) -> str:
    """The cloud-init seed ISO of a VM made from a cloud image."""
    return f"{vm_uuid}-seed.iso"


def _vm_lock(vm_uuid: str) -> threading.Lock:
    """The VM's own lock: "is an Operation under way?", "does its live state allow this?" and
    "queue it" are one step, so a double-clicked start starts once. The live state is read
    through the hypervisor under it (and under the sync's state lock, which every VM shares).
    (One process serves a database.)"""
    with _locks_guard:
        return _locks.setdefault(vm_uuid, threading.Lock())


def active_operation(vm_uuid: str) -> Operation | None:
    """The Operation under way on the VM, or on a clone being made from its disk."""
    cloned = and_(Operation.kind == "clone", Operation.params["source"].as_string() == vm_uuid)
    return db.session.scalar(
        select(Operation)
        .where(or_(Operation.vm_uuid == vm_uuid, cloned), Operation.state.in_(Operation.ACTIVE))
        .limit(1)
    )


def not_a_base(vm: VM) -> None:
    """VM_HAS_LINKED_CLONES while linked clones read the VM's disk: writing it would change
    what they hold. (libvirt unreachable: the action that follows says so.)"""
    hv = runtime.on(vm.uuid).hypervisor
    try:
        clones = hv.disks.backed_by(hv.disks.path(volume_name(vm.uuid)))
    except LimenError:
        return
    if clones:
        names = db.session.scalars(select(VM.name).where(VM.uuid.in_([c.removesuffix(".qcow2") for c in clones])))
        raise VMIsBase(f"{VMIsBase.sentence} Linked clones: {', '.join(sorted(names)) or ', '.join(clones)}.")


def not_owned(vm: VM) -> None:
    """VM_BUSY while a create or a delete owns the VM's row."""
    if vm.state in (CREATING, DELETING):
        raise VMBusy(f"The VM is {vm.state}.")


@contextmanager
def idle(
    vm_uuid: str, action: str | None = None, join: tuple[str, ...] = (), wait: bool = True
) -> Iterator[Operation | None]:
    """Hold the VM's lock, and refuse (VM_BUSY) while an Operation is under way on it, unless
    ``action`` may overtake it (force-off overtakes a shutdown). An active Operation whose kind
    is in ``join`` is yielded instead, for the caller to wait on; else None. Without ``wait``,
    a lock another request holds is VM_BUSY too (two edits at once: the first wins)."""
    lock = _vm_lock(vm_uuid)
    if not lock.acquire(blocking=wait):
        raise VMBusy("Another change to this VM is being made.")
    try:
        active = active_operation(vm_uuid)
        if active is not None and active.kind in join:
            yield active
            return
        if active is not None and (action, active.kind) not in MAY_OVERTAKE:
            what = "a clone of it" if active.vm_uuid != vm_uuid else active.kind
            raise VMBusy(f"{what} is still in progress ({active.step or 'queued'}).")
        yield None
    finally:
        lock.release()


def submit(user: User, vm: VM, kind: str, params: dict | None = None, detail: str | None = None) -> Operation:
    """Write the Operation (with what it was asked: ``params``), audit the request, and hand
    it to the runner; the caller holds ``idle(vm)`` (or, for a create, the VM is new)."""
    op = Operation(
        kind=kind,
        vm_uuid=vm.uuid,
        user_id=user.id,
        params=params,
        step="Queued",
        steps=[],
        source_ip=audit.source_ip(),
    )
    db.session.add(op)
    db.session.flush()
    if kind == "create":
        detail = f"{vm.vcpus} vCPUs, {vm.memory_mib} MiB, {vm.disk_gib} GiB"
    audit.record(f"vm.{kind}", "accepted", actor=user, vm=vm, operation_id=op.id, detail=detail)
    db.session.commit()
    runtime.get().runner.submit(op.id)
    return op
