"""/admin/hosts: the libvirt hosts LIMEN manages. Adding one is a connection test that shows
the host's SSH key, then a second form that keeps the host with that key (limen.hosts)."""

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user

from .. import hosts
from ..errors import LimenError, ValidationFailed

bp = Blueprint("hosts", __name__, url_prefix="/admin/hosts")


def _page(status: int = 200, *, form=None, errors=None, probe=None, failure: LimenError | None = None):
    return render_template(
        "admin/hosts.html",
        hosts=hosts.listing(current_user),
        public_key=hosts.public_key(current_user),
        form=form or {},
        errors=errors or {},
        probe=probe,
        failure=failure,
        done=request.args.get("done"),
        done_host=request.args.get("host", type=int),
    ), status


def _refused(e: LimenError):
    """The page again, with the form as typed: each bad field named, or what went wrong
    (unreachable, or a key that is not the one pinned)."""
    if isinstance(e, ValidationFailed):
        return _page(422, form=request.form, errors=e.fields)
    return _page(e.status, form=request.form, failure=e)


@bp.get("")
def index():
    return _page()


@bp.post("/probe")
def probe():
    try:
        found = hosts.probe(current_user, request.form)
    except LimenError as e:
        return _refused(e)
    return _page(form=request.form, probe=found)


@bp.post("")
def add():
    try:
        host = hosts.add(current_user, request.form)
    except LimenError as e:
        return _refused(e)
    return redirect(url_for("hosts.index", done="added", host=host.id))


@bp.post("/<int:host_id>/<any(enable, disable):action>")
def enable(host_id: int, action: str):
    hosts.set_enabled(current_user, host_id, action == "enable")
    return redirect(url_for("hosts.index", done=f"{action}d", host=host_id))


@bp.post("/<int:host_id>/remove")
def remove(host_id: int):
    hosts.remove(current_user, host_id)
    return redirect(url_for("hosts.index", done="removed"))
