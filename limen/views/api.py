"""/api/v1: the JSON API for scripts, over the same use cases as the pages.

Every call but POST /auth/tokens and GET /openapi.json needs ``Authorization: Bearer
<token>``; session cookies are not accepted here (so there is no CSRF to check). Errors are
``{"error": {"code", "message", "details"}}`` with the codes the pages use.
"""

import json
from datetime import UTC, datetime

from flask import Blueprint, g, jsonify, render_template, request

from .. import accounts, media, vms
from ..accounts import tokens
from ..errors import LimenError, TokenInvalid, ValidationFailed
from ..extensions import csrf
from ..forms import whole_number
from ..models import VM, Forward, Operation
from . import api_schema, limits
from . import openapi as contract
from .console import new_ticket
from .media import medium_json, upload_from_request

PREFIX = "/api/v1"
bp = Blueprint("api", __name__, url_prefix=PREFIX)
csrf.exempt(bp)
PUBLIC = {"api.create_token", "api.openapi"}


@bp.before_request
def bearer_token():
    if request.endpoint in PUBLIC:
        return
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid(
            "Send 'Authorization: Bearer <token>'. Make a token on your account page, or with POST /api/v1/auth/tokens."
        )
    g.api_user = tokens.authenticate(token.strip())


def _stamp(value: datetime | None) -> str | None:
    return value.replace(tzinfo=UTC).isoformat() if value else None


def operation_json(op: Operation | None) -> dict | None:
    if op is None:
        return None
    error = {"code": op.error_code, "message": op.error_message} if op.state == "failed" else None
    return {
        "id": op.id,
        "kind": op.kind,
        "vm_uuid": op.vm_uuid,
        "state": op.state,
        "step": op.step,
        "steps": op.steps,
        "error": error,
        "created_at": _stamp(op.created_at),
        "finished_at": _stamp(op.finished_at),
    }


def _forward(f: Forward) -> dict:
    return {
        "id": f.id,
        "protocol": f.protocol,
        "host_address": f.host_address,
        "host_port": f.host_port,
        "guest_port": f.guest_port,
    }


def _vm(vm: VM, op: Operation | None = None) -> dict:
    guest = vm.guest or {}
    running = vm.state == "running"  # what a stopped guest said last is not shown as true
    return {
        "uuid": vm.uuid,
        "name": vm.name,
        "owner": vm.owner.username,
        "state": vm.state,
        "state_reason": vm.state_reason,
        "vcpus": vm.vcpus,
        "memory_mib": vm.memory_mib,
        "disk_gib": vm.disk_gib,
        "snapshots": vm.snapshots,
        "snapshot_mib": vm.snapshot_mib,
        "description": vm.description or "",
        "pending": {"vcpus": vm.pending_vcpus or vm.vcpus, "memory_mib": vm.pending_memory_mib or vm.memory_mib}
        if vm.pending_vcpus or vm.pending_memory_mib
        else None,
        "adopted": vm.adopted,
        "created_at": _stamp(vm.created_at),
        "state_seen_at": _stamp(vm.state_seen_at),
        "os_kind": vm.os_kind,
        "machine": vm.machine,
        "disk_bus": vm.disk_bus,
        "nic_model": vm.nic_model,
        "firmware": vm.firmware,
        "iso": vm.iso.name if vm.iso else None,
        "image": vm.image.name if vm.image else None,
        "boot_cdrom": vm.boot_cdrom,
        "network": vm.network,
        "host": vm.host.name,
        "forwards": [_forward(f) for f in vm.forwards],
        "address": vm.address if running else None,
        "guest_agent": guest.get("agent") if running else None,
        "hostname": guest.get("hostname") if running else None,
        "os": guest.get("os") if running else None,
        "address_source": guest.get("source") if running else None,
        "interfaces": [
            {**nic, "addresses": nic["addresses"] if running else []} for nic in guest.get("interfaces", [])
        ],
        "operation": operation_json(op),
    }


def _user(a: accounts.Account) -> dict:
    return {
        "id": a.user.id,
        "username": a.user.username,
        "role": a.user.role,
        "disabled": a.user.disabled,
        "quota": vars(a.quota),
        "usage": vars(a.usage),
    }


def _whole(name: str, default: int, low: int, high: int) -> int:
    value = whole_number(request.args.get(name, str(default)), low, high)
    if value is None:
        raise ValidationFailed({name: f"Enter a whole number from {low} to {high}."})
    return value


# -- tokens -------------------------------------------------------------------------------
@bp.post("/auth/tokens")
@limits.per_username  # per address too, shared with /login (limits.per_address)
def create_token():
    body = api_schema.check(api_schema.TOKEN_CREATE, request.get_json(silent=True))
    new = tokens.create_with_password(body["username"], body["password"], body["name"], body.get("expires_days"))
    return jsonify(id=new.row.id, name=new.row.name, token=new.token, expires_at=_stamp(new.row.expires_at)), 201


# -- VMs ----------------------------------------------------------------------------------
@bp.get("/vms")
def list_vms():
    number, per_page = _whole("page", 1, 1, 10**6), _whole("per_page", 100, 1, 500)
    rows, total = vms.table.api_page(
        g.api_user,
        owner=request.args.get("owner", ""),
        state=request.args.get("state", ""),
        number=number,
        per_page=per_page,
    )
    return jsonify(items=[_vm(r.vm, r.op) for r in rows], page=number, per_page=per_page, total=total)


@bp.post("/vms")
def create_vm():
    body = api_schema.check(api_schema.VM_CREATE, request.get_json(silent=True))
    op = vms.request_create(g.api_user, body)
    vm = vms.get_vm(g.api_user, op.vm_uuid)
    return jsonify(vm=_vm(vm, op), operation=operation_json(op)), 202


@bp.post("/vms/<uuid:vm_uuid>/clone")
def clone_vm(vm_uuid):
    body = api_schema.check(api_schema.VM_CLONE, request.get_json(silent=True))
    op = vms.request_clone(g.api_user, str(vm_uuid), body)
    return jsonify(vm=_vm(vms.get_vm(g.api_user, op.vm_uuid), op), operation=operation_json(op)), 202


def _one_vm(vm: VM, op: Operation | None = None) -> dict:
    """One VM's answer: the table's fields, and what only libvirt knows (its boot order)."""
    try:
        _drives, boot_order = vms.disks.boot(g.api_user, vm.uuid)
    except LimenError:
        boot_order = None
    return {**_vm(vm, op), "boot_order": boot_order}


@bp.get("/vms/<uuid:vm_uuid>/stats")
def vm_stats(vm_uuid):
    return jsonify(vms.stats(g.api_user, str(vm_uuid)))


@bp.get("/vms/<uuid:vm_uuid>")
def get_vm(vm_uuid):
    row = vms.row(g.api_user, str(vm_uuid))
    return jsonify(_one_vm(row.vm, row.op))


@bp.delete("/vms/<uuid:vm_uuid>")
def delete_vm(vm_uuid):
    op = vms.request_delete(g.api_user, str(vm_uuid))
    return jsonify(operation=operation_json(op)), 202


@bp.post("/vms/<uuid:vm_uuid>/actions/<any(start, shutdown, 'force-off', reboot, pause, resume):action>")
def act(vm_uuid, action):
    op = vms.request_action(g.api_user, str(vm_uuid), action)
    return jsonify(operation=operation_json(op)), 202


@bp.post("/vms/<uuid:vm_uuid>/console")
def console_ticket(vm_uuid):
    body = request.get_json(silent=True) if request.content_length else {}
    kind = api_schema.check(api_schema.CONSOLE, body).get("kind", "screen")
    return new_ticket(g.api_user, vm_uuid, kind)


def _snapshot(s) -> dict:
    return {
        "name": s.name,
        "description": s.description,
        "created_at": s.created.isoformat(),
        "vm_state": s.vm_state,
        "memory": s.memory,
        "parent": s.parent,
        "current": s.current,
    }


@bp.get("/vms/<uuid:vm_uuid>/snapshots")
def list_snapshots(vm_uuid):
    return jsonify([_snapshot(s) for s in vms.list_snapshots(g.api_user, str(vm_uuid))])


@bp.post("/vms/<uuid:vm_uuid>/snapshots")
def take_snapshot(vm_uuid):
    body = api_schema.check(api_schema.SNAPSHOT_CREATE, request.get_json(silent=True))
    op = vms.request_snapshot(g.api_user, str(vm_uuid), body)
    return jsonify(operation=operation_json(op)), 202


@bp.post("/vms/<uuid:vm_uuid>/snapshots/<name>/revert")
def revert_snapshot(vm_uuid, name):
    return jsonify(operation=operation_json(vms.request_revert(g.api_user, str(vm_uuid), name))), 202


@bp.delete("/vms/<uuid:vm_uuid>/snapshots/<name>")
def delete_snapshot(vm_uuid, name):
    return jsonify(operation=operation_json(vms.request_snapshot_delete(g.api_user, str(vm_uuid), name))), 202


@bp.patch("/vms/<uuid:vm_uuid>")
def edit(vm_uuid):
    body = api_schema.check(api_schema.VM_PATCH, request.get_json(silent=True))
    vm, _changes = vms.edit(g.api_user, str(vm_uuid), body)
    return jsonify(_one_vm(vm))


def _disk(d) -> dict:
    return {
        "dev": d.dev,
        "bus": d.bus,
        "volume": d.volume,
        "capacity_bytes": d.capacity,
        "allocation_bytes": d.allocation,
        "backing": d.backing,
    }


@bp.get("/vms/<uuid:vm_uuid>/disks")
def list_disks(vm_uuid):
    return jsonify([_disk(d) for d in vms.disks.of(g.api_user, str(vm_uuid))])


@bp.post("/vms/<uuid:vm_uuid>/disks")
def add_disk(vm_uuid):
    body = api_schema.check(api_schema.DISK_SIZE, request.get_json(silent=True))
    return jsonify(_disk(vms.disks.add(g.api_user, str(vm_uuid), body))), 201


@bp.patch("/vms/<uuid:vm_uuid>/disks/<dev>")
def grow_disk(vm_uuid, dev):
    body = api_schema.check(api_schema.DISK_SIZE, request.get_json(silent=True))
    return jsonify(_disk(vms.disks.grow(g.api_user, str(vm_uuid), dev, body)))


@bp.delete("/vms/<uuid:vm_uuid>/disks/<dev>")
def remove_disk(vm_uuid, dev):
    vms.disks.remove(g.api_user, str(vm_uuid), dev)
    return "", 204


def _nic(n) -> dict:
    return {"mac": n.mac, "network": n.network, "model": n.model, "link": "up" if n.link_up else "down"}


@bp.get("/vms/<uuid:vm_uuid>/nics")
def list_nics(vm_uuid):
    return jsonify([_nic(n) for n in vms.nics.of(g.api_user, str(vm_uuid))])


@bp.post("/vms/<uuid:vm_uuid>/nics")
def add_nic(vm_uuid):
    body = api_schema.check(api_schema.NIC_ADD, request.get_json(silent=True))
    return jsonify(_nic(vms.nics.add(g.api_user, str(vm_uuid), body))), 201


@bp.patch("/vms/<uuid:vm_uuid>/nics/<mac>")
def change_nic(vm_uuid, mac):
    body = api_schema.check(api_schema.NIC_PATCH, request.get_json(silent=True))
    return jsonify(_nic(vms.nics.change(g.api_user, str(vm_uuid), mac, body)))


@bp.delete("/vms/<uuid:vm_uuid>/nics/<mac>")
def remove_nic(vm_uuid, mac):
    vms.nics.remove(g.api_user, str(vm_uuid), mac)
    return "", 204


@bp.post("/vms/<uuid:vm_uuid>/cdrom")
def insert_iso(vm_uuid):
    body = api_schema.check(api_schema.CDROM, request.get_json(silent=True))
    vm = vms.insert_iso(g.api_user, str(vm_uuid), body["medium"], boot=bool(body.get("boot")))
    return jsonify(_vm(vm))


@bp.post("/vms/<uuid:vm_uuid>/eject")
def eject(vm_uuid):
    body = api_schema.check(api_schema.EJECT, request.get_json(silent=True))
    vm = vms.eject(g.api_user, str(vm_uuid), boot_from_disk=bool(body.get("boot_from_disk")))
    return jsonify(_vm(vm))


@bp.post("/vms/<uuid:vm_uuid>/forwards")
def add_forward(vm_uuid):
    body = api_schema.check(api_schema.FORWARD_ADD, request.get_json(silent=True))
    return jsonify(_forward(vms.add_forward(g.api_user, str(vm_uuid), body))), 201


@bp.delete("/vms/<uuid:vm_uuid>/forwards/<int:forward_id>")
def remove_forward(vm_uuid, forward_id):
    vms.remove_forward(g.api_user, str(vm_uuid), forward_id)
    return "", 204


# -- the media library --------------------------------------------------------------------
@bp.get("/media")
def list_media():
    return jsonify([medium_json(m) for m in media.library(g.api_user)])


@bp.post("/media")
def upload_medium():
    """The file is the request body (curl -T file or --data-binary @file)."""
    return jsonify(medium_json(upload_from_request(g.api_user))), 201


@bp.delete("/media/<int(max=9223372036854775807):medium_id>")
def delete_medium(medium_id):
    media.delete(g.api_user, medium_id)
    return "", 204


@bp.get("/operations/<int(max=9223372036854775807):op_id>")
def get_operation(op_id):
    return jsonify(operation_json(vms.operation(g.api_user, op_id)))


# -- users (admins) -----------------------------------------------------------------------
@bp.get("/users")
def list_users():
    return jsonify([_user(a) for a in accounts.list_users(g.api_user)])


@bp.post("/users")
def create_user():
    body = api_schema.check(api_schema.USER_CREATE, request.get_json(silent=True))
    user = accounts.create_user(g.api_user, body["username"], body["password"], body.get("role", "user"))
    return jsonify(_user(accounts.account(g.api_user, user.username))), 201


@bp.patch("/users/<int(max=9223372036854775807):user_id>")
def update_user(user_id):
    body = api_schema.check(api_schema.USER_PATCH, request.get_json(silent=True))
    username = accounts.username_of(g.api_user, user_id)
    quota = {k: "" if v is None else str(v) for k, v in body.items() if k.startswith("quota_")}
    accounts.update_user(g.api_user, username, role=body.get("role"), disabled=body.get("disabled"), quota=quota)
    return jsonify(_user(accounts.account(g.api_user, username)))


# -- the contract -------------------------------------------------------------------------
@bp.get("/openapi.json")
def openapi():
    return jsonify(contract.document(request.url_root.rstrip("/") + PREFIX))


docs_bp = Blueprint("api_docs", __name__)


@docs_bp.get("/api/docs")
def docs():
    """The OpenAPI document as a page: rendered here, from the same dict, with no script."""
    root = request.url_root.rstrip("/")
    spec = contract.document(root + PREFIX)
    # As JSON reads, not as a script would need it (tojson escapes ' < > & as \u0027 …): the
    # page escapes it as text.
    schemas = {
        name: json.dumps(schema, indent=2, ensure_ascii=False) for name, schema in spec["components"]["schemas"].items()
    }
    return render_template("api_docs.html", spec=spec, schemas=schemas, root=root)
