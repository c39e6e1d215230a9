"""The VM table, its polled rows partial, create, and the actions."""

from flask import Blueprint, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .. import accounts, runtime, vms
from ..errors import (
    DiskNotFound,
    InvalidState,
    LimenError,
    NicNotFound,
    QuotaExceeded,
    ValidationFailed,
    VMBusy,
)

bp = Blueprint("vms", __name__)


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def _view() -> vms.table.View:
    """The table's search, filters, sort and page, carried by the page's URL, its polls and
    its forms."""
    return vms.table.View.parse(request.args, current_user)


def _page_key(view: vms.table.View, since: int | str, shown: str) -> tuple:
    """A page as the change token's checks know it: whose, which view, and what it shows."""
    return (current_user.id, view, str(since), shown)


def _around(view: vms.table.View) -> tuple[list, str | None]:
    """What the table shows besides the VMs' rows: the domains LIMEN does not manage (on the
    first page) and why the local libvirt cannot be reached."""
    return vms.unmanaged(current_user) if view.page == 1 else [], vms.hypervisor_problem()


def _extras(unmanaged: list, problem: str | None) -> tuple:
    """What a poll compares besides the rows: a host going down or coming back redraws them."""
    return [(d.uuid, d.state, d.state_reason) for d in unmanaged], problem, vms.host_problems()


def _table() -> dict:
    """What the table needs. Its version is two parts, both of what this user sees: the largest
    row version the page shows, and a digest of which rows it shows. The change token read
    before the rows is remembered with it (a change in between shows at the next poll)."""
    token = runtime.get().changes.token
    page = vms.table.page(current_user, _view())
    unmanaged, problem = _around(page.view)
    extras = _extras(unmanaged, problem)
    shown = vms.table.digest(page, *extras)
    runtime.get().changes.check(_page_key(page.view, page.since, shown), token)
    vms.table.remember(current_user, page, shown, extras)
    hosts = vms.host_names()
    return dict(
        view=page.view,
        page=page,
        rows=page.rows,
        unmanaged=unmanaged,
        owners=vms.owners(current_user),
        host_filter=hosts,
        hypervisor_problem=problem,
        several_hosts=bool(hosts),
        version=f"{page.since}.{shown}",
    )


def _done(status: int = 200, vm_uuid: str | None = None, gone: bool = False):
    """After a change: the rows for htmx, a short JSON answer for a script on the page (the
    console's Resume), the page for a plain form. An action asked from the VM's own page
    (``back=detail``) answers with that page's head, or that page; or, when the VM is
    ``gone`` (deleted, forgotten), with the table."""
    if vm_uuid and request.form.get("back") == "detail":
        if gone:
            return ("", status, {"HX-Redirect": url_for("vms.index")}) if is_htmx() else redirect(url_for("vms.index"))
        if is_htmx():
            return render_template("vms/_hub_head.html", row=vms.row(current_user, vm_uuid)), status
        return redirect(url_for("vms.detail", vm_uuid=vm_uuid))
    if is_htmx():
        return render_template("vms/_rows.html", oob_poll=True, **_table()), status
    if request.accept_mimetypes.best == "application/json":
        return jsonify(accepted=True), status
    return redirect(url_for("vms.index") + _view().query())


@bp.get("/")
def index():
    return render_template("vms/index.html", form={}, errors={}, **vms.create_choices(current_user), **_table())


@bp.get("/vms/rows")
def rows():
    """The table for htmx polls, as the page's version ``v`` asks: 204 and no body when nothing
    this user sees changed (at once when nothing changed at all since the page was last read);
    the rows that changed, came or left when only that happened; else the page's rows whole."""
    since, _, shown = request.args.get("v", "").rpartition(".")
    changes, view = runtime.get().changes, _view()
    if changes.checked(_page_key(view, since, shown)):
        return "", 204
    token = changes.token
    if since.isascii() and since.isdigit():
        now = vms.table.versions(current_user, view)
        unmanaged, problem = _around(now.view)
        extras = _extras(unmanaged, problem)
        now_shown = vms.table.digest(now, *extras)
        moves = (
            vms.table.Moves({}, []) if now_shown == shown else vms.table.came_and_left(current_user, shown, now, extras)
        )
        if moves is not None:
            vms.table.remember(current_user, now, now_shown, extras)
            changed = {*now.changed(int(since)), *moves.came}
            if not changed and now_shown == shown:
                # Others' changes: the page keeps its version, and is known unchanged at this token.
                changes.check(_page_key(now.view, since, shown), token)
                return "", 204
            changes.check(_page_key(now.view, now.since, now_shown), token)
            counted = now_shown != shown  # the count, the pages and the quota's use come too
            return render_template(
                "vms/_changed.html",
                rows=vms.table.changed_rows(current_user, [u for u in now.members if u in changed], extras[2]),
                came=moves.came,
                left=moves.left,
                view=now.view,
                page=now,
                counted=counted,
                quota_left=accounts.account_of(current_user) if counted else None,
                several_hosts=bool(vms.host_names()),
                version=f"{now.since}.{now_shown}",
            )
    return render_template("vms/_poll.html", oob_rows=True, quota_left=accounts.account_of(current_user), **_table())


@bp.post("/vms")
def create():
    try:
        vms.request_create(current_user, request.form)
    except (ValidationFailed, QuotaExceeded) as e:
        if is_htmx():
            return render_template(
                "vms/_create_form.html",
                form=request.form,
                errors=e.fields,
                problem=e,
                **vms.create_choices(current_user),
            ), e.status
        return render_template(
            "vms/index.html",
            form=request.form,
            errors=e.fields,
            problem=e,
            **vms.create_choices(current_user),
            **_table(),
        ), e.status
    if not is_htmx():
        return redirect(url_for("vms.index") + _view().query())
    # A fresh form, and the table with the new row swapped in out of band.
    return render_template(
        "vms/_create_form.html", form={}, errors={}, oob_rows=True, **vms.create_choices(current_user), **_table()
    ), 201


@bp.post("/vms/<uuid:vm_uuid>/<any(start, shutdown, 'force-off', reboot, pause, resume):action>")
def action(vm_uuid, action):
    vms.request_action(current_user, str(vm_uuid), action)
    return _done(202, str(vm_uuid))


@bp.post("/vms/bulk/<any(start, shutdown, 'force-off'):action>")
def bulk(action):
    """One Operation for each VM ticked; the rows, and a sentence of what became of each. 202
    when any was queued; 200 when every one was already where the action takes it; else the
    refusals' status (409 when they differ)."""
    done = vms.request_bulk(current_user, action, request.form.getlist("vm"))
    statuses = {e.status for _name, e in done.refused}
    if done.queued or not done.refused:
        status = 202 if done.queued else 200
    else:
        status = statuses.pop() if len(statuses) == 1 else 409
    if is_htmx():
        return render_template("vms/_bulk.html", done=done, oob_poll=True, **_table()), status
    choices = vms.create_choices(current_user)
    return render_template("vms/index.html", form={}, errors={}, done=done, **choices, **_table()), status


def _detail_page(vm_uuid) -> dict:
    uuid = str(vm_uuid)
    page = {
        **vms.snapshot_card(current_user, uuid),
        **vms.detail(current_user, uuid),
        **vms.settings(current_user, uuid),
    }
    for card, listed in (("disks", vms.disks.of), ("nics", vms.nics.of)):
        try:
            page[card] = listed(current_user, uuid)
        except LimenError:
            page[card] = None  # libvirt cannot say now; the page still shows the rest
    try:
        page["drives"], page["boot_order"] = vms.disks.boot(current_user, uuid)
    except LimenError:
        page["drives"] = page["boot_order"] = None
    page["network_choices"] = vms.network.choices()
    page.update(vms.migrate.card(current_user, uuid))
    page["row"] = vms.row(current_user, uuid)
    page.update(vms.history(current_user, uuid))
    return page


@bp.get("/host")
def host():
    """The host overview (admins)."""
    return render_template("host.html", **vms.host_overview(current_user))


@bp.get("/vms/<uuid:vm_uuid>")
def detail(vm_uuid):
    """One VM: its hardware and OS profile, its settings, its install media, and the CD-ROM drive."""
    return render_template("vms/detail.html", **_detail_page(vm_uuid), done=request.args.get("done"))


@bp.post("/vms/<uuid:vm_uuid>/edit")
def edit(vm_uuid):
    """Change what the form's fields say (name, description, autostart, vCPUs, memory)."""
    try:
        _vm, changes = vms.edit(current_user, str(vm_uuid), request.form)
    except (ValidationFailed, QuotaExceeded, InvalidState, VMBusy) as e:
        page = _detail_page(vm_uuid)
        return render_template(
            "vms/detail.html", **page, edit_form=request.form, edit_errors=getattr(e, "fields", {}), edit_problem=e
        ), e.status
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done="edited" if changes else "unchanged"))


@bp.get("/vms/<uuid:vm_uuid>/guest")
def guest(vm_uuid):
    """The Details page's Guest card, which polls itself while the VM runs."""
    return render_template("vms/_guest.html", vm=vms.get_vm(current_user, str(vm_uuid)))


def _device_changed(vm_uuid, call, card: str, done: str):
    """Run a change to a disk or a NIC (``card``); the page again with what was wrong, or
    with what was done."""
    try:
        call()
    except (ValidationFailed, QuotaExceeded, InvalidState, VMBusy, DiskNotFound, NicNotFound) as e:
        page = _detail_page(vm_uuid)
        return render_template(
            "vms/detail.html", **page, **{f"{card}_form": request.form, f"{card}_problem": e}
        ), e.status
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done=done))


@bp.post("/vms/<uuid:vm_uuid>/disks")
def add_disk(vm_uuid):
    return _device_changed(
        vm_uuid, lambda: vms.disks.add(current_user, str(vm_uuid), request.form), "disk", "disk-added"
    )


@bp.post("/vms/<uuid:vm_uuid>/disks/<dev>/grow")
def grow_disk(vm_uuid, dev):
    return _device_changed(
        vm_uuid, lambda: vms.disks.grow(current_user, str(vm_uuid), dev, request.form), "disk", "disk-grown"
    )


@bp.post("/vms/<uuid:vm_uuid>/disks/<dev>/delete")
def remove_disk(vm_uuid, dev):
    return _device_changed(vm_uuid, lambda: vms.disks.remove(current_user, str(vm_uuid), dev), "disk", "disk-removed")


@bp.post("/vms/<uuid:vm_uuid>/nics")
def add_nic(vm_uuid):
    return _device_changed(vm_uuid, lambda: vms.nics.add(current_user, str(vm_uuid), request.form), "nic", "nic-added")


@bp.post("/vms/<uuid:vm_uuid>/nics/<mac>/change")
def change_nic(vm_uuid, mac):
    return _device_changed(
        vm_uuid, lambda: vms.nics.change(current_user, str(vm_uuid), mac, request.form), "nic", "nic-changed"
    )


@bp.post("/vms/<uuid:vm_uuid>/nics/<mac>/delete")
def remove_nic(vm_uuid, mac):
    return _device_changed(vm_uuid, lambda: vms.nics.remove(current_user, str(vm_uuid), mac), "nic", "nic-removed")


@bp.post("/vms/<uuid:vm_uuid>/cdrom")
def insert_iso(vm_uuid):
    vms.insert_iso(current_user, str(vm_uuid), request.form.get("medium", ""), boot=request.form.get("boot") == "on")
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done="inserted"))


@bp.post("/vms/<uuid:vm_uuid>/eject")
def eject(vm_uuid):
    boot_from_disk = request.form.get("boot_from_disk") == "1"
    vms.eject(current_user, str(vm_uuid), boot_from_disk=boot_from_disk)
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done="booting-from-disk" if boot_from_disk else "ejected"))


@bp.post("/vms/<uuid:vm_uuid>/forwards")
def add_forward(vm_uuid):
    """A new host port to one of the guest's ports (user-mode VMs)."""
    try:
        vms.add_forward(current_user, str(vm_uuid), request.form)
    except ValidationFailed as e:
        return render_template(
            "vms/detail.html", **_detail_page(vm_uuid), forward_form=request.form, errors=e.fields, problem=e
        ), 422
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done="forwarded"))


@bp.post("/vms/<uuid:vm_uuid>/forwards/<int:forward_id>/delete")
def remove_forward(vm_uuid, forward_id):
    vms.remove_forward(current_user, str(vm_uuid), forward_id)
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid, done="unforwarded"))


@bp.get("/vms/<uuid:vm_uuid>/status")
def status(vm_uuid):
    """One VM's state, the step of an action under way, and the last failure (JSON)."""
    row = vms.row(current_user, str(vm_uuid))
    failure = row.failure or (row.op if row.vm.state == "error" and row.op and not row.op.active else None)
    return jsonify(
        state=row.vm.state,
        reason=row.vm.state_reason,
        step=row.op.step if row.op and row.op.active else None,
        error={"code": failure.error_code, "message": failure.error_message} if failure else None,
    )


@bp.post("/vms/<uuid:vm_uuid>/clone")
def clone(vm_uuid):
    """A new VM from this shut-off VM's disk; the table shows it being made."""
    try:
        vms.request_clone(current_user, str(vm_uuid), request.form)
    except (ValidationFailed, QuotaExceeded) as e:
        return render_template(
            "vms/detail.html", **_detail_page(vm_uuid), clone_form=request.form, clone_errors=e.fields
        ), e.status
    return redirect(url_for("vms.index"))


@bp.get("/vms/<uuid:vm_uuid>/snapshots")
def snapshots(vm_uuid):
    """The Details page's Snapshots card, which polls itself while one of its Operations runs."""
    return render_template("vms/_snapshots.html", **vms.snapshot_card(current_user, str(vm_uuid)))


def _snapshots_changed(vm_uuid, status: int = 202, **page):
    """After a snapshot request: the card for htmx, the Details page for a plain form."""
    if is_htmx():
        return render_template("vms/_snapshots.html", **vms.snapshot_card(current_user, str(vm_uuid)), **page), status
    if status >= 400:  # a plain form: the whole page, with what was wrong
        return render_template("vms/detail.html", **_detail_page(vm_uuid), **page), status
    return redirect(url_for("vms.detail", vm_uuid=vm_uuid))


@bp.post("/vms/<uuid:vm_uuid>/snapshots")
def take_snapshot(vm_uuid):
    try:
        vms.request_snapshot(current_user, str(vm_uuid), request.form)
    except (ValidationFailed, QuotaExceeded) as e:
        return _snapshots_changed(vm_uuid, e.status, form=request.form, errors=e.fields, refused=e)
    return _snapshots_changed(vm_uuid)


@bp.post("/vms/<uuid:vm_uuid>/snapshots/<name>/revert")
def revert_snapshot(vm_uuid, name):
    vms.request_revert(current_user, str(vm_uuid), name)
    return _snapshots_changed(vm_uuid)


@bp.post("/vms/<uuid:vm_uuid>/snapshots/<name>/delete")
def delete_snapshot(vm_uuid, name):
    vms.request_snapshot_delete(current_user, str(vm_uuid), name)
    return _snapshots_changed(vm_uuid)


@bp.post("/vms/<uuid:vm_uuid>/delete")
def delete(vm_uuid):
    vms.request_delete(current_user, str(vm_uuid))
    return _done(202, str(vm_uuid), gone=True)


@bp.post("/vms/<uuid:vm_uuid>/forget")
def forget(vm_uuid):
    """An admin drops a missing VM's row; libvirt and disks are not touched."""
    vms.forget(current_user, str(vm_uuid))
    return _done(vm_uuid=str(vm_uuid), gone=True)


@bp.post("/unmanaged/<uuid:vm_uuid>/adopt")
def adopt(vm_uuid):
    """An admin gives a domain another tool made an owner."""
    vms.adopt(current_user, str(vm_uuid), request.form.get("owner", ""))
    return _done()
