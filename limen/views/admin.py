"""Administration: users (create, disable, reset password, role, quotas) and the audit log.
Who may see these pages is decided in the use cases (limen.access), like everywhere else."""

from datetime import datetime

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import current_user

from .. import accounts, audit
from ..errors import ValidationFailed
from ..extensions import db

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
def users():
    return render_template("admin/users.html", accounts=accounts.list_users(current_user), form={}, errors={})


@bp.post("/users")
def create_user():
    f = request.form
    try:
        user = accounts.create_user(
            current_user,
            f.get("username", ""),
            f.get("password", ""),
            f.get("role", "user"),
            confirm=f.get("confirm", ""),
        )
    except ValidationFailed as e:
        return render_template(
            "admin/users.html", accounts=accounts.list_users(current_user), form=f, errors=e.fields
        ), 422
    return redirect(url_for("admin.user", username=user.username, done="created"))


@bp.get("/users/<username>")
def user(username):
    return render_template(
        "admin/user.html", account=accounts.account(current_user, username), errors={}, done=request.args.get("done")
    )


@bp.post("/users/<username>")
def update_user(username):
    f = request.form
    try:
        accounts.update_user(
            current_user,
            username,
            role=f.get("role"),
            disabled=f.get("disabled") == "on",
            quota={k: f.get(k, "") for k in accounts.QUOTA_FIELDS},
        )
    except ValidationFailed as e:
        return render_template(
            "admin/user.html", account=accounts.account(current_user, username), errors=e.fields, done=None
        ), 422
    return redirect(url_for("admin.user", username=username, done="saved"))


@bp.post("/users/<username>/password")
def reset_password(username):
    f = request.form
    try:
        accounts.reset_password(current_user, username, f.get("password", ""), f.get("confirm", ""))
    except ValidationFailed as e:
        return render_template(
            "admin/user.html", account=accounts.account(current_user, username), errors=e.fields, done=None
        ), 422
    return redirect(url_for("admin.user", username=username, done="password"))


def _date(raw: str | None) -> datetime | None:
    try:
        return datetime.fromisoformat(raw) if raw else None
    except ValueError:
        return None


@bp.get("/audit")
def audit_log():
    a = request.args
    filters = {k: a.get(k, "").strip() for k in ("actor", "vm", "action", "result", "since", "until")}
    query = audit.search(
        current_user,
        actor=filters["actor"],
        vm=filters["vm"],
        action=filters["action"],
        result=filters["result"],
        since=_date(filters["since"]),
        until=_date(filters["until"]),
    )
    page = db.paginate(query, per_page=audit.PAGE_SIZE, error_out=False)
    return render_template("admin/audit.html", page=page, filters=filters)
