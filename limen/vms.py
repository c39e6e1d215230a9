"""VM use cases: who may see what, validation, and the requests that start background work.

Views call these functions and render; the work that talks to libvirt for more than a moment
runs in the Operation handlers at the bottom of this module.
"""
import re
import threading
import uuid as uuidlib
from contextlib import contextmanager
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from . import accounts, audit, cloudinit, media
from .access import authorize, may, visible_vms, vm_for
from .errors import (InvalidState, LimenError, OperationNotFound, ShutdownTimeout,
                     ValidationFailed, VMBusy, VMNotFound, VMNotRunning)
from .extensions import db, services
from .hypervisor import ACTIVE_STATES
from .models import (CREATING, DELETING, ERROR, IMAGE, ISO, MISSING, VM, Medium, Operation,
                     UnmanagedDomain, User, utcnow)
from .operations import OpContext, handler
from .profiles import FIRMWARE, KINDS, Profile, profile
from .sync import hand_back, refresh, state_lock

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MIN_MEMORY_MIB = 64
GIB = 1024 ** 3

# Which libvirt states allow which action (delete is allowed in any state no Operation owns).
ACTIONS: dict[str, frozenset[str]] = {
    "start": frozenset({"shutoff", "crashed", "nostate"}),
    "shutdown": frozenset({"running"}),
    "force-off": ACTIVE_STATES,  # not "crashed": its QEMU is gone already
    "reboot": frozenset({"running"}),
}
# An action that may be requested while an Operation of the given kind is still active.
_MAY_OVERTAKE = {("force-off", "shutdown")}
_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _vm_lock(vm_uuid: str) -> threading.Lock:
    """The VM's own lock: "is an Operation under way?", "does its live state allow this?" and
    "queue it" are one step, so a double-clicked start starts once. The live state is read
    through the hypervisor under it (and under the sync's state lock, which every VM shares).
    (One process serves a database.)"""
    with _locks_guard:
        return _locks.setdefault(vm_uuid, threading.Lock())


def volume_name(vm_uuid: str) -> str:
    """A VM's disk is named by its UUID, never by its name."""
    return f"{vm_uuid}.qcow2"


def seed_name(vm_uuid: str) -> str:
    """The cloud-init seed ISO of a VM made from a cloud image."""
    return f"{vm_uuid}-seed.iso"


def vm_profile(vm: VM) -> Profile:
    """The profile a VM's domain was defined with, as stored with it."""
    return Profile(vm.os_kind, vm.machine, vm.disk_bus, vm.nic_model, vm.firmware)


@dataclass
class Row:
    vm: VM
    op: Operation | None  # the VM's latest Operation when it is active or has failed
    may_forget: bool = False  # the viewer is an admin

    @property
    def failure(self) -> Operation | None:
        """The latest Operation, if it failed and nothing has changed the VM's state since."""
        op, vm = self.op, self.vm
        if op is None or op.state != "failed" or vm.state == ERROR:
            return None
        if vm.state_seen_at and op.finished_at and vm.state_seen_at > op.finished_at:
            return None
        return op

    @property
    def actions(self) -> list[str]:
        if self.vm.state in (CREATING, DELETING):
            return []
        if self.op and self.op.active:
            return [a for a in ACTIONS if (a, self.op.kind) in _MAY_OVERTAKE]
        allowed = [a for a, states in ACTIONS.items() if self.vm.state in states]
        forget = ["forget"] if self.may_forget and self.vm.state == MISSING else []
        return [*allowed, "delete", *forget]


# -- reading ------------------------------------------------------------------------------
def get_vm(user: User, vm_uuid: str, action: str = "vm.view") -> VM:
    """The VM, if ``user`` may take ``action`` on it; another user's VM is as absent as a
    deleted one."""
    return vm_for(user, vm_uuid, action)


def owners(user: User) -> list[str]:
    """The usernames an admin can filter the table by (everyone else sees only their own)."""
    if not user.is_admin:
        return []
    return list(db.session.scalars(select(User.username).order_by(User.username)))


def hypervisor_problem() -> str | None:
    """Why libvirt cannot be reached right now (the table then shows the last known state
    under a banner), or None."""
    sync = services().sync
    return None if sync.reachable else (sync.unreachable_reason or "unreachable")


def _visible_query(user: User, owner: str = "", state: str = ""):
    """The VMs ``user`` may see, by name; an admin may narrow them to one owner's."""
    query = visible_vms(user)
    if owner and user.is_admin:
        query = query.join(VM.owner).where(User.username == owner)
    if state:
        query = query.where(VM.state == state)
    return query.order_by(VM.name)


def _rows(user: User, vms) -> list[Row]:
    """Each VM with its latest Operation, unless that one is done (as the table shows it)."""
    latest = (select(func.max(Operation.id)).group_by(Operation.vm_uuid)).scalar_subquery()
    ops = db.session.scalars(select(Operation).where(
        Operation.id.in_(latest), Operation.state != "done")).all()
    by_vm = {op.vm_uuid: op for op in ops}
    admin = may(user, "vm.forget")
    return [Row(vm, by_vm.get(vm.uuid), admin) for vm in vms]


def table(user: User, owner: str = "") -> list[Row]:
    """The rows ``user`` may see; an admin may narrow them to one owner's."""
    return _rows(user, db.session.scalars(_visible_query(user, owner).options(selectinload(VM.owner))).all())


def page(user: User, *, owner: str = "", state: str = "", number: int = 1,
         per_page: int = 100) -> tuple[list[Row], int]:
    """One page of the rows ``user`` may see, by name, and how many there are in all."""
    query = _visible_query(user, owner, state)
    total = db.session.scalar(select(func.count()).select_from(query.subquery()))
    vms = db.session.scalars(query.options(selectinload(VM.owner))
                             .limit(per_page).offset((number - 1) * per_page)).all()
    return _rows(user, vms), total


def operation(user: User, op_id: int) -> Operation:
    """An Operation, if ``user`` requested it or may see its VM (admins: all). Another user's
    answers as a missing one does, so ids cannot be probed."""
    op = db.session.get(Operation, op_id)
    if op is None:
        raise OperationNotFound()
    if op.user_id != user.id and not may(user, "vm.list-all"):
        try:
            vm_for(user, op.vm_uuid)
        except VMNotFound:
            raise OperationNotFound() from None
    return op


def unmanaged(user: User) -> list[UnmanagedDomain]:
    """Domains LIMEN did not create, for those who may adopt them (admins); [] for others."""
    if not may(user, "vm.adopt"):
        return []
    return list(db.session.scalars(select(UnmanagedDomain).order_by(UnmanagedDomain.name)))


# -- create -------------------------------------------------------------------------------
@dataclass(frozen=True)
class VMSpec:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    profile: Profile = profile("linux")
    iso_id: int | None = None  # install from this ISO: in the CD-ROM drive, booted first
    image_id: int | None = None  # built on this cloud image, with a cloud-init seed
    cloud_init: dict | None = None


def _source(user: User, form, errors: dict) -> tuple[Medium | None, Medium | None]:
    """(ISO, image) chosen by the form's ``source``: "", "iso:<id>" or "image:<id>"."""
    raw = str(form.get("source", "") or "").strip()
    if not raw:
        return None, None
    kind, _, number = raw.partition(":")
    medium = media.pick(user, number, kind) if kind in (ISO, IMAGE) else None
    if medium is None:
        errors["source"] = "Choose an ISO or image from the library, or an empty disk."
        return None, None
    return (medium, None) if kind == ISO else (None, medium)


def _profile(form, default_os: str, errors: dict) -> Profile:
    os_kind = str(form.get("os_kind", "") or default_os)
    firmware = str(form.get("firmware", "") or "bios")
    if os_kind not in KINDS:
        errors["os_kind"] = f"Choose one of: {', '.join(KINDS)}."
        os_kind = "linux"
    if firmware not in FIRMWARE:
        errors["firmware"] = f"Choose one of: {', '.join(FIRMWARE)}."
        firmware = "bios"
    elif firmware == "uefi" and not services().hypervisor.uefi_available():
        errors["firmware"] = "UEFI firmware (OVMF) is not installed on the host; choose BIOS."
    virtio = str(form.get("virtio", "")).lower() in ("1", "on", "true", "yes")
    return profile(os_kind, firmware, virtio)


def _cloud_init(form, errors: dict) -> dict:
    user = str(form.get("ci_user", "") or "").strip() or "limen"
    key = " ".join(str(form.get("ci_ssh_key", "") or "").split())  # one line, as pasted
    password = str(form.get("ci_password", "") or "")
    if not cloudinit.USER_RE.fullmatch(user):
        errors["ci_user"] = "Use up to 32 lower-case letters, digits, _ and -, starting with a letter or _."
    if key and (len(key) > 16384 or not cloudinit.SSH_KEY_RE.fullmatch(key)):
        errors["ci_ssh_key"] = "Paste one OpenSSH public key (ssh-ed25519 AAAA… comment)."
    if password and not (8 <= len(password) <= 256 and cloudinit.printable(password)):
        errors["ci_password"] = "Use 8 to 256 characters, and no control characters (newlines), or leave it empty."
    if not key and not password and not errors.get("ci_ssh_key"):
        errors["ci_ssh_key"] = "Give an SSH public key or a password: without either nobody can sign in to the VM."
    if errors:
        return {}
    return {"user": user, "ssh_key": key or None, "password": bool(password),
            "password_hash": cloudinit.hash_password(password) if password else None}


def create_choices(user: User) -> dict:
    """What the create form offers: the library's ISOs and images, the OS kinds, and the
    firmware kinds (UEFI only where the host has OVMF; unknown while libvirt is unreachable,
    and then not offered: the page must still show the table)."""
    try:
        uefi = services().hypervisor.uefi_available()
    except LimenError:
        uefi = False
    library = media.library(user)
    return dict(isos=[m for m in library if m.kind == ISO], images=[m for m in library if m.kind == IMAGE],
                os_kinds=KINDS, firmwares=FIRMWARE, uefi=uefi)


def detail(user: User, vm_uuid: str) -> dict:
    """One VM as its Details page shows it: the VM, its OS profile, and the ISOs its drive
    can take."""
    vm = get_vm(user, vm_uuid)
    return dict(vm=vm, profile=vm_profile(vm), isos=media.library(user, ISO))


def _whole_number(form, field: str, errors: dict) -> int | None:
    raw = str(form.get(field, "")).strip()
    if not raw.isdigit() or not raw.isascii():
        errors[field] = "Enter a whole number."
        return None
    return int(raw)


def validate(user: User, form) -> VMSpec:
    """Check a create request against the rules and what the host has; raise
    ValidationFailed with a message per field. Nothing reaches libvirt before the name has
    passed the pattern."""
    errors: dict[str, str] = {}
    name = str(form.get("name", "")).strip()
    vcpus = _whole_number(form, "vcpus", errors)
    memory_mib = _whole_number(form, "memory_mib", errors)
    disk_gib = _whole_number(form, "disk_gib", errors)
    hv = services().hypervisor
    iso, image = _source(user, form, errors)
    chosen = _profile(form, (iso or image).os_kind if (iso or image) else "linux", errors)
    cloud = _cloud_init(form, errors) if image is not None else None

    if not NAME_RE.fullmatch(name):
        errors["name"] = ("Use 1 to 63 lower-case letters, digits and hyphens, "
                          "starting with a letter or digit.")
    elif db.session.scalar(select(VM.id).where(VM.name == name)) or hv.name_in_use(name):
        errors["name"] = f"The name {name} is already taken."

    host = hv.host_limits()
    if vcpus is not None and not 1 <= vcpus <= host.cpus:
        errors["vcpus"] = f"Choose from 1 to {host.cpus} (the host's CPU count)."
    if memory_mib is not None and not MIN_MEMORY_MIB <= memory_mib <= host.memory_mib:
        errors["memory_mib"] = (f"Choose from {MIN_MEMORY_MIB} to {host.memory_mib} MiB "
                                "(the host's memory).")
    if disk_gib is not None:
        free_gib = hv.pool_free_bytes() // GIB
        if disk_gib < 1:
            errors["disk_gib"] = "A disk needs at least 1 GiB."
        elif disk_gib > free_gib:
            errors["disk_gib"] = (f"The storage pool {hv.pool_name} has {free_gib} GiB free; "
                                  f"{disk_gib} GiB do not fit.")
        elif image is not None and disk_gib * GIB < (image.virtual_bytes or 0):
            errors["disk_gib"] = (f"The image {image.name} is a {-(-image.virtual_bytes // GIB)} GiB disk; "
                                  "choose at least that.")
    if errors:
        raise ValidationFailed(errors)
    return VMSpec(name, vcpus, memory_mib, disk_gib, chosen, iso.id if iso else None,
                  image.id if image else None, cloud)


@audit.refusals("vm.create")
def request_create(user: User, form) -> Operation:
    """Validate, check the quota, write the VM row (creating) and its Operation, and queue it.
    Returns the create Operation at once. The quota check and the new row are one
    transaction, under a lock on the user's row: concurrent creates cannot both slip under a
    limit."""
    authorize(user, "vm.create")
    spec = validate(user, form)
    owner_id = user.id
    db.session.commit()  # end validate's reading transaction: the claim's write comes first
    accounts.claim(owner_id, spec.vcpus, spec.memory_mib, spec.disk_gib)
    for medium_id in (spec.iso_id, spec.image_id):  # under the same lock: no delete slips in
        if medium_id is not None and not media.claim(medium_id):
            db.session.rollback()
            raise ValidationFailed({"source": "That medium is being deleted; choose another."})
    p = spec.profile
    vm = VM(uuid=str(uuidlib.uuid4()), name=spec.name, owner_id=owner_id, vcpus=spec.vcpus,
            memory_mib=spec.memory_mib, disk_gib=spec.disk_gib, state=CREATING,
            os_kind=p.os_kind, machine=p.machine, disk_bus=p.disk_bus, nic_model=p.nic_model,
            firmware=p.firmware, iso_id=spec.iso_id, boot_cdrom=spec.iso_id is not None,
            image_id=spec.image_id, cloud_init=spec.cloud_init)
    db.session.add(vm)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"name": f"The name {spec.name} is already taken."}) from None
    return _submit(user, vm, "create")


# -- actions ------------------------------------------------------------------------------
def _active_op(vm_uuid: str) -> Operation | None:
    return db.session.scalar(select(Operation).where(
        Operation.vm_uuid == vm_uuid, Operation.state.in_(Operation.ACTIVE)))


def _submit(user: User, vm: VM, kind: str) -> Operation:
    """Write and submit an Operation, and audit the request; the caller holds the VM's lock
    (or, for a create, the VM is new)."""
    op = Operation(kind=kind, vm_uuid=vm.uuid, user_id=user.id, step="Queued", steps=[],
                   source_ip=audit.source_ip())
    db.session.add(op)
    db.session.flush()
    audit.record(f"vm.{kind}", "accepted", actor=user, vm=vm, operation_id=op.id,
                 detail=f"{vm.vcpus} vCPUs, {vm.memory_mib} MiB, {vm.disk_gib} GiB" if kind == "create" else None)
    db.session.commit()
    services().runner.submit(op.id)
    return op


def _busy(active: Operation) -> VMBusy:
    return VMBusy(f"{active.kind} is still in progress ({active.step or 'queued'}).")


def _queue(user: User, vm: VM, kind: str, vm_state: str | None = None) -> Operation:
    with _vm_lock(vm.uuid):
        active = _active_op(vm.uuid)
        if active and (kind, active.kind) not in _MAY_OVERTAKE:
            raise _busy(active)
        if vm_state:
            vm.state = vm_state
        return _submit(user, vm, kind)


_JOINS = ("create", "start")  # what a console waiting for a running VM may join


def start_or_join(user: User, vm_uuid: str) -> Operation | None:
    """Make sure the VM is running or about to be: None when it runs already, else the start
    (or create) under way, joined, or a new start. However many callers race (consoles opened
    at once), one start reaches libvirt."""
    vm = get_vm(user, vm_uuid, "vm.start")
    with _vm_lock(vm.uuid):
        active = _active_op(vm.uuid)
        if active and active.kind in _JOINS:
            return active
        if active:
            raise _busy(active)
        current = refresh(vm.uuid)
        if current is None:
            raise VMNotFound("libvirt has no domain for this VM any more.")
        if current.state == "running":
            return None
        if current.state not in ACTIONS["start"]:
            raise VMNotRunning(f"The VM is {current.state}; it cannot be started from there.")
        return _submit(user, vm, "start")


def row(user: User, vm_uuid: str) -> Row:
    """One VM's row, as the table shows it."""
    vm = get_vm(user, vm_uuid)
    op = db.session.scalar(select(Operation).where(Operation.vm_uuid == vm.uuid)
                           .order_by(Operation.id.desc()).limit(1))
    return Row(vm, op if op is not None and op.state != "done" else None)


@audit.refusals("vm.{action}", subject="vm_uuid")
def request_action(user: User, vm_uuid: str, action: str) -> Operation:
    """Queue start, shutdown, force-off or reboot, after checking the live state allows it."""
    if action not in ACTIONS:
        raise InvalidState(f"Unknown action {action}.")
    vm = get_vm(user, vm_uuid, f"vm.{action}")
    if vm.state in (CREATING, DELETING):
        raise VMBusy(f"The VM is {vm.state}.")
    with _vm_lock(vm.uuid):
        active = _active_op(vm.uuid)
        if active and (action, active.kind) not in _MAY_OVERTAKE:
            raise _busy(active)
        current = refresh(vm.uuid)
        if current is None:
            raise InvalidState("libvirt has no domain for this VM any more; it can only be deleted.")
        if current.state not in ACTIONS[action]:
            raise InvalidState(f"Cannot {action} a VM that is {current.state}.")
        return _submit(user, vm, action)


def _media_change(user: User, vm_uuid: str) -> VM:
    vm = get_vm(user, vm_uuid, "vm.media")
    if vm.state in (CREATING, DELETING):
        raise VMBusy(f"The VM is {vm.state}.")
    return vm


@contextmanager
def _idle(vm: VM):
    """Hold the VM's lock, and refuse while an Operation is under way on it."""
    with _vm_lock(vm.uuid):
        active = _active_op(vm.uuid)
        if active:
            raise _busy(active)
        yield


@audit.refusals("vm.insert-iso", subject="vm_uuid")
def insert_iso(user: User, vm_uuid: str, medium_id, boot: bool = False) -> VM:
    """Put a library ISO in the VM's CD-ROM drive (at once if it runs); with ``boot``, the VM
    boots from it before its disk from its next start."""
    vm = _media_change(user, vm_uuid)
    iso = media.pick(user, medium_id, ISO)
    if iso is None:
        raise ValidationFailed({"medium": "Choose an ISO from the library."})
    with _idle(vm):
        before = vm.iso_id, vm.boot_cdrom
        if not media.claim(iso.id):
            db.session.rollback()
            raise ValidationFailed({"medium": "That ISO is being deleted; choose another."})
        vm.iso_id = iso.id  # recorded first: a delete from here on sees that it is in use
        db.session.commit()
        try:
            services().hypervisor.change_cdrom(vm.uuid, iso.volume, True if boot else None)
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
    vm = _media_change(user, vm_uuid)
    with _idle(vm):
        services().hypervisor.change_cdrom(vm.uuid, None, False if boot_from_disk else None)
        vm.iso_id = None
        vm.boot_cdrom = vm.boot_cdrom and not boot_from_disk
        audit.record("vm.eject", actor=user, vm=vm, detail="boot from disk" if boot_from_disk else None)
        db.session.commit()
    return vm


@audit.refusals("vm.delete", subject="vm_uuid")
def request_delete(user: User, vm_uuid: str) -> Operation:
    vm = get_vm(user, vm_uuid, "vm.delete")
    if vm.state in (CREATING, DELETING):
        raise VMBusy(f"The VM is {vm.state}.")
    services().hypervisor.host_limits()  # libvirt unreachable: 503 now, not a delete that cannot run
    return _queue(user, vm, "delete", vm_state=DELETING)


def recover_interrupted(op: Operation, err: LimenError) -> bool:
    """After a restart, settle an Operation that was not resumed. Returns True when its work
    was in fact done (a create that had handed its running VM back). An interrupted create is
    undone otherwise: domain and disk removed, the row an error saying so. Other actions only
    leave the row to the resync, which writes what libvirt reports."""
    vm = db.session.scalar(select(VM).where(VM.uuid == op.vm_uuid))
    if op.kind != "create" or vm is None:
        return False
    if vm.state not in (CREATING, ERROR):
        return True
    reason = f"{err.code}: {err.message}"
    hv = services().hypervisor
    try:
        if hv.state(vm.uuid) is not None:
            hv.destroy(vm.uuid)
            hv.undefine(vm.uuid)
        hv.delete_volume(volume_name(vm.uuid))
        hv.delete_volume(seed_name(vm.uuid))
        reason += " What it had created was removed; delete this row, or create the VM again."
    except LimenError as e:
        reason += f" Cleaning up failed too ({e.code}); delete the VM to retry."
    vm.state, vm.state_reason = ERROR, reason
    return False


# -- rows LIMEN did not make, and rows libvirt no longer has ----------------------------------
@audit.refusals("vm.forget", subject="vm_uuid")
def forget(user: User, vm_uuid: str) -> None:
    """Drop a missing VM's row (an admin's call: its domain went elsewhere). libvirt and any
    disk are not touched; deleting is the owner's way to remove the disk too."""
    vm = get_vm(user, vm_uuid, "vm.forget")
    with _idle(vm):
        with state_lock:  # the sync must not find the domain meanwhile
            gone = db.session.execute(delete(VM).where(VM.uuid == vm.uuid, VM.state == MISSING)).rowcount
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
    if db.session.get(UnmanagedDomain, vm_uuid) is None:
        raise VMNotFound("LIMEN lists no unmanaged domain with this UUID.")
    owner = db.session.scalar(select(User).where(User.username == accounts.normal_username(owner_name)))
    if owner is None:
        raise ValidationFailed({"owner": f"There is no user {owner_name}."})
    name, vcpus, memory_mib = services().hypervisor.specs(vm_uuid)
    if len(name) > 63:
        raise ValidationFailed({"name": f"LIMEN keeps names of up to 63 characters; rename {name[:63]}… in libvirt first."})
    if db.session.scalar(select(VM.id).where(VM.name == name)):
        raise ValidationFailed({"name": f"A LIMEN VM is named {name} already; rename one of them first."})
    # A domain LIMEN made once (a row forgotten, then the domain defined again) has its disk
    # in LIMEN's pool: that disk is LIMEN's again, and deleting the VM removes it.
    ours = volume_name(vm_uuid) in services().hypervisor.volume_names()
    with state_lock:  # the sync must not list it again meanwhile
        listed = db.session.scalar(select(UnmanagedDomain).where(UnmanagedDomain.uuid == vm_uuid)
                                   .execution_options(populate_existing=True))
        if listed is None:
            raise VMNotFound("That domain is gone, or was adopted meanwhile.")
        vm = VM(uuid=vm_uuid, name=name, owner_id=owner.id, vcpus=vcpus, memory_mib=memory_mib,
                disk_gib=0, state=listed.state, state_reason=listed.state_reason,
                state_seen_at=utcnow(), adopted=not ours)
        db.session.delete(listed)
        db.session.add(vm)
        audit.record("vm.adopt", actor=user, vm=vm, target=owner.username)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            raise ValidationFailed({"name": f"A LIMEN VM is named {name} already; rename one of them first."}) from None
    return vm


# -- background work ----------------------------------------------------------------------
def _vm(ctx: OpContext) -> VM:
    return db.session.scalar(select(VM).where(VM.uuid == ctx.vm_uuid))


def _refresh(ctx: OpContext) -> None:
    refresh(ctx.vm_uuid)


def _create_failed(ctx: OpContext, err: LimenError) -> None:
    hand_back(ctx.vm_uuid, error=f"{err.code}: {err.message}")


@handler("create", on_failure=_create_failed)
def run_create(ctx: OpContext) -> None:
    hv = services().hypervisor
    vm = _vm(ctx)
    uuid, volume = vm.uuid, volume_name(vm.uuid)
    spec = dict(uuid=uuid, name=vm.name, vcpus=vm.vcpus, memory_mib=vm.memory_mib, volume=volume,
                profile=vm_profile(vm), iso=vm.iso.volume if vm.iso else None, boot_cdrom=vm.boot_cdrom)
    disk_gib, image = vm.disk_gib, (vm.image.volume, vm.image.name) if vm.image else None
    seed = None
    if image is not None:
        ci = vm.cloud_init
        seed = cloudinit.seed_iso(cloudinit.user_data(vm.name, ci["user"], ci["ssh_key"], ci["password_hash"]),
                                  cloudinit.meta_data(uuid, vm.name))
        # The seed has the hash now; the database need not keep it (a create is never re-run).
        vm.cloud_init = {k: v for k, v in ci.items() if k != "password_hash"}
    db.session.commit()  # plain values from here on: no connection held during the slow steps
    if image is None:
        ctx.step("Creating the disk")
        hv.create_volume(volume, disk_gib)
    else:
        ctx.step(f"Creating the disk on {image[1]}")
        hv.create_overlay(volume, image[0], disk_gib)
    ctx.undo("delete the disk", lambda: hv.delete_volume(volume))
    if seed is not None:
        ctx.step("Writing the cloud-init seed")
        hv.upload_volume(seed_name(uuid), seed)
        ctx.undo("delete the cloud-init seed", lambda: hv.delete_volume(seed_name(uuid)))
        spec["seed"] = seed_name(uuid)
    ctx.step("Defining the VM")
    hv.define(**spec)
    ctx.undo("remove the VM definition", lambda: hv.undefine(uuid))
    ctx.step("Starting the VM")
    ctx.undo("power off", lambda: hv.destroy(uuid))
    hv.start(uuid)
    ctx.step("Waiting for it to run")
    hv.wait_for_state(uuid, {"running"}, current_app.config["START_TIMEOUT"], VMNotRunning)
    hand_back(uuid)


@handler("start")
def run_start(ctx: OpContext) -> None:
    hv = services().hypervisor
    ctx.step("Starting the VM")
    hv.start(ctx.vm_uuid)
    ctx.step("Waiting for it to run")
    hv.wait_for_state(ctx.vm_uuid, {"running"}, current_app.config["START_TIMEOUT"], VMNotRunning)
    _refresh(ctx)


@handler("shutdown")
def run_shutdown(ctx: OpContext) -> None:
    hv = services().hypervisor
    ctx.step("Asking the guest to shut down (ACPI)")
    hv.shutdown(ctx.vm_uuid)
    ctx.step("Waiting for the guest to power off")
    try:
        hv.wait_for_state(ctx.vm_uuid, {"shutoff"}, current_app.config["SHUTDOWN_TIMEOUT"],
                          ShutdownTimeout)
    finally:
        _refresh(ctx)


@handler("force-off")
def run_force_off(ctx: OpContext) -> None:
    ctx.step("Powering off")
    services().hypervisor.destroy(ctx.vm_uuid)
    _refresh(ctx)


@handler("reboot")
def run_reboot(ctx: OpContext) -> None:
    ctx.step("Asking the guest to reboot")
    services().hypervisor.reboot(ctx.vm_uuid)
    _refresh(ctx)


def _delete_failed(ctx: OpContext, err: LimenError) -> None:
    try:
        exists = services().hypervisor.state(ctx.vm_uuid) is not None
    except LimenError:  # libvirt gone too: say so, and let the owner delete again
        exists = False
    if exists:
        hand_back(ctx.vm_uuid)  # what is left of it shows as it is; the failed delete beside it
    else:
        hand_back(ctx.vm_uuid, error=f"Delete failed. {err.code}: {err.message} Delete it again.")


@handler("delete", on_failure=_delete_failed, resume=True)
def run_delete(ctx: OpContext) -> None:
    """Every step checks what is there first, so a delete interrupted anywhere is carried on
    after a restart."""
    hv = services().hypervisor
    vm = _vm(ctx)
    adopted = vm is not None and vm.adopted
    db.session.commit()
    if hv.state(ctx.vm_uuid) is not None:
        ctx.step("Powering off")
        hv.destroy(ctx.vm_uuid)
        ctx.step("Removing the VM definition")
        hv.undefine(ctx.vm_uuid, keep_nvram=adopted)
    if not adopted:  # an adopted VM's disks are not LIMEN's: they stay
        ctx.step("Deleting the disk")
        hv.delete_volume(volume_name(ctx.vm_uuid))
        hv.delete_volume(seed_name(ctx.vm_uuid))
    vm = _vm(ctx)
    if vm is not None:
        db.session.delete(vm)
    db.session.commit()
