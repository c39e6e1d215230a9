"""A VM's network: what its NIC is attached to (chosen at create), and the host ports that
reach a user-mode guest (SSH's port 22 from the start, and any guest port its owner adds).
Ports come from FORWARD_PORTS on FORWARD_ADDRESS, one VM's each; the sync applies them whenever
the VM starts, and a change to a running VM's applies at once."""

import socket
from collections.abc import Mapping
from typing import Any

from flask import current_app
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from .. import audit, runtime
from ..access import vm_for
from ..errors import ForwardNotFound, LimenError, PortInUse, ValidationFailed
from ..extensions import db
from ..hypervisor import Attachment, Hypervisor, parse_network
from ..models import VM, Forward, User
from .lifecycle import idle, not_owned

SSH = 22


def choices() -> list[Attachment]:
    """What the create form offers: user mode, libvirt's networks, the host's bridges. While
    libvirt is unreachable, user mode only (the page must still show)."""
    try:
        return runtime.get().hypervisor.networks.attachments()
    except LimenError:
        return [Attachment("user")]


def validate(form: Mapping[str, Any], errors: dict[str, str], hv: Hypervisor) -> str:
    """The form's ``network`` (default: the configured one), checked against what the host
    ``hv`` has; a problem goes into ``errors["network"]``."""
    chosen = str(form.get("network", "") or current_app.config["NETWORK"]).strip()
    try:
        kind, name = parse_network(chosen)
    except ValueError:
        errors["network"] = 'Choose "user", "network:<name>", "bridge:<name>" or "none".'
        return chosen
    if kind == "none":
        return kind
    chosen = f"{kind}:{name}" if name else kind  # a bare name is a libvirt network, as NETWORK takes it
    offered = {a.choice: a for a in hv.networks.attachments()}
    found = offered.get(chosen)
    if found is None:
        what = "libvirt network" if kind == "network" else "host bridge"
        errors["network"] = f"There is no {what} {name}; choose one of: {', '.join(offered)}."
    elif not found.active:
        errors["network"] = f"The libvirt network {found.name} is not active; start it (virsh net-start) first."
    return chosen


def port_range() -> range:
    low, _, high = str(current_app.config["FORWARD_PORTS"]).partition("-")
    return range(int(low), int(high or low) + 1)


def _free_on_host(address: str, port: int, protocol: str = "tcp") -> bool:
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, kind) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True


def allocate(vm: VM, guest_port: int = SSH, protocol: str = "tcp") -> Forward:
    """Give ``vm`` a host port for ``guest_port``: the lowest in the range that no VM holds
    and nothing on the host listens on. The caller flushes and commits (a port taken by
    another request meanwhile fails the unique constraint there). PortInUse when the range
    is full."""
    address = current_app.config["FORWARD_ADDRESS"]
    held = set(db.session.scalars(select(Forward.host_port)))
    for port in port_range():
        if port not in held and _free_on_host(address, port, protocol):
            return Forward(vm=vm, protocol=protocol, host_address=address, host_port=port, guest_port=guest_port)
    ports = port_range()
    raise PortInUse(f"Every host port from {ports.start} to {ports.stop - 1} is taken (FORWARD_PORTS); none is left.")


def ssh_command(vm: VM) -> str | None:
    """How to sign in to a user-mode VM from the host, or None without an SSH forward."""
    forward = next((f for f in vm.forwards if f.guest_port == SSH), None)
    if forward is None:
        return None
    user = (vm.cloud_init or {}).get("user", "<user>")
    return f"ssh -p {forward.host_port} {user}@{forward.host_address}"


def _guest_port(form: Mapping[str, Any]) -> tuple[str, int]:
    """The form's protocol and guest port, or ValidationFailed."""
    errors = {}
    protocol = str(form.get("protocol", "") or "tcp").strip().lower()
    if protocol not in ("tcp", "udp"):
        errors["protocol"] = "Choose tcp or udp."
    raw = str(form.get("guest_port", "")).strip()
    port = int(raw) if raw.isdigit() else 0
    if not 1 <= port <= 65535:
        errors["guest_port"] = "A guest port is a whole number from 1 to 65535."
    if errors:
        raise ValidationFailed(errors)
    return protocol, port


def _described(f: Forward) -> str:
    return f"{f.host_address}:{f.host_port} to guest port {f.guest_port}/{f.protocol}"


def _apply_if_running(vm_uuid: str) -> None:
    """A VM whose QEMU runs gets its forwards now; one that is off gets them at its start."""
    current = runtime.on(vm_uuid).hypervisor.domains.state(vm_uuid)
    if current is not None and current.state in ("running", "paused"):
        runtime.on(vm_uuid).sync.apply_forwards(vm_uuid)


@audit.refusals("vm.forward-add", subject="vm_uuid")
def add_forward(user: User, vm_uuid: str, form: Mapping[str, Any]) -> Forward:
    """Forward a new host port to ``form``'s guest port of a user-mode VM: kept with the VM,
    and listening at once if it runs. Nothing is kept when the port cannot be opened."""
    vm = vm_for(user, vm_uuid, "vm.forwards")
    not_owned(vm)
    protocol, guest_port = _guest_port(form)
    if vm.network != "user":
        raise ValidationFailed({"guest_port": "Only a user-mode VM needs forwards; reach it on its own address."})
    limit = current_app.config["FORWARDS_PER_VM"]
    with idle(vm.uuid):
        if any((f.protocol, f.guest_port) == (protocol, guest_port) for f in vm.forwards):
            raise ValidationFailed({"guest_port": f"Guest port {guest_port}/{protocol} is forwarded already."})
        if len(vm.forwards) >= limit:
            raise ValidationFailed({"guest_port": f"A VM has at most {limit} forwarded ports (FORWARDS_PER_VM)."})
        forward = allocate(vm, guest_port, protocol)
        db.session.add(forward)
        try:
            db.session.commit()
        except IntegrityError:  # another VM's request took the same port meanwhile
            db.session.rollback()
            raise PortInUse("Another VM took that host port at the same moment; try again.") from None
        try:
            _apply_if_running(vm.uuid)  # on failure it has removed what it added: the row goes too
        except LimenError:
            db.session.delete(forward)
            db.session.commit()
            raise
        audit.record("vm.forward-add", actor=user, vm=vm, detail=_described(forward))
        db.session.commit()
        return forward


@audit.refusals("vm.forward-remove", subject="vm_uuid")
def remove_forward(user: User, vm_uuid: str, forward_id: int) -> None:
    """Stop forwarding one of the VM's host ports (at once if it runs); the port is free again."""
    vm = vm_for(user, vm_uuid, "vm.forwards")
    not_owned(vm)
    with idle(vm.uuid):
        forward = next((f for f in vm.forwards if f.id == forward_id), None)
        if forward is None:
            raise ForwardNotFound()
        detail = _described(forward)
        db.session.delete(forward)
        db.session.commit()
        _apply_if_running(vm.uuid)
        audit.record("vm.forward-remove", actor=user, vm=vm, detail=detail)
        db.session.commit()
