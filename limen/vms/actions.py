"""Acting on a VM: start, shutdown, force-off, reboot, pause, resume and delete (each an Operation), the
CD-ROM drive, and the rows LIMEN did not make (adopt) or libvirt no longer has (forget)."""

from dataclasses import dataclass, field

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from .. import accounts, audit, media, runtime
from ..access import authorize
from ..errors import InvalidState, LimenError, ValidationFailed, VMNotFound, VMNotRunning, VMPaused
from ..extensions import db, rows_changed
from ..models import DELETING, ISO, MISSING, VM, Operation, UnmanagedDomain, User, utcnow
from .lifecycle import ACTIONS, idle, not_a_base, not_owned, submit, volume_name
from .queries import get_vm

_JOINS = ("create", "start", "migrate")  # what a console waiting for a running VM may join


def start_or_join(user: User, vm_uuid: str) -> Operation | None:
    """Make sure the VM is running or about to be: None when it runs already, else the start
    (or create) under way, joined, or a new start. However many callers race (consoles opened
    at once), one start reaches libvirt."""
    vm = get_vm(user, vm_uuid, "vm.start")
    with idle(vm.uuid, join=_JOINS) as joined:
        if joined is not None:
            return joined
        current = runtime.on(vm.uuid).sync.refresh(vm.uuid)
        if current is None:
            raise VMNotFound("libvirt has no domain for this VM any more.")
        if current.state == "running":
            return None
        if current.state == "paused":  # a start cannot help: say why, and the console offers Resume
            raise VMPaused(f"paused: {current.reason or 'reason unknown'}")
        if current.state not in ACTIONS["start"]:
            raise VMNotRunning(f"The VM is {current.state}; it cannot be started from there.")
        not_a_base(vm)
        return submit(user, vm, "start")


@audit.refusals("vm.{action}", subject="vm_uuid")
def request_action(user: User, vm_uuid: str, action: str) -> Operation:
    """Queue start, shutdown, force-off, reboot, pause or resume, after checking the live state allows it."""
    if action not in ACTIONS:
        raise InvalidState(f"Unknown action {action}.")
    vm = get_vm(user, vm_uuid, f"vm.{action}")
    not_owned(vm)
    with idle(vm.uuid, action):
        current = runtime.on(vm.uuid).sync.refresh(vm.uuid)
        if current is None:
            raise InvalidState("libvirt has no domain for this VM any more; it can only be deleted.")
        if current.state not in ACTIONS[action]:
            raise InvalidState(f"Cannot {action} a VM that is {current.state}.")
        if action == "start":
            not_a_base(vm)
        return submit(user, vm, action)


BULK = ("start", "shutdown", "force-off")
BULK_TARGET = {"start": "running", "shutdown": "shutoff", "force-off": "shutoff"}  # where each takes a VM
BULK_MAX = 500  # VMs one request may act on (the most a page of the table can show, and more)


@dataclass
class Bulk:
    """What a bulk action did: the VMs it queued an Operation for, by name; those already where
    it takes them (left alone); and those it could not act on, each with the error that says why."""

    action: str
    queued: list[tuple[str, Operation]] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    refused: list[tuple[str, LimenError]] = field(default_factory=list)

    @property
    def target(self) -> str:
        return BULK_TARGET[self.action]


def request_bulk(user: User, action: str, vm_uuids: list[str]) -> Bulk:
    """Start, shut down or force off each VM of ``vm_uuids``: one Operation for each, as if
    asked one at a time (so each is checked, refused and audited on its own)."""
    if action not in BULK:
        raise InvalidState(f"Unknown bulk action {action}.")
    wanted = list(dict.fromkeys(vm_uuids))
    if not wanted:
        raise ValidationFailed({"vm": "Tick at least one VM first."})
    if len(wanted) > BULK_MAX:
        raise ValidationFailed({"vm": f"At most {BULK_MAX} VMs at once."})
    done = Bulk(action)
    for vm_uuid in wanted:
        try:
            vm = get_vm(user, vm_uuid)
            name, state = vm.name, vm.state
        except VMNotFound:
            name, state = "a VM that is not there", None
        try:
            done.queued.append((name, request_action(user, vm_uuid, action)))
        except InvalidState as e:  # audited as refused by request_action, as if asked alone
            if state == done.target:
                done.already.append(name)
            else:
                done.refused.append((name, e))
        except LimenError as e:
            done.refused.append((name, e))
    return done


@audit.refusals("vm.delete", subject="vm_uuid")
def request_delete(user: User, vm_uuid: str) -> Operation:
    vm = get_vm(user, vm_uuid, "vm.delete")
    not_owned(vm)
    runtime.on(vm.uuid).hypervisor.host.limits()  # libvirt unreachable: 503 now, not a delete that cannot run
    with idle(vm.uuid):
        not_a_base(vm)
        vm.state = DELETING
        return submit(user, vm, "delete")


# -- the CD-ROM drive ---------------------------------------------------------------------
@audit.refusals("vm.insert-iso", subject="vm_uuid")
def insert_iso(user: User, vm_uuid: str, medium_id: object, boot: bool = False) -> VM:
    """Put a library ISO in the VM's CD-ROM drive (at once if it runs); with ``boot``, the VM
    boots from it before its disk from its next start."""
    vm = get_vm(user, vm_uuid, "vm.media")
    not_owned(vm)
    iso = media.pick(user, medium_id, ISO)
    if iso is None:
        raise ValidationFailed({"medium": "Choose an ISO from the library."})
    with idle(vm.uuid):
        before = vm.iso_id, vm.boot_cdrom
        if not media.claim(iso.id):
            db.session.rollback()
            raise ValidationFailed({"medium": "That ISO is being deleted; choose another."})
        vm.iso_id = iso.id  # recorded first: a delete from here on sees that it is in use
        db.session.commit()
        try:
            runtime.on(vm.uuid).hypervisor.domains.change_cdrom(vm.uuid, iso.volume, True if boot else None)
        except LimenError:
            vm.iso_id, vm.boot_cdrom = before
            db.session.commit()
            raise
        vm.boot_cdrom = vm.boot_cdrom or boot
        audit.record("vm.insert-iso", actor=user, vm=vm, detail=iso.name + (", boot from it" if boot else ""))
        db.session.commit()
    return vm


@audit.refusals("vm.eject", subject="vm_uuid")
def eject(user: User, vm_uuid: str, boot_from_disk: bool = False) -> VM:
    """Empty the VM's CD-ROM drive (at once if it runs); with ``boot_from_disk`` it boots from
    its disk only from its next start: what finishes an installation."""
    vm = get_vm(user, vm_uuid, "vm.media")
    not_owned(vm)
    with idle(vm.uuid):
        runtime.on(vm.uuid).hypervisor.domains.change_cdrom(vm.uuid, None, False if boot_from_disk else None)
        vm.iso_id = None
        vm.boot_cdrom = vm.boot_cdrom and not boot_from_disk
        audit.record("vm.eject", actor=user, vm=vm, detail="boot from disk" if boot_from_disk else None)
        db.session.commit()
    return vm


# -- rows LIMEN did not make, and rows libvirt no longer has ----------------------------------
@audit.refusals("vm.forget", subject="vm_uuid")
def forget(user: User, vm_uuid: str) -> None:
    """Drop a missing VM's row (an admin's call: its domain went elsewhere). libvirt and any
    disk are not touched; deleting is the owner's way to remove the disk too."""
    vm = get_vm(user, vm_uuid, "vm.forget")
    with idle(vm.uuid), runtime.on(vm.uuid).sync.state_lock:  # the sync must not find the domain meanwhile
        gone = rows_changed(delete(VM).where(VM.uuid == vm.uuid, VM.state == MISSING))
        if not gone:
            db.session.rollback()
            raise InvalidState(f"Only a VM whose domain is missing can be forgotten; this one is {vm.state}.")
        audit.record("vm.forget", actor=user, vm_uuid=vm_uuid, detail=vm.name)
        db.session.commit()


@audit.refusals("vm.adopt", subject="vm_uuid")
def adopt(user: User, vm_uuid: str, owner_name: str) -> VM:
    """Give a domain another tool made an owner: it becomes a LIMEN VM. Its disks stay its own
    (deleting it in LIMEN keeps them)."""
    authorize(user, "vm.adopt")
    found = db.session.get(UnmanagedDomain, vm_uuid)
    if found is None:
        raise VMNotFound("LIMEN lists no unmanaged domain with this UUID.")
    host_id = found.host_id
    owner = accounts.user_named(owner_name)
    if owner is None:
        raise ValidationFailed({"owner": f"There is no user {owner_name}."})
    rt = runtime.get().host(host_id)
    name, vcpus, memory_mib = rt.hypervisor.domains.specs(vm_uuid)
    taken = {"name": f"A LIMEN VM is named {name} already; rename one of them first."}
    if len(name) > 63:
        raise ValidationFailed(
            {"name": f"LIMEN keeps names of up to 63 characters; rename {name[:63]}… in libvirt first."}
        )
    if db.session.scalar(select(VM.id).where(VM.name == name)):
        raise ValidationFailed(taken)
    # A domain LIMEN made once (a row forgotten, then the domain defined again) has its disk
    # in LIMEN's pool: that disk is LIMEN's again, and deleting the VM removes it.
    ours = rt.hypervisor.disks.size(volume_name(vm_uuid)) is not None
    with rt.sync.state_lock:  # the sync must not list it again meanwhile
        listed = db.session.scalar(
            select(UnmanagedDomain).where(UnmanagedDomain.uuid == vm_uuid).execution_options(populate_existing=True)
        )
        if listed is None:
            raise VMNotFound("That domain is gone, or was adopted meanwhile.")
        vm = VM(
            uuid=vm_uuid,
            host_id=host_id,
            name=name,
            owner_id=owner.id,
            vcpus=vcpus,
            memory_mib=memory_mib,
            disk_gib=0,
            state=listed.state,
            state_reason=listed.state_reason,
            state_seen_at=utcnow(),
            adopted=not ours,
        )
        db.session.delete(listed)
        db.session.add(vm)
        audit.record("vm.adopt", actor=user, vm=vm, target=owner.username)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise ValidationFailed(taken) from None
    return vm
