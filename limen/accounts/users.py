"""Users, roles and passwords: what the admin pages, the account page and the command line
change. Every change is audited; a refusal is too."""

import re

from sqlalchemy import select, update

from .. import audit
from ..access import Actor, authorize
from ..errors import PASSWORD_CHANGED, PASSWORD_RESET, USER_DISABLED, UserNotFound, ValidationFailed
from ..extensions import db, rows_changed
from ..forms import whole_number
from ..models import ApiToken, User, utcnow
from .quotas import MAX_QUOTA, QUOTA_FIELDS, Account, Usage, account_of, quota_of, usage_by_owner
from .signins import end_sign_ins, normal_username, user_named

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
ROLES = ("user", "admin")


# -- passwords ----------------------------------------------------------------------------
def _check_new_password(password: str, confirm: str | None, errors: dict[str, str]) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        errors["password"] = f"Use {MIN_PASSWORD} to {MAX_PASSWORD} characters."
    elif confirm is not None and confirm != password:
        errors["confirm"] = "The two passwords differ."


def _revoke_tokens(user: User) -> int:
    """Revoke every API token ``user`` holds; how many were live."""
    return rows_changed(
        update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None)).values(revoked_at=utcnow())
    )


@audit.refusals("password.change")
def change_own_password(user: User, current: str, password: str, confirm: str, revoke_tokens: bool = True) -> int:
    """A new password for the signed-in user; their other sign-ins end, and (unless they keep
    them) their API tokens are revoked: a password changed because it leaked must not leave a
    token minted with it working. Returns how many tokens were revoked."""
    authorize(user, "account.password")
    errors: dict[str, str] = {}
    if not user.check_password(current):
        errors["current"] = "This is not your current password."
    _check_new_password(password, confirm, errors)
    if errors:
        raise ValidationFailed(errors)
    user.set_password(password)
    ended = end_sign_ins(user, PASSWORD_CHANGED, keep=user.login_session)
    revoked = _revoke_tokens(user) if revoke_tokens else 0
    detail = f"{ended} other sign-in(s) ended, {revoked} API token(s) revoked"
    audit.record("password.change", actor=user, target=user.username, detail=detail)
    db.session.commit()
    return revoked


@audit.refusals("password.reset", subject="username")
def reset_password(actor: Actor, username: str, password: str, confirm: str | None = None) -> None:
    """An admin (or the host's command line) sets someone's password; their sign-ins end."""
    authorize(actor, "users.manage")
    user = _existing(username)
    errors: dict[str, str] = {}
    _check_new_password(password, confirm, errors)
    if errors:
        raise ValidationFailed(errors)
    user.set_password(password)
    ended = end_sign_ins(
        user,
        PASSWORD_RESET,  # an admin's own sign-in goes on
        keep=getattr(actor, "login_session", None) if user.id == actor.id else None,
    )
    # A reset is how an account is taken back: tokens minted meanwhile must not outlive it.
    revoked = _revoke_tokens(user)
    audit.record(
        "password.reset",
        actor=actor,
        target=user.username,
        detail=f"{ended} sign-in(s) ended, {revoked} API token(s) revoked",
    )
    db.session.commit()


# -- users --------------------------------------------------------------------------------
def _existing(username: str) -> User:
    user = user_named(username)
    if user is None:
        raise ValidationFailed({"username": f"There is no user {normal_username(username)}."})
    return user


@audit.refusals("user.create", subject="username")
def create_user(actor: Actor, username: str, password: str, role: str = "user", confirm: str | None = None) -> User:
    authorize(actor, "users.manage")
    username = normal_username(username)
    errors: dict[str, str] = {}
    if not USERNAME_RE.fullmatch(username):
        errors["username"] = (
            "Use 1 to 32 lower-case letters, digits, dots, hyphens and underscores, starting with a letter or digit."
        )
    elif user_named(username) is not None:
        errors["username"] = f"The username {username} is taken."
    if role not in ROLES:
        errors["role"] = "Choose user or admin."
    _check_new_password(password, confirm, errors)
    if errors:
        raise ValidationFailed(errors)
    user = User(username=username, role=role)
    user.set_password(password)
    db.session.add(user)
    audit.record("user.create", actor=actor, target=username, detail=f"role {role}")
    db.session.commit()
    return user


@audit.refusals("user.update", subject="username")
def update_user(
    actor: Actor,
    username: str,
    *,
    role: str | None = None,
    disabled: bool | None = None,
    quota: dict[str, str] | None = None,
) -> User:
    """Change a user's role, disable or enable them, or set their quotas (a blank quota field
    means the configured default). Disabling ends their sign-ins."""
    authorize(actor, "users.manage")
    user = _existing(username)
    errors: dict[str, str] = {}
    changes = []
    if role is not None and role != user.role:
        if role not in ROLES:
            errors["role"] = "Choose user or admin."
        elif user.id == actor.id:
            errors["role"] = "You cannot change your own role; ask another administrator."
        else:
            user.role = role
            changes.append(f"role {role}")
    if disabled is not None and disabled != user.disabled:
        if user.id == actor.id:
            errors["disabled"] = "You cannot disable your own account."
        else:
            user.disabled = disabled
            changes.append("disabled" if disabled else "enabled")
    for field, raw in (quota or {}).items():
        if field not in QUOTA_FIELDS:
            continue
        raw = str(raw).strip()
        value = whole_number(raw, 0, MAX_QUOTA) if raw else None
        if raw and value is None:
            errors[field] = f"Enter a whole number up to {MAX_QUOTA}, or leave it blank for the default."
            continue
        if getattr(user, field) != value:
            setattr(user, field, value)
            changes.append(f"{field} {'default' if value is None else value}")
    if errors:
        raise ValidationFailed(errors)
    if not changes:
        return user
    if disabled:  # and enabling the account again brings neither back
        ended = end_sign_ins(user, USER_DISABLED)
        changes.append(f"{ended} sign-in(s) ended, {_revoke_tokens(user)} API token(s) revoked")
    audit.record("user.update", actor=actor, target=user.username, detail=", ".join(changes))
    # Consoles end by themselves: each checks its user's standing in the database.
    db.session.commit()
    return user


def list_users(actor: Actor) -> list[Account]:
    authorize(actor, "users.view")
    users = db.session.scalars(select(User).order_by(User.username)).all()
    usage = usage_by_owner()
    return [Account(u, quota_of(u), usage.get(u.id, Usage())) for u in users]


def username_of(actor: Actor, user_id: int) -> str:
    authorize(actor, "users.view")
    user = db.session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    return user.username


def account(actor: Actor, username: str) -> Account:
    authorize(actor, "users.view")
    return account_of(_existing(username))
