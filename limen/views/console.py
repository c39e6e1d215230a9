"""The console page, its tickets, and the WebSocket that bridges to the VM's VNC server."""

from datetime import UTC

from flask import Blueprint, Response, jsonify, render_template, request, url_for
from flask_login import current_user

from .. import console, errors, vms
from ..extensions import sock

bp = Blueprint("console", __name__)


@bp.get("/vms/<uuid:vm_uuid>/console")
def page(vm_uuid):
    vm = vms.get_vm(current_user, str(vm_uuid), "vm.console")
    return render_template("vms/console.html", vm=vm, sentences=errors.sentences())


def new_ticket(user, vm_uuid) -> tuple[Response, int]:
    """A console ticket and the WebSocket URL to open with it (201): the page's and the API's."""
    t = console.issue(user, str(vm_uuid))
    # A WebSocket rule builds a ws:// (or wss://) URL.
    ws_url = url_for("console.websocket", vm_uuid=vm_uuid, ticket=t.ticket, _external=True)
    return jsonify(ticket=t.ticket, ws_url=ws_url, expires_at=t.expires_at.replace(tzinfo=UTC).isoformat()), 201


@bp.post("/vms/<uuid:vm_uuid>/console/ticket")
def ticket(vm_uuid):
    return new_ticket(current_user, vm_uuid)


@bp.before_app_request
def plain_websocket_frames():
    """VNC data is compressed already; permessage-deflate would only burn CPU on it, and
    simple-websocket accepts it whenever it is offered. Not offered, it is not used."""
    if request.endpoint == "console.websocket":
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
