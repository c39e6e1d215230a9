"""The VM table, its polled rows partial, create, and the actions."""
from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from .. import vms
from ..errors import ValidationFailed
from ..extensions import services

bp = Blueprint("vms", __name__)


@bp.before_request
@login_required
def require_login():
    """Every VM page, partial and action needs a signed-in user."""


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _rows_response(status: int = 200):
    version = services().changes.token  # read before the rows: a change in between shows next poll
    return render_template("vms/_rows.html", rows=vms.table(current_user), version=version), status


@bp.get("/")
def index():
    version = services().changes.token
    return render_template("vms/index.html", rows=vms.table(current_user), version=version,
                           form={}, errors={})


@bp.get("/vms/rows")
def rows():
    """The table body for htmx polls: 204 and no body when nothing changed since ``v``."""
    if request.args.get("v") == services().changes.token:
        return "", 204
    return _rows_response()


@bp.post("/vms")
def create():
    try:
        vms.request_create(current_user, request.form)
    except ValidationFailed as e:
        if is_htmx():
            return render_template("vms/_create_form.html", form=request.form, errors=e.fields), 422
        version = services().changes.token
        return render_template("vms/index.html", form=request.form, errors=e.fields,
                               rows=vms.table(current_user), version=version), 422
    if not is_htmx():
        return redirect(url_for("vms.index"))
    # A fresh form, and the table with the new row swapped in out of band.
    version = services().changes.token  # before the rows, as in _rows_response
    return render_template("vms/_create_form.html", form={}, errors={}, oob_rows=True,
                           rows=vms.table(current_user), version=version), 201


@bp.post("/vms/<uuid:vm_uuid>/<any(start, shutdown, 'force-off', reboot):action>")
def action(vm_uuid, action):
    vms.request_action(current_user, str(vm_uuid), action)
    return _rows_response(202) if is_htmx() else redirect(url_for("vms.index"))


@bp.get("/vms/<uuid:vm_uuid>/status")
def status(vm_uuid):
    """One VM's state, the step of an action under way, and the last failure (JSON)."""
    row = vms.row(current_user, str(vm_uuid))
    failure = row.failure or (row.op if row.vm.state == "error" and row.op and not row.op.active else None)
    return jsonify(
        state=row.vm.state, reason=row.vm.state_reason,
        step=row.op.step if row.op and row.op.active else None,
        error={"code": failure.error_code, "message": failure.error_message} if failure else None)


@bp.post("/vms/<uuid:vm_uuid>/delete")
def delete(vm_uuid):
    vms.request_delete(current_user, str(vm_uuid))
    return _rows_response(202) if is_htmx() else redirect(url_for("vms.index"))
