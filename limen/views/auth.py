"""Signing in and out, and the account page where everyone changes their own password."""

from urllib.parse import urlsplit

from flask import Blueprint, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user

from .. import accounts
from ..accounts import tokens
from ..errors import SignInFailed, ValidationFailed
from . import limits

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never redirect a person to somewhere else after sign-in."""
    if target and target.isprintable() and "\\" not in target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//"):
            return target
    return url_for("vms.index")


@bp.route("/login", methods=["GET", "POST"])
@limits.per_username  # and per address, before the body is read (limits.per_address)
def login():
    error = None
    if request.method == "POST":
        try:
            user = accounts.sign_in(request.form.get("username", ""), request.form.get("password", ""))
        except SignInFailed as e:
            error = e.message
        else:
            session.clear()  # nothing from before the sign-in carries over
            login_user(user)
            return redirect(_safe_next(request.args.get("next")))
    # A failed sign-in keeps the username: the password is what to type again.
    return render_template("login.html", error=error, username=request.form.get("username", "")), 401 if error else 200


@bp.post("/logout")
def logout():
    accounts.sign_out(current_user)
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


@bp.route("/account", methods=["GET", "POST"])
@limits.per_account  # and per address, before the body is read (limits.per_address)
def account():
    """Your own password; your other sign-ins end when it changes, and your API tokens unless
    you keep them."""
    errors, done, revoked = {}, False, 0
    if request.method == "POST":
        f = request.form
        try:
            revoked = accounts.change_own_password(
                current_user,
                f.get("current", ""),
                f.get("password", ""),
                f.get("confirm", ""),
                revoke_tokens=f.get("keep_tokens") != "on",
            )
            done = True
        except ValidationFailed as e:
            errors = e.fields
    return _account_page(errors=errors, done=done, revoked=revoked), 422 if errors else 200


def _account_page(**extra):
    return render_template(
        "account.html",
        account=accounts.account_of(current_user),
        tokens=tokens.mine(current_user),
        **{"errors": {}, "done": False, "token_errors": {}, "new_token": None, **extra},
    )


@bp.post("/account/tokens")
def create_token():
    """A personal API token, shown once on the page that answers."""
    try:
        new = tokens.create(current_user, request.form.get("name", ""), request.form.get("expires_days") or None)
    except ValidationFailed as e:
        return _account_page(token_errors=e.fields), 422
    return _account_page(new_token=new), 201


@bp.post("/account/tokens/<int(max=9223372036854775807):token_id>/revoke")
def revoke_token(token_id):
    try:
        tokens.revoke(current_user, token_id)
    except ValidationFailed as e:
        return _account_page(token_errors=e.fields), 404
    return redirect(url_for("auth.account"))
