"""A VM's NICs after it is made, each named by its MAC (libvirt chooses it): added (the network
chosen as at create; plugged in at once while the VM runs), taken away while it is shut off,
its link set up or down (the guest sees its carrier go at once), and its model changed while it
is shut off. Each is one short call under the VM's lock, and audited."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from .. import audit, runtime
from ..errors import InvalidState, LimenError, NicNotFound, ValidationFailed
from ..extensions import db
from ..hypervisor import Interface
from ..hypervisor.vm_nics import MODELS
from ..models import VM, Forward, User
from . import network
from .lifecycle import idle, not_owned
from .queries import get_vm


def of(user: User, vm_uuid: str) -> list[Interface]:
    vm = get_vm(user, vm_uuid)
    return runtime.on(vm.uuid).hypervisor.vm_nics.of(vm.uuid)


def _vm(user: User, vm_uuid: str) -> VM:
    vm = get_vm(user, vm_uuid, "vm.edit")
    not_owned(vm)
    return vm


def _model(form: Mapping[str, Any], default: str) -> str:
    model = str(form.get("model", "") or default)
    if model not in MODELS:
        raise ValidationFailed({"model": f"Choose one of: {', '.join(MODELS)}."})
    return model


@audit.refusals("vm.nic-add", subject="vm_uuid")
def add(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Interface:
    vm = _vm(user, vm_uuid)
    errors: dict[str, str] = {}
    attached = network.validate(form, errors, runtime.on(vm.uuid).hypervisor)
    if attached == "none" and not errors:
        errors["network"] = "A NIC is attached to something: user mode, a libvirt network or a host bridge."
    if errors:
        raise ValidationFailed(errors)
    model = _model(form, vm.nic_model)
    with idle(vm.uuid, wait=False):
        nic = runtime.on(vm.uuid).hypervisor.vm_nics.add(vm.uuid, attached, model)
        if vm.network in (None, "none"):
            vm.network = attached
        audit.record("vm.nic-add", actor=user, vm=vm, detail=f"{nic.mac} on {nic.network} ({nic.model})")
        db.session.commit()
    return nic


@audit.refusals("vm.nic-remove", subject="vm_uuid")
def remove(user: User, vm_uuid: str, mac: str) -> None:
    vm = _vm(user, vm_uuid)
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid, wait=False):
        nics = hv.vm_nics.of(vm.uuid)
        nic = _find(nics, mac)
        users = [n for n in nics if n.network == "user"]
        forwards = db.session.scalar(select(Forward.id).where(Forward.vm_id == vm.id).limit(1))
        if users == [nic] and forwards is not None:
            raise InvalidState("The VM's forwarded ports go through this NIC: remove them first.")
        hv.vm_nics.remove(vm.uuid, nic.mac)
        if len(nics) == 1:
            vm.network = "none"
        audit.record("vm.nic-remove", actor=user, vm=vm, detail=f"{nic.mac} on {nic.network}")
        db.session.commit()


@audit.refusals("vm.nic-change", subject="vm_uuid")
def change(user: User, vm_uuid: str, mac: str, form: Mapping[str, Any]) -> Interface:
    """Set the NIC's ``link`` ("up" or "down") and/or its ``model`` (shut off)."""
    vm = _vm(user, vm_uuid)
    link = form.get("link")
    if link is not None and link not in ("up", "down"):
        raise ValidationFailed({"link": 'Say "up" or "down".'})
    model = _model(form, "") if form.get("model") else None
    if link is None and model is None:
        raise ValidationFailed({"link": "Say what to change: link, or model."})
    hv = runtime.on(vm.uuid).hypervisor
    with idle(vm.uuid, wait=False):
        nic = _find(hv.vm_nics.of(vm.uuid), mac)
        before = hv.domains.definition(vm.uuid)
        done = []
        try:
            if model is not None and model != nic.model:
                hv.vm_nics.set_model(vm.uuid, nic.mac, model)
                done.append(f"model: {nic.model} → {model}")
            if link is not None and (link == "up") != nic.link_up:  # last: nothing after it can fail
                hv.vm_nics.set_link(vm.uuid, nic.mac, link == "up")
                done.append(f"link: {'up' if nic.link_up else 'down'} → {link}")
        except LimenError:
            hv.domains.restore(before)
            raise
        if done:
            audit.record("vm.nic-change", actor=user, vm=vm, detail=f"{nic.mac}: {', '.join(done)}")
            db.session.commit()
        return _find(hv.vm_nics.of(vm.uuid), mac)


def _find(nics: list[Interface], mac: str) -> Interface:
    for nic in nics:
        if nic.mac.lower() == mac.lower():
            return nic
    raise NicNotFound(f"The VM has no NIC {mac}.")
