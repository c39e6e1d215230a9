"""A VM's disks after it is made: each listed with its size, what it really takes, its bus and
its backing image; a data disk added (a new qcow2 volume in the VM pool, on the profile's
bus, plugged in at once while the VM runs); any disk grown (never shrunk); a data disk taken
away with its volume. Each is one short call under the VM's lock, claims the owner's disk quota
for what it adds, and is audited."""

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

from .. import audit, runtime
from ..accounts import quotas
from ..errors import DiskNotFound, InvalidState, ValidationFailed
from ..extensions import db
from ..forms import whole_number
from ..hypervisor import Disk
from ..models import VM, User
from .lifecycle import data_volume_prefix, idle, not_owned, volume_name
from .queries import get_vm

GIB = 1024**3


def of(user: User, vm_uuid: str) -> list[Disk]:
    """The VM's disks, as it runs (or starts)."""
    vm = get_vm(user, vm_uuid)
    return runtime.on(vm.uuid).hypervisor.vm_disks.of(vm.uuid)


def boot(user: User, vm_uuid: str) -> tuple[dict[str, str], list[str]]:
    """The drives the VM can boot from (dev -> "disk" or "cdrom"), and those it boots from, in
    order, from its next start."""
    vm = get_vm(user, vm_uuid)
    return runtime.on(vm.uuid).hypervisor.vm_disks.boot(vm.uuid)


def is_boot(vm: VM, disk: Disk) -> bool:
    return disk.volume == volume_name(vm.uuid)


def _ours(user: User, vm_uuid: str) -> VM:
    vm = get_vm(user, vm_uuid, "vm.edit")
    not_owned(vm)
    if vm.adopted:
        raise InvalidState("LIMEN changes the disks of the VMs it made; an adopted VM's disks are not LIMEN's.")
    return vm


def _size(vm: VM, form: Mapping[str, Any], dev: str | None = None, has: int = 0) -> int:
    """The size asked for, in GiB: a whole number, more than the disk ``dev`` has (a new disk:
    at least 1), and what it adds must fit in the pool of the VM's host."""
    hv = runtime.on(vm.uuid).hypervisor
    gib = whole_number(form.get("gib", ""))
    if gib is None:
        raise ValidationFailed({"gib": "Enter a whole number of GiB."})
    if dev is None and gib < 1:
        raise ValidationFailed({"gib": "A disk needs at least 1 GiB."})
    if dev is not None and gib <= has:
        raise ValidationFailed(
            {
                "gib": f"{dev} has {has} GiB; give a larger size. LIMEN grows disks only: shrinking one would cut "
                "off the end of what the guest keeps on it."
            }
        )
    free = hv.disks.free_bytes() // GIB
    if gib - has > free:
        raise ValidationFailed(
            {"gib": f"The storage pool {hv.disks.name} has {free} GiB free; {gib - has} GiB more do not fit."}
        )
    return gib


def _claimed(vm: VM, gib: int, what: str, change: Callable[[], object]) -> VM:
    """Claim ``gib`` more of the owner's disk quota, make the change and count it on the VM's
    row; a change that fails claims nothing. Returns the row; the caller audits and commits."""
    vm_id, owner_id = vm.id, vm.owner_id
    db.session.commit()  # the claim's write comes first
    quotas.claim_disk(owner_id, gib * 1024, what)
    row = db.session.get(VM, vm_id)
    assert row is not None, "the VM's lock keeps its row"
    try:
        change()
    except Exception:
        db.session.rollback()
        raise
    row.disk_gib += gib
    return row


@audit.refusals("vm.disk-add", subject="vm_uuid")
def add(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Disk:
    """A new, empty data disk of ``form["gib"]`` GiB."""
    vm = _ours(user, vm_uuid)
    gib = _size(vm, form)
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid, wait=False):
        _no_snapshots(vm, "add a disk")
        prefix, uuid, bus = data_volume_prefix(vm.uuid), vm.uuid, vm.disk_bus
        taken = set(hv.disks.names(prefix))
        volume = next(f"{prefix}{n}.qcow2" for n in itertools.count(1) if f"{prefix}{n}.qcow2" not in taken)
        added: list[str] = []
        row = _claimed(vm, gib, "a new disk", lambda: added.append(hv.vm_disks.add(uuid, volume, gib, bus)))
        audit.record("vm.disk-add", actor=user, vm=row, detail=f"{added[0]}: {gib} GiB on {bus}")
        db.session.commit()
    return _find(row, added[0])


@audit.refusals("vm.disk-grow", subject="vm_uuid")
def grow(user: User, vm_uuid: str, dev: str, form: Mapping[str, Any]) -> Disk:
    """Grow a disk to ``form["gib"]`` GiB, at once while the VM runs (the guest then grows its
    partition and file system, as cloud-init does at boot)."""
    vm = _ours(user, vm_uuid)
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid, wait=False):  # the size it has, read under the lock: no other grow slips in
        has = math.ceil((_find(vm, dev).capacity or 0) / GIB)
        gib = _size(vm, form, dev, has)
        uuid = vm.uuid
        row = _claimed(vm, gib - has, f"{dev} grown", lambda: hv.vm_disks.grow(uuid, dev, gib))
        audit.record("vm.disk-grow", actor=user, vm=row, detail=f"{dev}: {has} GiB → {gib} GiB")
        db.session.commit()
    return _find(row, dev)


@audit.refusals("vm.disk-remove", subject="vm_uuid")
def remove(user: User, vm_uuid: str, dev: str) -> None:
    """Take a shut-off VM's data disk away, and delete its volume."""
    vm = _ours(user, vm_uuid)
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid, wait=False):
        disk = _find(vm, dev)
        if is_boot(vm, disk):
            raise InvalidState("The boot disk cannot be taken away; delete the VM to remove it.")
        _no_snapshots(vm, "take a disk away")
        hv.vm_disks.remove(vm.uuid, dev)
        vm.disk_gib = max(0, vm.disk_gib - math.ceil((disk.capacity or 0) / GIB))
        audit.record("vm.disk-remove", actor=user, vm=vm, detail=f"{dev}: {disk.volume} deleted")
        db.session.commit()


def _no_snapshots(vm: VM, what: str) -> None:
    """A snapshot holds the VM's definition: reverting to one made before a disk came would drop
    the disk from it (its volume left behind), one made before a disk went would name a volume
    that is gone."""
    if runtime.on(vm.uuid).hypervisor.snapshots.list(vm.uuid):
        raise InvalidState(f"The VM has snapshots, which hold its disks as they are: delete them first, then {what}.")


def _find(vm: VM, dev: str) -> Disk:
    for disk in runtime.on(vm.uuid).hypervisor.vm_disks.of(vm.uuid):
        if disk.dev == dev:
            return disk
    raise DiskNotFound(f"The VM has no disk {dev}.")
