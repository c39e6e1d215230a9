"""The background work on VMs: one Operation handler per kind, registered with the runner.
Each names its steps, and a create registers how to undo each one, so a failure leaves no
domain and no volume behind."""

from typing import Any

from flask import current_app
from sqlalchemy import select

from .. import cloudinit, runtime
from ..errors import LimenError, PortInUse, RebootTimeout, ShutdownCutShort, ShutdownTimeout, VMNotRunning
from ..extensions import db
from ..models import CREATING, ERROR, VM, Operation
from ..operations import OpContext, handler
from .lifecycle import WAITING_FOR_POWER_OFF, data_volume_prefix, seed_name, volume_name


def _vm(ctx: OpContext) -> VM | None:
    return db.session.scalar(select(VM).where(VM.uuid == ctx.vm_uuid))


def _wait_running(uuid: str) -> None:
    runtime.on(uuid).hypervisor.domains.wait_for_state(
        uuid, {"running"}, current_app.config["START_TIMEOUT"], VMNotRunning
    )


def create_failed(ctx: OpContext, err: LimenError) -> None:
    runtime.on(ctx.vm_uuid).sync.hand_back(ctx.vm_uuid, error=f"{err.code}: {err.message}")


def create_interrupted(op: Operation, err: LimenError) -> bool:
    """After a restart: True when the create had in fact finished (it had handed its running
    VM back); otherwise what it made is removed, and the row is an error saying so."""
    vm = db.session.scalar(select(VM).where(VM.uuid == op.vm_uuid))
    if vm is None:
        return False
    if vm.state not in (CREATING, ERROR):
        return True
    reason = f"{err.code}: {err.message}"
    hv = runtime.on(vm.uuid).hypervisor
    try:
        if hv.domains.state(vm.uuid) is not None:
            hv.domains.destroy(vm.uuid)
            hv.domains.undefine(vm.uuid)
        hv.disks.delete_volume(volume_name(vm.uuid))
        hv.disks.delete_volume(seed_name(vm.uuid))
        reason += " What it had created was removed; delete this row, or create the VM again."
    except LimenError as e:
        reason += f" Cleaning up failed too ({e.code}); delete the VM to retry."
    vm.state, vm.state_reason = ERROR, reason
    return False


def domain_spec(vm: VM) -> dict[str, Any]:
    """What ``hypervisor.domains.define`` is given for a LIMEN VM's row."""
    return dict(
        uuid=vm.uuid,
        name=vm.name,
        vcpus=vm.vcpus,
        memory_mib=vm.memory_mib,
        volume=volume_name(vm.uuid),
        profile=vm.profile,
        iso=vm.iso.volume if vm.iso else None,
        boot_cdrom=vm.boot_cdrom,
        network=vm.network,
    )


def seed_for(vm: VM) -> bytes | None:
    """The cloud-init seed of a VM made from a cloud image (its hostname is its name), or None.
    The password's hash is dropped from the row once the seed has it: a seed is made once."""
    if vm.image is None:
        return None
    ci = vm.cloud_init or {}
    seed = cloudinit.seed_iso(
        cloudinit.user_data(vm.name, ci["user"], ci["ssh_key"], ci.get("password_hash")),
        cloudinit.meta_data(vm.uuid, vm.name),
    )
    vm.cloud_init = {k: v for k, v in ci.items() if k != "password_hash"}
    return seed


def define(ctx: OpContext, spec: dict[str, Any], seed: bytes | None) -> None:
    """A new VM's last steps before it may run (its disk is made): its seed, if it has one,
    and its definition, each undone if a later step fails."""
    uuid = spec["uuid"]
    hv = runtime.on(uuid).hypervisor
    if seed is not None:
        ctx.step("Writing the cloud-init seed")
        hv.disks.upload(seed_name(uuid), len(seed), [seed])
        ctx.undo("delete the cloud-init seed", lambda: hv.disks.delete_volume(seed_name(uuid)))
        spec["seed"] = seed_name(uuid)
    ctx.step("Defining the VM")
    hv.domains.define(**spec)
    ctx.undo("remove the VM definition", lambda: hv.domains.undefine(uuid))


@handler("create", on_failure=create_failed, on_interrupted=create_interrupted)
def run_create(ctx: OpContext) -> None:
    rt = runtime.on(ctx.vm_uuid)
    hv = rt.hypervisor
    vm = _vm(ctx)
    assert vm is not None, "a create's row exists until the create ends"
    uuid, volume = vm.uuid, volume_name(vm.uuid)
    spec = domain_spec(vm)
    forwards = bool(vm.forwards)
    disk_gib, image = vm.disk_gib, (vm.image.volume, vm.image.name) if vm.image else None
    seed = seed_for(vm)
    db.session.commit()  # plain values from here on: no connection held during the slow steps
    if image is None:
        ctx.step("Creating the disk")
        hv.disks.create_volume(volume, disk_gib)
    else:
        ctx.step(f"Creating the disk on {image[1]}")
        hv.disks.create_volume(volume, disk_gib, backing=hv.media.path(image[0]))
    ctx.undo("delete the disk", lambda: hv.disks.delete_volume(volume))
    define(ctx, spec, seed)
    ctx.step("Starting the VM")
    ctx.undo("power off", lambda: hv.domains.destroy(uuid))
    hv.domains.start(uuid)
    ctx.step("Waiting for it to run")
    _wait_running(uuid)
    if forwards:
        ctx.step("Forwarding host ports to the guest")
        rt.sync.apply_forwards(uuid)
    rt.sync.hand_back(uuid)


@handler("start")
def run_start(ctx: OpContext) -> None:
    rt = runtime.on(ctx.vm_uuid)
    ctx.step("Starting the VM")
    rt.hypervisor.domains.start(ctx.vm_uuid)
    ctx.step("Waiting for it to run")
    _wait_running(ctx.vm_uuid)
    ctx.step("Forwarding host ports to the guest")
    try:
        rt.sync.apply_forwards(ctx.vm_uuid)  # the sync does too when it sees the start; twice is once
    except PortInUse:
        # Nothing half-done: a VM that cannot be reached as its page says is not left running.
        rt.hypervisor.domains.destroy(ctx.vm_uuid)
        raise
    finally:
        rt.sync.refresh(ctx.vm_uuid)


@handler("shutdown")
def run_shutdown(ctx: OpContext) -> None:
    rt = runtime.on(ctx.vm_uuid)
    ctx.step("Asking the guest to shut down (guest agent, else ACPI)")
    rt.hypervisor.domains.shutdown(ctx.vm_uuid)
    ctx.step(WAITING_FOR_POWER_OFF)
    try:
        ended = rt.hypervisor.domains.wait_for_state(
            ctx.vm_uuid, {"shutoff"}, current_app.config["SHUTDOWN_TIMEOUT"], ShutdownTimeout
        )
    finally:
        rt.sync.refresh(ctx.vm_uuid)
    if ended.reason == "forced off":  # a Force off overtook it: the guest did not shut down
        raise ShutdownCutShort()


@handler("force-off")
def run_force_off(ctx: OpContext) -> None:
    ctx.step("Powering off")
    runtime.on(ctx.vm_uuid).hypervisor.domains.destroy(ctx.vm_uuid)
    runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)


@handler("reboot")
def run_reboot(ctx: OpContext) -> None:
    timeout = current_app.config["SHUTDOWN_TIMEOUT"]
    ctx.step(f"Asking the guest to reboot; waiting up to {timeout:g} s for it to restart")
    try:
        runtime.on(ctx.vm_uuid).hypervisor.domains.reboot(ctx.vm_uuid, timeout, RebootTimeout)
    finally:
        runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)


@handler("pause")
def run_pause(ctx: OpContext) -> None:
    ctx.step("Pausing")
    try:
        runtime.on(ctx.vm_uuid).hypervisor.domains.pause(ctx.vm_uuid)
    finally:
        runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)


@handler("resume")
def run_resume(ctx: OpContext) -> None:
    ctx.step("Resuming")
    try:
        runtime.on(ctx.vm_uuid).hypervisor.domains.resume(ctx.vm_uuid)
    finally:
        runtime.on(ctx.vm_uuid).sync.refresh(ctx.vm_uuid)


def _delete_failed(ctx: OpContext, err: LimenError) -> None:
    rt = runtime.on(ctx.vm_uuid)
    try:
        exists = rt.hypervisor.domains.state(ctx.vm_uuid) is not None
    except LimenError:  # libvirt gone too: say so, and let the owner delete again
        exists = False
    if exists:
        rt.sync.hand_back(ctx.vm_uuid)  # what is left of it shows as it is; the failed delete beside it
    else:
        rt.sync.hand_back(ctx.vm_uuid, error=f"Delete failed. {err.code}: {err.message} Delete it again.")


@handler("delete", on_failure=_delete_failed, resume=True)
def run_delete(ctx: OpContext) -> None:
    """Every step checks what is there first, so a delete interrupted anywhere is carried on
    after a restart."""
    hv = runtime.on(ctx.vm_uuid).hypervisor
    vm = _vm(ctx)
    adopted = vm is not None and vm.adopted
    db.session.commit()
    if hv.domains.state(ctx.vm_uuid) is not None:
        ctx.step("Powering off")
        hv.domains.destroy(ctx.vm_uuid)
        ctx.step("Removing the VM definition")
        hv.domains.undefine(ctx.vm_uuid, keep_nvram=adopted)
    if not adopted:  # an adopted VM's disks are not LIMEN's: they stay
        ctx.step("Deleting the disks")
        hv.disks.delete_volume(volume_name(ctx.vm_uuid))
        for data in hv.disks.names(data_volume_prefix(ctx.vm_uuid)):
            hv.disks.delete_volume(data)
        hv.disks.delete_volume(seed_name(ctx.vm_uuid))
    vm = _vm(ctx)
    if vm is not None:
        db.session.delete(vm)
    db.session.commit()
