"""Clones: a new VM from a shut-off VM's disk, with its own name, UUID, MACs (libvirt chooses
them), disk and forwarded ports, and, for a VM made from a cloud image, a cloud-init seed of its
own (its hostname is its name, and a new instance id makes cloud-init set up the clone anew).

The disk is a full copy through the pool, or a linked clone: a qcow2 overlay that reads what it
has not written from the source's disk. The source is then the clones' base: it may not start,
change or be deleted while they exist (VM_HAS_LINKED_CLONES). The clone is shut off when it is
ready, and belongs to whoever asked for it; it counts against their quota, claimed atomically
as a create's."""

import uuid as uuidlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from .. import accounts, audit, cloudinit, media, runtime
from ..errors import InvalidState, ValidationFailed
from ..extensions import db
from ..models import CREATING, VM, Operation, User
from ..operations import OpContext, handler
from .create import GIB, NAME_RE, add_new
from .jobs import create_failed, create_interrupted, define, domain_spec, seed_for
from .lifecycle import data_volume_prefix, idle, not_owned, submit, volume_name
from .queries import get_vm

FULL, LINKED = "full", "linked"


def _validate(source: VM, form: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(name, disk, password hash) of a clone request; ValidationFailed naming each field."""
    hv = runtime.on(source.uuid).hypervisor
    errors = {}
    name = str(form.get("name", "") or "").strip()
    disk = str(form.get("disk", FULL) or FULL)
    password = str(form.get("ci_password", "") or "")
    if not NAME_RE.fullmatch(name):
        errors["name"] = "Use 1 to 63 lower-case letters, digits and hyphens, starting with a letter or digit."
    elif db.session.scalar(select(VM.id).where(VM.name == name)) or hv.domains.name_in_use(name):
        errors["name"] = f"The name {name} is already taken."
    if disk not in (FULL, LINKED):
        errors["disk"] = "A full copy, or a linked clone on the source's disk."
    elif disk == FULL and source.disk_gib > hv.disks.free_bytes() // GIB:
        errors["disk"] = f"The storage pool {hv.disks.name} has too little room for a {source.disk_gib} GiB copy."
    if password and (source.image is None or not (8 <= len(password) <= 256 and cloudinit.printable(password))):
        errors["ci_password"] = (
            "Use 8 to 256 characters, and no control characters (newlines), or leave it empty."
            if source.image is not None
            else "Only a VM made from a cloud image has a cloud-init account to set a password for."
        )
    if errors:
        raise ValidationFailed(errors)
    return name, disk, cloudinit.hash_password(password) if password else None


@audit.refusals("vm.clone", subject="vm_uuid")
def request_clone(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Operation:
    """Check the request and the source (shut off, LIMEN's own), claim the quota, write the
    clone's row (creating) and its Operation, and queue it; the source stays busy until it ends."""
    source = get_vm(user, vm_uuid, "vm.clone")
    not_owned(source)
    if source.adopted:
        raise InvalidState("LIMEN clones the VMs it made; an adopted VM's disks are not LIMEN's.")
    name, disk, password_hash = _validate(source, form)
    with idle(source.uuid):
        current = runtime.on(source.uuid).sync.refresh(source.uuid)
        if current is None or current.state != "shutoff":
            raise InvalidState(f"Shut the VM down to clone it (it is {current.state if current else 'missing'}).")
        data = runtime.on(source.uuid).hypervisor.disks.names(data_volume_prefix(source.uuid))
        if data:
            raise InvalidState(
                f"LIMEN clones a VM's boot disk, and this one has {len(data)} data disk{'s' if len(data) > 1 else ''}"
                " too: take them away first, or make the new VM and copy what they hold."
            )
        values = dict(
            vcpus=source.vcpus,
            memory_mib=source.memory_mib,
            disk_gib=source.disk_gib,
            os_kind=source.os_kind,
            machine=source.machine,
            disk_bus=source.disk_bus,
            nic_model=source.nic_model,
            firmware=source.firmware,
            image_id=source.image_id,
            network=source.network,
        )
        ci = dict(source.cloud_init or {})
        if password_hash:
            ci.update(password=True, password_hash=password_hash)
        else:
            ci["password"] = False  # the source's password hash was not kept
        owner_id, source_uuid, image_id, host_id = user.id, source.uuid, source.image_id, source.host_id
        size = (source.vcpus, source.memory_mib, source.disk_gib)
        db.session.commit()  # the claim's write comes first
        accounts.claim(owner_id, *size)
        if image_id is not None and not media.claim(image_id):
            db.session.rollback()
            raise ValidationFailed({"name": "The image the VM is built on is being deleted."})
        clone = VM(
            uuid=str(uuidlib.uuid4()),
            name=name,
            host_id=host_id,  # its disk is made from the source's, in the same pool
            owner_id=owner_id,
            state=CREATING,
            boot_cdrom=False,
            cloud_init=ci if image_id is not None else None,
            **values,
        )
        add_new(clone)  # with a forward of its own
        return submit(user, clone, "clone", {"source": source_uuid, "disk": disk}, f"of {source_uuid}: {disk}")


@handler("clone", on_failure=create_failed, on_interrupted=create_interrupted)
def run_clone(ctx: OpContext) -> None:
    rt = runtime.on(ctx.vm_uuid)
    hv = rt.hypervisor
    params = ctx.op.params or {}
    clone = db.session.scalar(select(VM).where(VM.uuid == ctx.vm_uuid))
    assert clone is not None, "a clone's row exists until its Operation ends"
    source = db.session.scalar(select(VM).where(VM.uuid == params["source"]))
    if source is None:
        raise InvalidState("The VM it was cloned from is gone.")
    uuid, volume, origin, origin_name = clone.uuid, volume_name(clone.uuid), volume_name(source.uuid), source.name
    spec, seed, disk_gib = domain_spec(clone), seed_for(clone), clone.disk_gib
    db.session.commit()  # no database connection held during the copy
    if params["disk"] == LINKED:
        ctx.step(f"Creating a linked disk on {origin_name}'s")
        hv.disks.create_volume(volume, disk_gib, backing=hv.disks.path(origin))
    else:
        ctx.step(f"Copying {origin_name}'s disk")
        hv.disks.copy_volume(origin, volume)
    ctx.undo("delete the disk", lambda: hv.disks.delete_volume(volume))
    define(ctx, spec, seed)
    rt.sync.hand_back(uuid)  # shut off, ready to start
