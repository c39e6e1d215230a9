"""A VM's snapshots: list them (libvirt's record, with the tree), and take, revert to or delete
one, each as an Operation under the VM's lock. A running VM's snapshot holds its memory; a
shut-off VM's, its disks. What a snapshot adds to the VM's disk file counts against its owner's
disk quota: its memory is claimed before it is taken, then the growth libvirt measured is kept."""

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from .. import audit, runtime
from ..accounts import quotas
from ..errors import InvalidState, LimenError, SnapshotNotFound, ValidationFailed
from ..extensions import db
from ..hypervisor import ACTIVE_STATES, SnapshotInfo
from ..models import VM, Operation, User
from ..operations import OpContext, handler
from .lifecycle import idle, not_a_base, not_owned, submit, volume_name
from .queries import get_vm

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
MAX_DESCRIPTION = 1000
MIB = 1024 * 1024


def list_snapshots(user: User, vm_uuid: str) -> list[SnapshotInfo]:
    """The VM's snapshots, oldest first (an adopted VM's too: shown, and left alone)."""
    vm = get_vm(user, vm_uuid)
    return runtime.on(vm.uuid).hypervisor.snapshots.list(vm.uuid)


KINDS = ("snapshot", "revert", "snapshot-delete")


def card(user: User, vm_uuid: str) -> dict[str, object]:
    """What the Details page's Snapshots card shows: the tree, the latest snapshot Operation
    (its steps while under way, its error when it failed), and whether LIMEN may change them."""
    vm = get_vm(user, vm_uuid)
    latest = db.session.scalar(
        select(Operation)
        .where(Operation.vm_uuid == vm.uuid, Operation.kind.in_(KINDS))
        .order_by(Operation.id.desc())
        .limit(1)
    )
    try:
        found = runtime.on(vm.uuid).hypervisor.snapshots.list(vm.uuid)
        snapshots, unlisted = tree(found), None
        if vm.snapshots != len(found) and not (latest and latest.active):  # made with another tool
            vm.snapshots = len(found)
            db.session.commit()
    except LimenError as e:
        snapshots, unlisted = [], e
    return dict(vm=vm, snapshots=snapshots, latest=latest, unlisted=unlisted)


def tree(snapshots: list[SnapshotInfo]) -> list[tuple[int, SnapshotInfo]]:
    """(depth, snapshot) in the order a tree is drawn: each under its parent, oldest first."""
    children: dict[str | None, list[SnapshotInfo]] = {}
    names = {s.name for s in snapshots}
    for s in snapshots:
        children.setdefault(s.parent if s.parent in names else None, []).append(s)
    drawn: list[tuple[int, SnapshotInfo]] = []

    def walk(parent: str | None, depth: int) -> None:
        for s in children.get(parent, []):
            drawn.append((depth, s))
            walk(s.name, depth + 1)

    walk(None, 0)
    return drawn


def _validate(form: Mapping[str, Any]) -> tuple[str, str]:
    name = str(form.get("name", "") or "").strip()
    description = str(form.get("description", "") or "").strip()
    errors = {}
    if not NAME_RE.fullmatch(name):
        errors["name"] = "1 to 63 letters, digits, dots, hyphens and underscores, starting with a letter or digit."
    if len(description) > MAX_DESCRIPTION or any(ord(c) < 32 and c not in "\n\t" for c in description):
        errors["description"] = f"At most {MAX_DESCRIPTION} characters, and no control characters but newlines."
    if errors:
        raise ValidationFailed(errors)
    return name, description


def _owned(user: User, vm_uuid: str) -> VM:
    vm = get_vm(user, vm_uuid, "vm.snapshots")
    not_owned(vm)
    if vm.adopted:
        raise InvalidState("LIMEN leaves an adopted VM's snapshots alone: manage them with the tool that made it.")
    return vm


@audit.refusals("vm.snapshot", subject="vm_uuid")
def request_snapshot(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Operation:
    """Take a snapshot: with memory while the VM runs, of its disks while it is shut off."""
    vm = _owned(user, vm_uuid)
    name, description = _validate(form)
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid):
        not_a_base(vm)
        current = runtime.on(vm.uuid).sync.refresh(vm.uuid)
        if current is None:
            raise InvalidState("libvirt has no domain for this VM any more.")
        if current.state not in ("running", "shutoff"):
            raise InvalidState(f"A snapshot is taken of a running or shut-off VM, not of a {current.state} one.")
        hv.snapshots.check_supported(vm.uuid)
        if hv.snapshots.exists(vm.uuid, name):
            raise ValidationFailed({"name": f"The VM has a snapshot named {name} already."})
        memory = current.state == "running"
        expected = vm.memory_mib if memory else 0
        quotas.claim_disk(vm.owner_id, expected, "the snapshot's memory" if memory else "a snapshot")
        vm.snapshot_mib += expected  # the claim, until the snapshot's real growth is known
        kind = "with memory" if memory else "disks only"
        return submit(
            user,
            vm,
            "snapshot",
            {"name": name, "description": description, "claimed_mib": expected},
            f"{name} ({kind})",
        )


@audit.refusals("vm.revert", subject="vm_uuid")
def request_revert(user: User, vm_uuid: str, name: str) -> Operation:
    return _on_snapshot(user, vm_uuid, name, "revert")


@audit.refusals("vm.snapshot-delete", subject="vm_uuid")
def request_snapshot_delete(user: User, vm_uuid: str, name: str) -> Operation:
    return _on_snapshot(user, vm_uuid, name, "snapshot-delete")


def _on_snapshot(user: User, vm_uuid: str, name: str, kind: str) -> Operation:
    """Queue ``kind`` on one of the VM's snapshots, under its lock."""
    vm = _owned(user, vm_uuid)
    with idle(vm.uuid):
        not_a_base(vm)
        if not runtime.on(vm.uuid).hypervisor.snapshots.exists(vm.uuid, name):
            raise SnapshotNotFound(f"The VM has no snapshot named {name}.")
        return submit(user, vm, kind, {"name": name}, name)


# -- the Operations ---------------------------------------------------------------------------
def _vm(uuid: str) -> VM:
    vm = db.session.scalar(select(VM).where(VM.uuid == uuid))
    assert vm is not None, "a VM's row outlives its Operations (a delete waits for them)"
    return vm


def _count(uuid: str, added_mib: int) -> None:
    """The VM's snapshot count from libvirt, and ``added_mib`` more (or less) on its quota."""
    count = len(runtime.on(uuid).hypervisor.snapshots.list(uuid))
    vm = _vm(uuid)
    vm.snapshots = count
    vm.snapshot_mib = 0 if count == 0 else max(0, vm.snapshot_mib + added_mib)
    db.session.commit()


def _allocation_mib(uuid: str) -> int:
    return runtime.on(uuid).hypervisor.disks.allocation(volume_name(uuid)) // MIB


def _snapshot_failed(ctx: OpContext, err: LimenError) -> None:
    """A snapshot libvirt did not make gives its claim back; one it made keeps it."""
    params = ctx.op.params or {}
    try:
        taken = runtime.on(ctx.vm_uuid).hypervisor.snapshots.exists(ctx.vm_uuid, params["name"])
        _count(ctx.vm_uuid, 0 if taken else -int(params.get("claimed_mib", 0)))
        runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)
    except LimenError:
        pass  # libvirt unreachable: counted when the VM's snapshots are next changed


def _snapshot_interrupted(op: Operation, err: LimenError) -> bool:
    """After a restart: the snapshot libvirt finished is done (its claim stays, as nobody
    measured it), one it did not is not (its claim is given back)."""
    params = op.params or {}
    taken = runtime.on(op.vm_uuid).hypervisor.snapshots.exists(op.vm_uuid, params.get("name", ""))
    _count(op.vm_uuid, 0 if taken else -int(params.get("claimed_mib", 0)))
    runtime.on(op.vm_uuid).sync.refresh(op.vm_uuid)
    return taken


@handler("snapshot", on_failure=_snapshot_failed, on_interrupted=_snapshot_interrupted)
def run_snapshot(ctx: OpContext) -> None:
    params = ctx.op.params or {}
    hv = runtime.on(ctx.vm_uuid).hypervisor
    before = _allocation_mib(ctx.vm_uuid)
    ctx.step(f"Taking snapshot {params['name']}")
    hv.snapshots.create(ctx.vm_uuid, params["name"], params.get("description", ""))
    ctx.step("Measuring what it takes")
    claimed = int(params.get("claimed_mib", 0))
    try:
        grown = max(0, _allocation_mib(ctx.vm_uuid) - before)
    except LimenError:
        grown = claimed  # not measured: the claim stands for it
    _count(ctx.vm_uuid, grown - claimed)
    try:
        runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)
    except LimenError:
        pass  # the snapshot is made and counted; the sync catches up with the state


def _settle(op: Operation, err: LimenError) -> bool:
    """After a restart: libvirt finished or undid the call on its own; the row is made to match it."""
    _count(op.vm_uuid, 0)
    runtime.on(op.vm_uuid).sync.refresh(op.vm_uuid)
    return False


@handler("revert", on_interrupted=_settle)
def run_revert(ctx: OpContext) -> None:
    name = (ctx.op.params or {})["name"]
    rt = runtime.on(ctx.vm_uuid)
    ctx.step(f"Reverting to snapshot {name}")
    try:
        rt.hypervisor.snapshots.revert(ctx.vm_uuid, name)
    finally:
        state = rt.sync.refresh(ctx.vm_uuid)
    if state is not None and state.state in ACTIVE_STATES:
        ctx.step("Forwarding host ports to the guest")
        rt.sync.apply_forwards(ctx.vm_uuid)  # a revert that started QEMU anew needs them again
    _count(ctx.vm_uuid, 0)


@handler("snapshot-delete", on_interrupted=_settle)
def run_snapshot_delete(ctx: OpContext) -> None:
    name = (ctx.op.params or {})["name"]
    before = _allocation_mib(ctx.vm_uuid)
    ctx.step(f"Deleting snapshot {name}")
    runtime.on(ctx.vm_uuid).hypervisor.snapshots.delete(ctx.vm_uuid, name)
    _count(ctx.vm_uuid, min(0, _allocation_mib(ctx.vm_uuid) - before))
