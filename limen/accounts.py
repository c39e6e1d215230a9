"""Accounts: signing in and out, passwords, users, roles and quotas.

A sign-in is a LoginSession row; the session cookie carries its token. Signing out ends that
row, a new password ends the user's other sign-ins, and disabling a user ends all of theirs,
so an old cookie stops working at once.
"""
import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from sqlalchemy import func, select, update
from werkzeug.security import check_password_hash, generate_password_hash

from . import audit
from .access import authorize
from .errors import AccountDisabled, NotAllowed, QuotaExceeded, UserNotFound, SignInFailed, ValidationFailed
from .extensions import db
from .models import VM, ApiToken, LoginSession, User, utcnow

USERNAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,31}$")
MIN_PASSWORD, MAX_PASSWORD = 8, 1024
ROLES = ("user", "admin")
MAX_QUOTA = 10 ** 9
# Checked when the username is unknown, so that a wrong name costs as long as a wrong password.
_NO_SUCH_USER = generate_password_hash(secrets.token_urlsafe(16))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normal_username(username: str) -> str:
    return str(username or "").strip().lower()


def _user_named(username: str) -> User | None:
    return db.session.scalar(select(User).where(User.username == normal_username(username)))


# -- signing in and out -------------------------------------------------------------------
def sign_in(username: str, password: str) -> User:
    """The user, with a new LoginSession (``user.login_session.token`` goes in the cookie)."""
    user = check_credentials(username, password)
    token = secrets.token_urlsafe(32)
    login = LoginSession(token_hash=_digest(token), user=user, ip=audit.source_ip())
    db.session.add(login)
    audit.record("sign-in", actor=user)
    db.session.commit()
    login.token = token
    user.login_session = login
    return user


def check_credentials(username: str, password: str) -> User:
    """The enabled user with this password, or SignInFailed (audited). A wrong name and a
    wrong password get the same answer, in about the same time."""
    user = _user_named(username)
    if user is None:
        check_password_hash(_NO_SUCH_USER, password)
        # The name is not recorded: it may be a password typed into the wrong field.
        audit.record("sign-in", SignInFailed.code, actor=None, detail="unknown username")
        db.session.commit()
        raise SignInFailed()
    if not user.check_password(password):
        audit.record("sign-in", SignInFailed.code, actor=None, target=user.username,
                     detail="wrong password")
        db.session.commit()
        raise SignInFailed()
    if user.disabled:  # told only to someone who knows the password
        audit.record("sign-in", AccountDisabled.code, actor=None, target=user.username)
        db.session.commit()
        raise SignInFailed(AccountDisabled.sentence)
    return user


def user_for_token(token: str) -> User | None:
    """The user of a sign-in that has not ended nor outlived SIGN_IN_LIFETIME_HOURS, if they
    are still enabled (every request asks)."""
    oldest = utcnow() - timedelta(hours=float(current_app.config["SIGN_IN_LIFETIME_HOURS"]))
    found = db.session.execute(
        select(LoginSession, User).join(User, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == _digest(token), LoginSession.ended_at.is_(None),
               LoginSession.created_at > oldest, User.disabled.is_(False))).first()
    if found is None:
        return None
    login, user = found
    login.token = token
    user.login_session = login
    return user


def sign_out(user: User) -> None:
    login = user.login_session
    if login is not None:
        login.ended_at, login.end = utcnow(), "SIGNED_OUT"
        audit.record("sign-out", actor=user)
        db.session.commit()


def _end_sign_ins(user: User, end: str, keep: LoginSession | None = None) -> int:
    query = update(LoginSession).where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(LoginSession.id != keep.id)
    return db.session.execute(query.values(ended_at=utcnow(), end=end)).rowcount


# -- passwords ----------------------------------------------------------------------------
def _check_new_password(password: str, confirm: str | None, errors: dict) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        errors["password"] = f"Use {MIN_PASSWORD} to {MAX_PASSWORD} characters."
    elif confirm is not None and confirm != password:
        errors["confirm"] = "The two passwords differ."


@audit.refusals("password.change")
def change_own_password(user: User, current: str, password: str, confirm: str) -> None:
    """A new password for the signed-in user; their other sign-ins end."""
    authorize(user, "account.password")
    errors: dict[str, str] = {}
    if not user.check_password(current):
        errors["current"] = "This is not your current password."
    _check_new_password(password, confirm, errors)
    if errors:
        raise ValidationFailed(errors)
    user.set_password(password)
    ended = _end_sign_ins(user, "PASSWORD_CHANGED", keep=user.login_session)
    audit.record("password.change", actor=user, target=user.username,
                 detail=f"{ended} other sign-in(s) ended")
    db.session.commit()


@audit.refusals("password.reset", subject="username")
def reset_password(actor, username: str, password: str, confirm: str | None = None) -> None:
    """An admin (or the host's command line) sets someone's password; their sign-ins end."""
    authorize(actor, "users.manage")
    user = _existing(username)
    errors: dict[str, str] = {}
    _check_new_password(password, confirm, errors)
    if errors:
        raise ValidationFailed(errors)
    user.set_password(password)
    ended = _end_sign_ins(user, "PASSWORD_RESET",  # an admin's own sign-in goes on
                          keep=getattr(actor, "login_session", None) if user.id == actor.id else None)
    # A reset is how an account is taken back: tokens minted meanwhile must not outlive it.
    revoked = db.session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                                 .values(revoked_at=utcnow())).rowcount
    audit.record("password.reset", actor=actor, target=user.username,
                 detail=f"{ended} sign-in(s) ended, {revoked} API token(s) revoked")
    db.session.commit()


# -- users --------------------------------------------------------------------------------
def _existing(username: str) -> User:
    user = _user_named(username)
    if user is None:
        raise ValidationFailed({"username": f"There is no user {normal_username(username)}."})
    return user


@audit.refusals("user.create", subject="username")
def create_user(actor, username: str, password: str, role: str = "user",
                confirm: str | None = None) -> User:
    authorize(actor, "users.manage")
    username = normal_username(username)
    errors: dict[str, str] = {}
    if not USERNAME_RE.fullmatch(username):
        errors["username"] = ("Use 1 to 32 lower-case letters, digits, dots, hyphens and "
                              "underscores, starting with a letter or digit.")
    elif _user_named(username) is not None:
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
def update_user(actor, username: str, *, role: str | None = None, disabled: bool | None = None,
                quota: dict[str, str] | None = None) -> User:
    """Change a user's role, disable or enable them, or set their quotas (a blank quota field
    means the configured default). Disabling ends their sign-ins."""
    authorize(actor, "users.manage")
    user = _existing(username)
    errors: dict[str, str] = {}
    changes = []
    demoted = False
    if role is not None and role != user.role:
        if role not in ROLES:
            errors["role"] = "Choose user or admin."
        elif user.id == actor.id:
            errors["role"] = "You cannot change your own role; ask another administrator."
        else:
            demoted = user.role == "admin"
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
        if raw and not (raw.isascii() and raw.isdigit() and int(raw) <= MAX_QUOTA):
            errors[field] = (f"Enter a whole number up to {MAX_QUOTA}, or leave it blank for "
                             "the default.")
            continue
        value = int(raw) if raw else None
        if getattr(user, field) != value:
            setattr(user, field, value)
            changes.append(f"{field} {'default' if value is None else value}")
    if errors:
        raise ValidationFailed(errors)
    if not changes:
        return user
    if disabled:
        ended = _end_sign_ins(user, "USER_DISABLED")
        changes.append(f"{ended} sign-in(s) ended")
    audit.record("user.update", actor=actor, target=user.username, detail=", ".join(changes))
    db.session.commit()
    from .console import end_consoles_of  # the console needs the accounts, not the reverse

    if disabled:
        end_consoles_of(user.id, AccountDisabled())
    elif demoted:  # an admin no more: only the consoles of their own VMs go on
        own = set(db.session.scalars(select(VM.uuid).where(VM.owner_id == user.id)))
        end_consoles_of(user.id, NotAllowed("You are no longer an administrator."), keep=own)
    return user


def list_users(actor) -> list["Account"]:
    authorize(actor, "users.view")
    users = db.session.scalars(select(User).order_by(User.username)).all()
    usage = _usage_by_owner()
    return [Account(u, quota_of(u), usage.get(u.id, Usage())) for u in users]


def username_of(actor, user_id: int) -> str:
    authorize(actor, "users.view")
    user = db.session.get(User, user_id)
    if user is None:
        raise UserNotFound()
    return user.username


def account(actor, username: str) -> "Account":
    authorize(actor, "users.view")
    user = _existing(username)
    return Account(user, quota_of(user), usage_of(user))


# -- quotas -------------------------------------------------------------------------------
QUOTA_FIELDS = {"quota_vms": "QUOTA_VMS", "quota_vcpus": "QUOTA_VCPUS",
                "quota_memory_mib": "QUOTA_MEMORY_MIB", "quota_disk_gib": "QUOTA_DISK_GIB"}


@dataclass(frozen=True)
class Usage:
    vms: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0


@dataclass(frozen=True)
class Quota:
    """Each limit, or None for no limit."""
    vms: int | None
    vcpus: int | None
    memory_mib: int | None
    disk_gib: int | None


@dataclass(frozen=True)
class Account:
    user: User
    quota: Quota
    usage: Usage


def quota_of(user: User) -> Quota:
    cfg = current_app.config
    values = [getattr(user, f) if getattr(user, f) is not None else cfg[key]
              for f, key in QUOTA_FIELDS.items()]
    return Quota(*values)


def _usage_query():
    return select(VM.owner_id, func.count(VM.id), func.coalesce(func.sum(VM.vcpus), 0),
                  func.coalesce(func.sum(VM.memory_mib), 0), func.coalesce(func.sum(VM.disk_gib), 0)
                  ).group_by(VM.owner_id)


def _usage_by_owner() -> dict[int, Usage]:
    return {row[0]: Usage(*row[1:]) for row in db.session.execute(_usage_query())}


def usage_of(user: User) -> Usage:
    """What the user's VMs take, whatever their state: a stopped VM keeps its disk and its
    claim to memory and vCPUs."""
    row = db.session.execute(_usage_query().where(VM.owner_id == user.id)).first()
    return Usage(*row[1:]) if row else Usage()


def claim(user_id: int, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    """Check that one more VM of this size fits the user's quota, atomically. The first
    statement writes the user's row (a column no key refers to, so no foreign-key checks run):
    that takes the database's write lock (a row lock elsewhere) until the caller's transaction
    ends, so two creates cannot both slip under the limit. The caller has no transaction open.
    Raises QuotaExceeded naming each limit, with the numbers."""
    db.session.execute(update(User).where(User.id == user_id)
                       .values(quota_vms=User.quota_vms)
                       .execution_options(synchronize_session=False))
    user = db.session.get(User, user_id, populate_existing=True)  # read under the lock
    quota, used = quota_of(user), usage_of(user)
    problems = {}
    for field, limit, have, want, unit in (
            ("name", quota.vms, used.vms, 1, "VMs"),
            ("vcpus", quota.vcpus, used.vcpus, vcpus, "vCPUs"),
            ("memory_mib", quota.memory_mib, used.memory_mib, memory_mib, "MiB"),
            ("disk_gib", quota.disk_gib, used.disk_gib, disk_gib, "GiB")):
        if limit is not None and have + want > limit:
            what = {"name": "VM", "vcpus": "vCPU", "memory_mib": "memory", "disk_gib": "disk"}[field]
            problems[field] = f"{what} quota: {have} of {limit} {unit} used, {want} requested"
    if problems:
        raise QuotaExceeded(problems)
