"""Reading VMs: the table's rows, one VM, its Operations, its history, its graphs and screen."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import func, or_, select

from .. import media, runtime
from ..access import may, vm_for
from ..errors import HostDisabled, OperationNotFound, VMNotFound
from ..extensions import db
from ..models import (
    CREATING,
    DELETING,
    ERROR,
    ISO,
    LOCAL_HOST,
    MISSING,
    VM,
    AuditEvent,
    Host,
    Operation,
    UnmanagedDomain,
    User,
    utcnow,
)
from ..stats import series
from .lifecycle import ACTIONS, MAY_OVERTAKE, WAITING_FOR_POWER_OFF
from .network import ssh_command


@dataclass
class Row:
    vm: VM
    op: Operation | None  # the VM's latest Operation when it is active or has failed
    may_forget: bool = False  # the viewer is an admin
    host_problem: str | None = None  # why its host cannot be reached (its state is the last seen)

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
    def deadline(self) -> datetime | None:
        """When a shutdown that waits for its guest gives up (UTC): the table counts down to it."""
        op = self.op
        if op is None or not op.active or op.kind != "shutdown" or op.step != WAITING_FOR_POWER_OFF:
            return None
        return datetime.fromisoformat(op.steps[-1]["at"]) + timedelta(seconds=current_app.config["SHUTDOWN_TIMEOUT"])

    @property
    def seconds_left(self) -> int:
        deadline = self.deadline
        return 0 if deadline is None else max(0, round((deadline - utcnow()).total_seconds()))

    @property
    def actions(self) -> list[str]:
        if self.vm.state in (CREATING, DELETING):
            return []
        if self.op and self.op.active:
            return [a for a in ACTIONS if (a, self.op.kind) in MAY_OVERTAKE]
        allowed = [a for a, states in ACTIONS.items() if self.vm.state in states]
        forget = ["forget"] if self.may_forget and self.vm.state == MISSING else []
        return [*allowed, "delete", *forget]


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
    """Why the local host's libvirt cannot be reached right now (the table then shows the last
    known state under a banner), or None."""
    return runtime.get().sync.problem


def host_problems() -> dict[int, str]:
    """Why each other host's VMs cannot be reached now, by host id: it is disabled, or its
    libvirt does not answer (their rows say so, and show the last state seen)."""
    running, found = runtime.get().hosts, {}
    for host_id, name, enabled in db.session.execute(
        select(Host.id, Host.name, Host.enabled).where(Host.id != LOCAL_HOST)
    ):
        if not enabled:
            found[host_id] = f"Host {name} is disabled"
        elif host_id in running and (problem := running[host_id].sync.problem):
            found[host_id] = f"Host {name} is unreachable: {problem}"
    return found


def host_names() -> list[str]:
    """Every host's name, for the table's host column and filter (one host: none, and no column)."""
    names = list(db.session.scalars(select(Host.name).order_by(Host.id)))
    return names if len(names) > 1 else []


def rows_for(user: User, vms: list[VM], problems: dict[int, str] | None = None) -> list[Row]:
    """Each VM with its latest Operation, unless that one is done (as the table shows it). Only
    these VMs' Operations are read, so a page costs what it shows, however long the history."""
    latest = (
        select(func.max(Operation.id)).where(Operation.vm_uuid.in_([vm.uuid for vm in vms])).group_by(Operation.vm_uuid)
    ).scalar_subquery()
    ops = db.session.scalars(select(Operation).where(Operation.id.in_(latest), Operation.state != "done")).all()
    by_vm = {op.vm_uuid: op for op in ops}
    admin = may(user, "vm.forget")
    problems = host_problems() if problems is None else problems  # (``problems``: as just read)
    return [Row(vm, by_vm.get(vm.uuid), admin, problems.get(vm.host_id)) for vm in vms]


def row(user: User, vm_uuid: str) -> Row:
    """One VM's row, as the table shows it."""
    vm = get_vm(user, vm_uuid)
    op = db.session.scalar(select(Operation).where(Operation.vm_uuid == vm.uuid).order_by(Operation.id.desc()).limit(1))
    return Row(
        vm,
        op if op is not None and op.state != "done" else None,
        may(user, "vm.forget"),
        host_problems().get(vm.host_id),
    )


def detail(user: User, vm_uuid: str) -> dict[str, object]:
    """One VM as its Details page shows it: the VM, its OS profile, and the ISOs its drive
    can take."""
    vm = get_vm(user, vm_uuid)
    return dict(vm=vm, profile=vm.profile, isos=media.usable(user, ISO), ssh_command=ssh_command(vm))


def screen(user: User, vm_uuid: str) -> bytes:
    """The running VM's screen now, as a PNG (its page's thumbnail)."""
    vm = get_vm(user, vm_uuid, "vm.console")
    return runtime.on(vm.uuid).hypervisor.display.screenshot(vm.uuid)


def history(user: User, vm_uuid: str, limit: int = 10) -> dict[str, list]:
    """What was done to the VM lately, newest first: its Operations (with their steps) and the
    audit log's entries about it, since it was made (a UUID may have been another VM's). Those
    who may not read the audit log see what they did themselves and what was done to the VM,
    not what others were refused."""
    vm = get_vm(user, vm_uuid)
    ops = db.session.scalars(
        select(Operation)
        .where(Operation.vm_uuid == vm.uuid, Operation.created_at >= vm.created_at)
        .order_by(Operation.id.desc())
        .limit(limit)
    )
    events = select(AuditEvent).where(AuditEvent.vm_uuid == vm.uuid, AuditEvent.at >= vm.created_at)
    if not may(user, "audit.view"):
        events = events.where(or_(AuditEvent.actor_id == user.id, AuditEvent.result.in_(("ok", "accepted"))))
    found = db.session.scalars(events.order_by(AuditEvent.id.desc()).limit(limit))
    return dict(operations=list(ops), events=list(found))


@dataclass
class Task:
    op: Operation
    vm_name: str  # the VM's name now, or as the audit log last named it once it is gone
    vm_exists: bool


def tasks(user: User, limit: int = 50) -> list[Task]:
    """The Operations ``user`` asked for, newest first, with the name of the VM each was on."""
    ops = list(
        db.session.scalars(
            select(Operation).where(Operation.user_id == user.id).order_by(Operation.id.desc()).limit(limit)
        )
    )
    uuids = {op.vm_uuid for op in ops}
    names = dict(db.session.execute(select(VM.uuid, VM.name).where(VM.uuid.in_(uuids))).all())
    gone = uuids - set(names)
    said = {}
    if gone:
        found = db.session.execute(
            select(AuditEvent.vm_uuid, AuditEvent.vm_name)
            .where(AuditEvent.vm_uuid.in_(gone), AuditEvent.vm_name.is_not(None))
            .order_by(AuditEvent.id)
        )
        said = {uuid: name for uuid, name in found}
    return [
        Task(op, names.get(op.vm_uuid) or said.get(op.vm_uuid) or op.vm_uuid[:8], op.vm_uuid in names) for op in ops
    ]


def stats(user: User, vm_uuid: str) -> dict[str, object]:
    """The VM's recent CPU, memory, disk and network, as its graphs draw them."""
    vm = get_vm(user, vm_uuid)
    try:
        return runtime.on(vm.uuid).stats.series(vm.uuid)  # each host's sampler keeps its own VMs'
    except HostDisabled:  # nothing is sampled there, and its points went with its sampler
        return series([], float(current_app.config["STATS_INTERVAL"]))


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
