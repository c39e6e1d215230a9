"""A VM page's live parts (its head, its screen, its graphs' series), its move to another host,
and the operations page: what the pages poll or load beside the page itself."""

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .. import vms
from ..errors import HypervisorUnavailable, LimenError, VMNotFound
from .vms import _detail_page, is_htmx

bp = Blueprint("hub", __name__)
TASKS = 50  # the operations the tasks page lists


@bp.get("/vms/<uuid:vm_uuid>/screen.png")
def screen(vm_uuid):
    """The running VM's screen now (PNG), for its page's thumbnail."""
    return current_app.response_class(vms.screen(current_user, str(vm_uuid)), mimetype="image/png")


@bp.get("/vms/<uuid:vm_uuid>/head")
def head(vm_uuid):
    """The VM page's head (htmx polls): its state and the actions it allows. Once the VM is
    gone, htmx is given a head that says so, with 286: it stops polling."""
    try:
        row = vms.row(current_user, str(vm_uuid))
    except VMNotFound as gone:
        if not is_htmx():
            raise
        return render_template("vms/_hub_gone.html", error=gone), 286
    return render_template("vms/_hub_head.html", row=row)


@bp.get("/tasks")
def tasks():
    """The operations this user asked for, with their steps and results."""
    return render_template("tasks.html", found=vms.tasks(current_user, TASKS), limit=TASKS)


@bp.get("/vms/<uuid:vm_uuid>/stats")
def stats(vm_uuid):
    """The VM's graphs' series (JSON), as the API's GET /api/v1/vms/{uuid}/stats."""
    return jsonify(vms.stats(current_user, str(vm_uuid)))


@bp.post("/vms/<uuid:vm_uuid>/migrate")
def migrate(vm_uuid):
    """Move the VM to the host the form names (admins); its page follows the Operation."""
    try:
        vms.migrate.request_migrate(current_user, str(vm_uuid), request.form)
    except LimenError as e:
        if e.status >= 500 and not isinstance(e, HypervisorUnavailable):
            raise
        page = _detail_page(vm_uuid)
        return render_template("vms/detail.html", **page, migrate_problem=e), e.status
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid))


@bp.post("/vms/<uuid:vm_uuid>/migrate/cancel")
def cancel_migration(vm_uuid):
    vms.migrate.cancel(current_user, str(vm_uuid))
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid))
