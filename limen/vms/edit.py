"""Changing a VM after it is made: its name (while it is shut off) and description, autostart
with the host, its vCPUs and memory (at once where the running VM can take them, else from its
next start), and the drives it boots from, in order (from its next start).

One request may change several of them. All are checked before any is made; then they are
made under the VM's lock, one short libvirt call each, and if one fails the domain gets its
definition (and autostart) back, so that the VM is as it was. Each change is audited with its
old and new value.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import accounts, audit, runtime
from ..errors import InvalidState, LimenError, ValidationFailed
from ..extensions import db
from ..forms import whole_number
from ..hypervisor import Resources
from ..models import VM, User
from .create import MIN_MEMORY_MIB, NAME_RE
from .lifecycle import idle, not_owned
from .queries import get_vm

DESCRIPTION_MAX = 1000  # characters
FIELDS = ("name", "description", "autostart", "vcpus", "memory_mib", "boot_order")
_TRUE, _FALSE = ("1", "on", "true", "yes"), ("0", "off", "false", "no", "")


@dataclass(frozen=True)
class Change:
    field: str
    old: Any
    new: Any


def settings(user: User, vm_uuid: str) -> dict[str, object]:
    """What the Details page shows beyond the row: autostart, and what the VM runs with and
    its maximums (each None while libvirt cannot say)."""
    vm = get_vm(user, vm_uuid)
    try:
        domains = runtime.on(vm.uuid).hypervisor.domains  # its host disabled: not known either
        return dict(autostart=domains.autostart(vm.uuid), live=domains.resources(vm.uuid, live=True))
    except LimenError:
        return dict(autostart=None, live=None)


@audit.refusals("vm.edit", subject="vm_uuid")
def change(user: User, vm_uuid: str, form: Mapping[str, Any]) -> tuple[VM, list[Change]]:
    """Make the changes ``form`` asks for (any of FIELDS; a field left out stays); returns
    the VM and what changed (nothing when every value was the VM's already). A running VM's
    vCPUs and memory change at once where they can (limen.hypervisor: Domains.resize), else
    from its next start: the row then says they are pending."""
    vm = get_vm(user, vm_uuid, "vm.edit")
    not_owned(vm)
    hv = runtime.on(vm.uuid).hypervisor
    wanted = _validate(vm, form)
    with idle(vm.uuid, wait=False):
        current = runtime.on(vm.uuid).sync.refresh(vm.uuid)
        if current is None:
            raise InvalidState("libvirt has no domain for this VM any more.")
        old = {
            "name": vm.name,
            "description": vm.description or "",
            "autostart": hv.domains.autostart(vm.uuid) if "autostart" in wanted else None,
            "boot_order": hv.vm_disks.boot_order(vm.uuid) if "boot_order" in wanted else None,
            "vcpus": vm.pending_vcpus or vm.vcpus,  # what the VM is set to: its next start brings it
            "memory_mib": vm.pending_memory_mib or vm.memory_mib,
        }
        changes = [Change(f, old[f], v) for f, v in wanted.items() if old[f] != v]
        if not changes:
            return vm, []
        if "name" in wanted and old["name"] != wanted["name"] and current.state != "shutoff":
            raise InvalidState(f"Shut the VM off to rename it; it is {current.state}.")
        new = {c.field: c.new for c in changes}
        if "vcpus" in new or "memory_mib" in new:
            new.setdefault("vcpus", old["vcpus"])
            new.setdefault("memory_mib", old["memory_mib"])
        vm_id, owner_id, uuid, off = vm.id, vm.owner_id, vm.uuid, current.state == "shutoff"
        grows = {f: _counted(vm, f, new.get(f, old[f]), off) - _counted(vm, f, old[f], False) for f in old}
        db.session.commit()  # the claim's write comes first, and holds the database until the end
        accounts.claim_growth(owner_id, max(0, grows["vcpus"]), max(0, grows["memory_mib"]))
        row = db.session.get(VM, vm_id)
        assert row is not None, "the VM's lock keeps its row: a delete is an Operation"
        for field in ("name", "description"):
            if field in new:
                setattr(row, field, new[field])
        if "boot_order" in new:  # what the CD-ROM card says
            row.boot_cdrom = hv.vm_disks.drives(uuid).get(new["boot_order"][0]) == "cdrom"
        try:
            db.session.flush()  # a name taken meanwhile is refused before libvirt is touched
        except IntegrityError:
            db.session.rollback()
            raise ValidationFailed({"name": f"The name {new['name']} is already taken."}) from None
        now = _apply(uuid, old, new)
        if now is not None:  # what it runs with (or starts with), and what waits for the next start
            row.vcpus, row.memory_mib = now.vcpus, now.memory_mib
            row.pending_vcpus = new["vcpus"] if new["vcpus"] != now.vcpus else None
            row.pending_memory_mib = new["memory_mib"] if new["memory_mib"] != now.memory_mib else None
        for c in changes:
            later = c.field in ("vcpus", "memory_mib") and getattr(row, f"pending_{c.field}") is not None
            audit.record("vm.edit", actor=user, vm=row, detail=_detail(c) + (" (from its next start)" if later else ""))
        db.session.commit()
    return row, changes


def _counted(vm: VM, field: str, value: Any, replaces: bool) -> int:
    """What a VM's vCPUs or memory count on the quota when set to ``value``: a running VM keeps
    what it has until its next start, so the larger of that and the value; a shut-off VM's new
    value (``replaces``) alone."""
    if field not in ("vcpus", "memory_mib"):
        return 0
    return int(value) if replaces else max(getattr(vm, field), int(value))


def _apply(uuid: str, old: dict[str, Any], new: dict[str, Any]) -> Resources | None:
    """Make the changes in libvirt; on a failure, give the domain its definition, autostart and
    description back, and raise. A running VM's vCPUs and memory come last (then nothing after
    them can fail: a rename is for a shut-off VM), since what they change at once stays.
    Returns what the VM runs with after a resize (None without one)."""
    hv = runtime.on(uuid).hypervisor
    domains = hv.domains
    before = domains.definition(uuid)
    try:
        if "description" in new:
            domains.set_description(uuid, new["description"])
        if "autostart" in new:
            domains.set_autostart(uuid, new["autostart"])
        if "boot_order" in new:
            hv.vm_disks.set_boot_order(uuid, new["boot_order"])
        now = domains.resize(uuid, new["vcpus"], new["memory_mib"]) if "vcpus" in new or "memory_mib" in new else None
        if "name" in new:
            domains.rename(uuid, new["name"])
    except LimenError:
        db.session.rollback()
        domains.restore(before)
        if "autostart" in new:
            domains.set_autostart(uuid, old["autostart"])
        if "description" in new:  # a running VM's own, too
            domains.set_description(uuid, old["description"])
        raise
    return now


def _validate(vm: VM, form: Mapping[str, Any]) -> dict[str, Any]:
    """The values asked for, each checked; ValidationFailed names every bad one. Nothing reaches
    libvirt before the name has passed the pattern."""
    errors: dict[str, str] = {}
    wanted: dict[str, Any] = {}
    hv = runtime.on(vm.uuid).hypervisor
    if "name" in form:
        name = str(form["name"] or "").strip()
        if not NAME_RE.fullmatch(name):
            errors["name"] = "Use 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit."
        elif name != vm.name and (
            db.session.scalar(select(VM.id).where(VM.name == name)) or hv.domains.name_in_use(name)
        ):
            errors["name"] = f"The name {name} is already taken."
        wanted["name"] = name
    if "description" in form:
        text = str(form["description"] or "").replace("\r\n", "\n").strip()
        if len(text) > DESCRIPTION_MAX:
            errors["description"] = f"Use at most {DESCRIPTION_MAX} characters; this has {len(text)}."
        elif any(ord(ch) < 32 and ch not in "\n\t" for ch in text):
            errors["description"] = "Use text without control characters."
        wanted["description"] = text
    if "autostart" in form:
        raw = form["autostart"]
        value = raw if isinstance(raw, bool) else str(raw).strip().lower()
        if value in (True, *_TRUE):
            wanted["autostart"] = True
        elif value in (False, *_FALSE):
            wanted["autostart"] = False
        else:
            errors["autostart"] = "Say on or off."
    if "boot_order" in form:
        raw = form.getlist("boot_order") if hasattr(form, "getlist") else form["boot_order"]
        devs = [str(d).strip() for d in ([raw] if isinstance(raw, str) else raw or []) if str(d).strip()]
        drives = hv.vm_disks.drives(vm.uuid)
        if not devs:
            errors["boot_order"] = "Choose at least one drive to boot from."
        elif len(set(devs)) != len(devs):
            errors["boot_order"] = "Name each drive once."
        elif unknown := [d for d in devs if d not in drives]:
            errors["boot_order"] = f"The VM has no drive {unknown[0]}; it has {', '.join(drives)}."
        wanted["boot_order"] = devs
    if "vcpus" in form or "memory_mib" in form:
        host = hv.host.limits()
        for field, low, high, unit in (
            ("vcpus", 1, host.cpus, " (the host's CPU count)"),
            ("memory_mib", MIN_MEMORY_MIB, host.memory_mib, " MiB (the host's memory)"),
        ):
            if field not in form:
                continue
            number = whole_number(form[field])
            if number is None:
                errors[field] = "Enter a whole number."
            elif not low <= number <= high:
                errors[field] = f"Choose from {low} to {high}{unit}."
            wanted[field] = number
    unknown = sorted(set(form) - set(FIELDS) - {"csrf_token"})
    if unknown:
        errors[unknown[0]] = f"LIMEN changes only {', '.join(FIELDS)}."
    if not wanted and not errors:
        errors["name"] = f"Say what to change: any of {', '.join(FIELDS)}."
    if errors:
        raise ValidationFailed(errors)
    return wanted


def _detail(c: Change) -> str:
    """What the audit log says: the field, its old and its new value."""

    def shown(value: Any) -> str:
        if c.field == "autostart":
            return "on" if value else "off"
        if c.field == "description":
            return repr(value if len(value) <= 100 else value[:100] + "…")
        if c.field == "boot_order":
            return ", ".join(value) or "nothing"
        return f"{value} MiB" if c.field == "memory_mib" else str(value)

    label = {"vcpus": "vCPUs", "memory_mib": "memory", "boot_order": "boot order"}.get(c.field, c.field)
    return f"{label}: {shown(c.old)} → {shown(c.new)}"
