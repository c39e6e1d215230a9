"""Creating a VM: the form's choices, validation against the rules and the host, and the
request that claims the quota, writes the row and queues the create Operation."""

import re
import uuid as uuidlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import accounts, audit, cloudinit, media, runtime
from ..access import authorize
from ..errors import LimenError, PortInUse, ValidationFailed
from ..extensions import db
from ..forms import whole_number
from ..models import CREATING, IMAGE, ISO, LOCAL_HOST, VM, Medium, Operation, User
from ..profiles import FIRMWARE, KINDS, Profile, profile
from . import network, placement
from .lifecycle import submit

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
MIN_MEMORY_MIB = 64
GIB = 1024**3
Form = Mapping[str, Any]  # a form, or a JSON body
LINUX = profile("linux")


@dataclass(frozen=True)
class VMSpec:
    name: str
    vcpus: int
    memory_mib: int
    disk_gib: int
    profile: Profile = LINUX
    iso_id: int | None = None  # install from this ISO: in the CD-ROM drive, booted first
    image_id: int | None = None  # built on this cloud image, with a cloud-init seed
    cloud_init: dict[str, Any] | None = None
    network: str = "user"  # what its NIC is attached to (vms.network)
    host_id: int = LOCAL_HOST  # where it is made (vms.placement)


def create_choices(user: User) -> dict[str, object]:
    """What the create form offers: the library's ISOs and images, the OS kinds, and the
    firmware kinds (UEFI only where the host has OVMF; unknown while libvirt is unreachable,
    and then not offered: the page must still show the table)."""
    try:
        uefi = runtime.get().hypervisor.host.uefi_available()
    except LimenError:
        uefi = False
    library = media.usable(user)
    account = accounts.account_of(user)
    return dict(
        account=account,
        defaults=_defaults(account),
        isos=[m for m in library if m.kind == ISO],
        images=[m for m in library if m.kind == IMAGE],
        os_kinds=KINDS,
        firmwares=FIRMWARE,
        uefi=uefi,
        networks=network.choices(),
        hosts=placement.choices(),
        default_network=current_app.config["NETWORK"],
    )


DEFAULTS = {"vcpus": 1, "memory_mib": 512, "disk_gib": 10}


def _defaults(account: accounts.Account) -> dict[str, int]:
    """What the create form starts with: LIMEN's defaults, made smaller where the user's quota
    has less room left (and still room for the smallest VM)."""
    q, u = account.quota, account.usage
    defaults = dict(DEFAULTS)
    for field, limit, used, low in (
        ("vcpus", q.vcpus, u.vcpus, 1),
        ("memory_mib", q.memory_mib, u.memory_mib, MIN_MEMORY_MIB),
        ("disk_gib", q.disk_gib, u.disk_gib, 1),
    ):
        if limit is not None and low <= limit - used < defaults[field]:
            defaults[field] = limit - used
    return defaults


def _source(user: User, form: Form, errors: dict[str, str]) -> tuple[Medium | None, Medium | None]:
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


def _profile(form: Form, default_os: str, errors: dict[str, str]) -> Profile:
    os_kind = str(form.get("os_kind", "") or default_os)
    firmware = str(form.get("firmware", "") or "bios")
    if os_kind not in KINDS:
        errors["os_kind"] = f"Choose one of: {', '.join(KINDS)}."
        os_kind = "linux"
    if firmware not in FIRMWARE:
        errors["firmware"] = f"Choose one of: {', '.join(FIRMWARE)}."
        firmware = "bios"
    elif firmware == "uefi" and not runtime.get().hypervisor.host.uefi_available():
        errors["firmware"] = "UEFI firmware (OVMF) is not installed on the host; choose BIOS."
    virtio = str(form.get("virtio", "")).lower() in ("1", "on", "true", "yes")
    return profile(os_kind, firmware, virtio)


def _cloud_init(form: Form, errors: dict[str, str]) -> dict[str, Any]:
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
    return {
        "user": user,
        "ssh_key": key or None,
        "password": bool(password),
        "password_hash": cloudinit.hash_password(password) if password else None,
    }


def _whole(form: Form, field: str, errors: dict[str, str]) -> int | None:
    value = whole_number(form.get(field, ""))
    if value is None:
        errors[field] = "Enter a whole number."
    return value


def validate(user: User, form: Form) -> VMSpec:
    """Check a create request against the rules and what the host has; raise
    ValidationFailed with a message per field. Nothing reaches libvirt before the name has
    passed the pattern."""
    errors: dict[str, str] = {}
    name = str(form.get("name", "")).strip()
    vcpus = _whole(form, "vcpus", errors)
    memory_mib = _whole(form, "memory_mib", errors)
    disk_gib = _whole(form, "disk_gib", errors)
    iso, image = _source(user, form, errors)
    source = iso or image
    chosen = _profile(form, source.os_kind if source else "linux", errors)
    cloud = _cloud_init(form, errors) if image is not None else None
    host_runtime, attached = placement.place(
        form, errors, uses_media=source is not None, disk_bytes=(disk_gib or 0) * GIB
    )
    hv = host_runtime.hypervisor

    if not NAME_RE.fullmatch(name):
        errors["name"] = "Use 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit."
    elif db.session.scalar(select(VM.id).where(VM.name == name)) or hv.domains.name_in_use(name):
        errors["name"] = f"The name {name} is already taken."

    host = hv.host.limits()
    if vcpus is not None and not 1 <= vcpus <= host.cpus:
        errors["vcpus"] = f"Choose from 1 to {host.cpus} (the host's CPU count)."
    if memory_mib is not None and not MIN_MEMORY_MIB <= memory_mib <= host.memory_mib:
        errors["memory_mib"] = f"Choose from {MIN_MEMORY_MIB} to {host.memory_mib} MiB (the host's memory)."
    if disk_gib is not None:
        free_gib = hv.disks.free_bytes() // GIB
        if disk_gib < 1:
            errors["disk_gib"] = "A disk needs at least 1 GiB."
        elif disk_gib > free_gib:
            errors["disk_gib"] = f"The storage pool {hv.disks.name} has {free_gib} GiB free; {disk_gib} GiB do not fit."
        elif image is not None and disk_gib * GIB < (image.virtual_bytes or 0):
            errors["disk_gib"] = (
                f"The image {image.name} is a {-(-(image.virtual_bytes or 0) // GIB)} GiB disk; choose at least that."
            )
    if errors or vcpus is None or memory_mib is None or disk_gib is None:
        raise ValidationFailed(errors)
    return VMSpec(
        name,
        vcpus,
        memory_mib,
        disk_gib,
        chosen,
        iso.id if iso else None,
        image.id if image else None,
        cloud,
        attached,
        host_runtime.id,
    )


@audit.refusals("vm.create")
def request_create(user: User, form: Form) -> Operation:
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
    vm = VM(
        uuid=str(uuidlib.uuid4()),
        name=spec.name,
        host_id=spec.host_id,
        owner_id=owner_id,
        vcpus=spec.vcpus,
        memory_mib=spec.memory_mib,
        disk_gib=spec.disk_gib,
        state=CREATING,
        os_kind=p.os_kind,
        machine=p.machine,
        disk_bus=p.disk_bus,
        nic_model=p.nic_model,
        firmware=p.firmware,
        iso_id=spec.iso_id,
        boot_cdrom=spec.iso_id is not None,
        image_id=spec.image_id,
        cloud_init=spec.cloud_init,
        network=spec.network,
    )
    add_new(vm)
    return submit(user, vm, "create")


def add_new(vm: VM) -> None:
    """Add a new VM's row (a create's or a clone's) and, for a user-mode NIC, its SSH forward,
    in the caller's transaction; the name or the port taken meanwhile is refused, nothing kept."""
    db.session.add(vm)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"name": f"The name {vm.name} is already taken."}) from None
    if vm.network == "user":  # reached from the host through a forward: SSH first
        try:
            db.session.add(network.allocate(vm))
            db.session.flush()
        except PortInUse:
            db.session.rollback()
            raise
        except IntegrityError:
            db.session.rollback()
            raise PortInUse("Another VM took the same host port at the same moment; try again.") from None
