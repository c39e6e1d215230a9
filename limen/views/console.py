"""The console pages (the VM's screen and its serial line), their tickets, and the WebSockets
that bridge to the VM's VNC server and to its serial console."""

from datetime import UTC

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask_login import current_user

from .. import console, errors, vms
from ..extensions import sock

bp = Blueprint("console", __name__)


@bp.get("/vms/<uuid:vm_uuid>/console")
def page(vm_uuid):
    vm = vms.get_vm(current_user, str(vm_uuid), "vm.console")
    return render_template("vms/console.html", vm=vm, sentences=errors.sentences(), tab="screen")


@bp.get("/vms/<uuid:vm_uuid>/serial")
def serial_page(vm_uuid):
    vm = vms.get_vm(current_user, str(vm_uuid), "vm.console")
    return render_template("vms/serial.html", vm=vm, sentences=errors.sentences(), tab="serial")


_WEBSOCKETS = {"screen": "console.websocket", "serial": "console.serial_websocket"}


def new_ticket(user, vm_uuid, kind: str = "screen") -> tuple[Response, int]:
    """A console ticket and the WebSocket URL to open with it (201): the page's and the API's."""
    t = console.issue(user, str(vm_uuid), kind)
    # A WebSocket rule builds a ws:// (or wss://) URL.
    ws_url = url_for(_WEBSOCKETS[kind], vm_uuid=vm_uuid, ticket=t.ticket, _external=True)
    return jsonify(ticket=t.ticket, ws_url=ws_url, expires_at=t.expires_at.replace(tzinfo=UTC).isoformat()), 201


@bp.post("/vms/<uuid:vm_uuid>/console/ticket")
def ticket(vm_uuid):
    return new_ticket(current_user, vm_uuid, request.args.get("kind", "screen"))


@bp.before_app_request
def plain_websocket_frames():
    """VNC data is compressed already; permessage-deflate would only burn CPU on it, and
    simple-websocket accepts it whenever it is offered. Not offered, it is not used."""
    if request.endpoint in _WEBSOCKETS.values():
        request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)


@sock.route("/vms/<uuid:vm_uuid>/console/ws", bp=bp, endpoint="websocket")
def websocket(ws, vm_uuid):
    signed_in = current_user.id if current_user.is_authenticated else None
    console.serve(
        ws,
        str(vm_uuid),
        origin=request.headers.get("Origin"),
        own_origin=request.host_url.rstrip("/"),
        ticket=request.args.get("ticket"),
        session_user_id=signed_in,
        authorization=request.headers.get("Authorization"),
    )


@sock.route("/vms/<uuid:vm_uuid>/serial/ws", bp=bp, endpoint="serial_websocket")
def serial_websocket(ws, vm_uuid):
    """The serial line's bytes; ``take_over=1`` disconnects whoever holds it."""
    signed_in = current_user.id if current_user.is_authenticated else None
    console.serve(
        ws,
        str(vm_uuid),
        kind="serial",
        take_over=request.args.get("take_over") == "1",
        origin=request.headers.get("Origin"),
        own_origin=request.host_url.rstrip("/"),
        ticket=request.args.get("ticket"),
        session_user_id=signed_in,
        authorization=request.headers.get("Authorization"),
    )
