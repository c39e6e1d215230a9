"""Moving a VM to another host (admins): a running one live, with its disks copied, as an
Operation with its progress, that can be cancelled, and that leaves the VM running where it was
when it fails, with a code that says why; a shut-off one by copying its volumes through the two
hosts' pools and defining it there.

Before it starts, what can be known is checked: the destination is enabled and answers, its
CPU can run the VM's, and the VM has no snapshot (libvirt moves none) and no ISO from the
library (it lives on the local host). Its first step prepares the destination: LIMEN's storage
pool there, and a copy of what the VM reads and libvirt does not copy (its cloud-init seed).

While it runs, the VM's row is ``migrating``: neither host's sync writes it (the source's sees
the domain leave, the destination's sees it come). At its end the row names the host the VM
runs on, and shows what that host's libvirt reports. The quota is unchanged: the VM is the
same VM. What a migration leaves on the source (its disk files) is removed once it runs on the
destination.
"""

import functools
import threading
from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import select, update

from .. import audit, remote, runtime
from ..errors import (
    DestPoolMissing,
    IncompatibleCPU,
    InvalidState,
    LimenError,
    MigrationCancelled,
    MigrationFailed,
    ValidationFailed,
)
from ..extensions import db
from ..hypervisor import ACTIVE_STATES
from ..models import ERROR, MIGRATING, VM, Host, Operation, User
from ..operations import OpContext, handler
from .lifecycle import data_volume_prefix, idle, not_owned, seed_name, submit, volume_name
from .queries import get_vm

POLL = 0.5  # seconds between two looks at the migration's progress


def destinations(user: User, vm: VM) -> list[str]:
    """The hosts the VM may move to: the enabled ones it is not on."""
    if not user.is_admin:
        return []
    return list(db.session.scalars(select(Host.name).where(Host.enabled, Host.id != vm.host_id).order_by(Host.id)))


def card(user: User, vm_uuid: str) -> dict[str, object]:
    """What the VM page's Host card shows: where it runs, where an admin may move it, and its
    latest migration (its progress while under way, its error when it failed)."""
    vm = get_vm(user, vm_uuid)
    latest = db.session.scalar(
        select(Operation)
        .where(Operation.vm_uuid == vm.uuid, Operation.kind == "migrate")
        .order_by(Operation.id.desc())
        .limit(1)
    )
    return dict(destinations=destinations(user, vm), migration=latest)


@audit.refusals("vm.migrate", subject="vm_uuid")
def request_migrate(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Operation:
    vm = get_vm(user, vm_uuid, "vm.migrate")
    not_owned(vm)
    wanted = str(form.get("host", "") or "").strip()
    dest_id = db.session.scalar(select(Host.id).where(Host.name == wanted, Host.enabled))
    if dest_id is None:
        raise ValidationFailed(
            {"host": f"Choose an enabled host: {', '.join(destinations(user, vm)) or 'there is none'}."}
        )
    if dest_id == vm.host_id:
        raise ValidationFailed({"host": f"The VM is on {wanted} already."})
    if vm.snapshots:
        raise ValidationFailed({"host": "libvirt moves no snapshot: delete the VM's snapshots first."})
    if vm.iso_id is not None:
        raise ValidationFailed(
            {"host": "Eject the ISO in its CD-ROM drive first: the library lives on the local host."}
        )
    source, dest = runtime.on(vm.uuid), runtime.get().host(dest_id)
    with idle(vm.uuid):
        current = source.sync.refresh(vm.uuid)
        offline = current is not None and current.state == "shutoff"
        if current is None or not (offline or current.state == "running"):
            raise InvalidState(
                f"A VM migrates running (live) or shut off; this one is {current.state if current else 'missing'}."
            )
        dest.hypervisor.host.limits()  # HOST_UNREACHABLE now, not in the Operation
        if offline:
            _movable_offline(vm, source)
        else:
            problem = source.hypervisor.migration.cpu_problem(dest.hypervisor.connection)
            if problem:
                raise IncompatibleCPU(f"{IncompatibleCPU.sentence} ({problem})")
        params = {"from": vm.host_id, "to": dest_id, "offline": offline}
        with source.sync.state_lock:
            db.session.execute(update(VM).where(VM.uuid == vm.uuid).values(state=MIGRATING, state_reason=None))
            return submit(user, vm, "migrate", params, f"to {wanted}{' (shut off)' if offline else ''}")


def _movable_offline(vm: VM, source: runtime.HostRuntime) -> None:
    """A shut-off VM's files are copied as they are: a disk that reads through to another file
    (a cloud image, a linked clone's source) or UEFI variables kept beside libvirt would not
    come along. Those move live."""
    if vm.firmware == "uefi":
        raise ValidationFailed(
            {"host": "A UEFI VM's firmware variables stay with libvirt: start it and migrate it live."}
        )
    if source.hypervisor.disks.backing_of(volume_name(vm.uuid)):
        raise ValidationFailed(
            {
                "host": "Its disk reads through to another file (an image, or a VM it was cloned from): "
                "start it and migrate it live, which copies all of it."
            }
        )


@audit.refusals("vm.migrate-cancel", subject="vm_uuid")
def cancel(user: User, vm_uuid: str) -> Operation:
    """Stop the VM's migration under way (the VM runs on where it was)."""
    vm = get_vm(user, vm_uuid, "vm.migrate")
    op = db.session.scalar(
        select(Operation).where(
            Operation.vm_uuid == vm.uuid, Operation.kind == "migrate", Operation.state.in_(Operation.ACTIVE)
        )
    )
    if op is None:
        raise InvalidState("No migration of this VM is under way.")
    op.params = {**(op.params or {}), "cancelled": True}
    audit.record("vm.migrate-cancel", actor=user, vm=vm, operation_id=op.id)
    db.session.commit()
    runtime.on(vm.uuid).hypervisor.migration.abort(vm.uuid)
    return op


def _prepare(ctx: OpContext, source: runtime.HostRuntime, dest: runtime.HostRuntime, offline: bool) -> None:
    """LIMEN's pool on the destination, empty disks there for a live migration to fill, and a
    copy there of what the VM reads but libvirt does not copy (its seed), each undone if the
    migration fails."""
    ctx.step(f"Preparing {dest.name}'s storage pool")
    try:
        dest.hypervisor.disks.free_bytes()  # defined, built and started if it was not
    except LimenError as e:
        raise DestPoolMissing(f"{DestPoolMissing.sentence} ({e.message})") from None
    directory = source.hypervisor.disks.directory.rstrip("/") + "/"
    if not offline:  # the disks it writes, empty, for libvirt to copy into
        for name in [volume_name(ctx.vm_uuid), *source.hypervisor.disks.names(data_volume_prefix(ctx.vm_uuid))]:
            if dest.hypervisor.disks.size(name) is None:
                dest.hypervisor.disks.create_empty_like(name, source.hypervisor.disks)
                ctx.undo(f"delete {name} on {dest.name}", functools.partial(dest.hypervisor.disks.delete_volume, name))
    for path in source.hypervisor.migration.read_only_volumes(ctx.vm_uuid):
        if not path.startswith(directory):
            raise MigrationFailed(f"{path} is not in LIMEN's pool: LIMEN cannot copy it to {dest.name}.")
        name = path.removeprefix(directory)
        if dest.hypervisor.disks.size(name) is None:
            ctx.step(f"Copying {name} to {dest.name}")
            source.hypervisor.disks.copy_to(name, dest.hypervisor.disks)
            ctx.undo(f"delete {name} on {dest.name}", functools.partial(dest.hypervisor.disks.delete_volume, name))


def _dest_uri(source: runtime.HostRuntime, dest: runtime.HostRuntime) -> str | None:
    """The URI the source's libvirtd opens the destination with (peer to peer), or None when
    LIMEN drives the migration itself: the local libvirtd reads LIMEN's key and the
    destination's pinned key (or its certificates) as LIMEN's own URI for it names them;
    another host's could not."""
    if not source.hypervisor.connection.is_local or dest.hypervisor.connection.is_local:
        return None
    return dest.hypervisor.uri


def _data_uri(dest_row: Host) -> str | None:
    """Where the destination takes the migration's data: its address as its URI names it."""
    if not dest_row.uri:
        return None
    address = remote.host_name(dest_row.uri)
    return f"tcp://[{address}]" if ":" in address else f"tcp://{address}"


def _migrate_failed(ctx: OpContext, _err: LimenError) -> None:
    """The row names the host that has the VM: where it was, unless only the destination has
    it (a shut-off VM's move that failed after it left the source)."""
    params = ctx.op.params or {}
    to = params["from"]
    try:
        source, dest = runtime.get().host(params["from"]), runtime.get().host(params["to"])
        gone = source.hypervisor.domains.state(ctx.vm_uuid) is None
        if gone and dest.hypervisor.domains.state(ctx.vm_uuid) is not None:
            to = params["to"]
    except LimenError:
        pass  # a host does not answer: the source, where it was
    _settle_on(ctx.vm_uuid, to)


def _migrate_interrupted(op: Operation, _err: LimenError) -> bool:
    """After a restart: the VM's row names the host it runs on, as both hosts report. A
    migration libvirt still carries on (the source's libvirtd drives one peer to peer) is
    stopped first, so that it is not moved behind LIMEN's back. True when it had moved."""
    params = op.params or {}
    uuid = op.vm_uuid
    try:
        source, dest = runtime.get().host(params["from"]), runtime.get().host(params["to"])
        if source.hypervisor.migration.progress(uuid) is not None:
            source.hypervisor.migration.abort(uuid)
            source.hypervisor.migration.wait_for_end(uuid, 30.0)
        here, there = source.hypervisor.domains.state(uuid), dest.hypervisor.domains.state(uuid)
    except LimenError as e:  # a host does not answer: say so; the row stays on the source
        reason = f"LIMEN restarted while the VM migrated, and could not ask both hosts where it runs ({e.code})."
        db.session.execute(
            update(VM).where(VM.uuid == uuid).values(host_id=params["from"], state=ERROR, state_reason=reason)
        )
        return False
    moved = there is not None and there.state in ACTIVE_STATES and (here is None or here.state not in ACTIVE_STATES)
    _settle_on(uuid, dest.id if moved else source.id)
    if moved:
        try:
            _remove_volumes(source, uuid)
        except LimenError as e:
            current_app.logger.warning("vm %s: its disks on %s stay: %s", uuid, source.name, e)
    return moved


@handler("migrate", on_failure=_migrate_failed, on_interrupted=_migrate_interrupted)
def run_migrate(ctx: OpContext) -> None:
    params = ctx.op.params or {}
    source, dest = runtime.get().host(params["from"]), runtime.get().host(params["to"])
    dest_row = db.session.get(Host, params["to"])
    assert dest_row is not None, "a host is not removed while a VM moves to it"
    dest_uri, data_uri = _dest_uri(source, dest), _data_uri(dest_row)
    bandwidth = int(current_app.config["MIGRATION_BANDWIDTH"])
    db.session.commit()  # no database connection held through the migration
    _prepare(ctx, source, dest, bool(params.get("offline")))
    if params.get("offline"):
        _move_offline(ctx, source, dest)
        return
    ctx.step(f"Migrating live to {dest.name}, with its disks")
    failure: list[LimenError] = []

    def move() -> None:
        try:
            source.hypervisor.migration.migrate(
                ctx.vm_uuid,
                dest.hypervisor.connection,
                dest_uri,
                data_uri,
                bandwidth,
                dest.hypervisor.domains.vnc_listen,
            )
        except LimenError as e:
            failure.append(e)

    mover = threading.Thread(target=move, name="limen-migration", daemon=True)
    mover.start()
    deadline = float(current_app.config["MIGRATION_TIMEOUT"])
    waited = 0.0
    while mover.is_alive():
        mover.join(POLL)
        waited += POLL
        if waited >= deadline and mover.is_alive():
            source.hypervisor.migration.abort(ctx.vm_uuid)
            mover.join(30)
            raise MigrationFailed(f"It did not finish within {deadline:g} s (MIGRATION_TIMEOUT), and was stopped.")
        try:
            done = source.hypervisor.migration.progress(ctx.vm_uuid)
        except LimenError:
            done = None  # gone from the source: it is over
        if done is not None and done.total:
            ctx.progress(
                f"Migrating live to {dest.name}: {done.percent}% "
                f"({done.processed // 2**20} of {done.total // 2**20} MiB sent)"
            )
    if failure:
        db.session.expire(ctx.op)  # a cancel's mark is in the row
        if (ctx.op.params or {}).get("cancelled"):
            raise MigrationCancelled()
        raise MigrationFailed(f"{MigrationFailed.sentence} libvirt said: {failure[0].message}")
    _settle_on(ctx.vm_uuid, dest.id)
    try:
        done_there = dest.hypervisor.migration.completed(ctx.vm_uuid)
    except LimenError:
        done_there = None  # the statistics say how it went; the move itself is done
    if done_there is not None:
        ctx.step(
            f"Moved in {done_there.seconds:.1f} s ({done_there.processed // 2**20} MiB sent); "
            f"the guest paused {done_there.downtime_ms} ms at the switch"
        )
    ctx.step(f"Removing its disks from {source.name}")
    _remove_volumes(source, ctx.vm_uuid)


def _move_offline(ctx: OpContext, source: runtime.HostRuntime, dest: runtime.HostRuntime) -> None:
    """A shut-off VM: its volumes copied through the two pools, its definition made on the
    destination, then removed here; each undone if a later step fails."""
    uuid, disks = ctx.vm_uuid, source.hypervisor.disks
    for name in [volume_name(uuid), *disks.names(data_volume_prefix(uuid))]:
        if dest.hypervisor.disks.size(name) is not None:
            raise MigrationFailed(f"{dest.name} has a volume {name} already: LIMEN leaves it alone.")
        ctx.step(f"Copying {name} to {dest.name}")
        disks.copy_to(name, dest.hypervisor.disks)
        ctx.undo(f"delete {name} on {dest.name}", functools.partial(dest.hypervisor.disks.delete_volume, name))
    ctx.step(f"Defining it on {dest.name}")
    dest.hypervisor.domains.adopt(source.hypervisor.domains.definition(uuid))
    ctx.undo(f"remove its definition on {dest.name}", functools.partial(dest.hypervisor.domains.undefine, uuid))
    if source.hypervisor.domains.autostart(uuid):
        dest.hypervisor.domains.set_autostart(uuid, True)
    ctx.step(f"Removing it from {source.name}")
    source.hypervisor.domains.undefine(uuid)
    ctx.keep()  # it is the destination's now: a later failure undoes none of this
    _settle_on(uuid, dest.id)
    _remove_volumes(source, uuid)


def _settle_on(vm_uuid: str, host_id: int) -> None:
    """The VM's row names ``host_id`` and shows what that host reports; its forwards are put
    into its QEMU there."""
    host = runtime.get().host(host_id)
    with host.sync.state_lock:
        db.session.execute(update(VM).where(VM.uuid == vm_uuid).values(host_id=host_id))
        db.session.commit()
    host.sync.hand_back(vm_uuid)
    try:
        host.sync.apply_forwards(vm_uuid)
    except LimenError as e:
        current_app.logger.warning("vm %s: its forwards on %s: %s", vm_uuid, host.name, e)


def _remove_volumes(host: runtime.HostRuntime, vm_uuid: str) -> None:
    disks = host.hypervisor.disks
    for name in [volume_name(vm_uuid), seed_name(vm_uuid), *disks.names(data_volume_prefix(vm_uuid))]:
        disks.delete_volume(name)
