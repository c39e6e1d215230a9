"""Personal API tokens: made on the account page, by ``flask --app app tokens create``, or by
``POST /api/v1/auth/tokens`` with a username and password; named, optionally expiring,
revocable, and stored only as a SHA-256. The token itself is shown once."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select

from .. import audit, hashing
from ..access import Actor, authorize
from ..errors import TokenInvalid, ValidationFailed
from ..extensions import db
from ..forms import whole_number
from ..models import ApiToken, User, utcnow
from .signins import check_credentials, user_named

PREFIX = "limen_"
MAX_DAYS = 3650
LAST_USED_EVERY = timedelta(minutes=1)  # last_used_at is written at most this often


@dataclass(frozen=True)
class NewToken:
    row: ApiToken
    token: str  # shown once


def _check(name: str, expires_days: object) -> tuple[str, datetime | None]:
    errors = {}
    name = str(name or "").strip()
    if not 1 <= len(name) <= 64:
        errors["name"] = "Name the token (1 to 64 characters), e.g. after the script that uses it."
    expires_at = None
    if expires_days not in (None, ""):
        days = whole_number(expires_days, 1, MAX_DAYS)
        if days is None:
            errors["expires_days"] = f"Enter a number of days from 1 to {MAX_DAYS}, or none."
        else:
            expires_at = utcnow() + timedelta(days=days)
    if errors:
        raise ValidationFailed(errors)
    return name, expires_at


def _make(actor: Actor, user: User, name: str, expires_days: object) -> NewToken:
    name, expires_at = _check(name, expires_days)
    secret = hashing.new_token(PREFIX)
    row = ApiToken(
        user_id=user.id,
        name=name,
        token_hash=hashing.digest(secret),
        prefix=secret[: len(PREFIX) + 6],
        expires_at=expires_at,
    )
    db.session.add(row)
    audit.record(
        "token.create",
        actor=actor,
        target=user.username,
        detail=f"{name} ({row.prefix}…), " + (f"expires {expires_at:%Y-%m-%d}" if expires_at else "no expiry"),
    )
    db.session.commit()
    return NewToken(row, secret)


@audit.refusals("token.create")
def create(user: User, name: str, expires_days: object = None) -> NewToken:
    """A token for the signed-in user."""
    authorize(user, "account.tokens")
    return _make(user, user, name, expires_days)


@audit.refusals("token.create", subject="username")
def create_for(actor: Actor, username: str, name: str, expires_days: object = None) -> NewToken:
    """A token for someone else (an admin, or the host's command line)."""
    authorize(actor, "users.manage")
    user = user_named(username)
    if user is None:
        raise ValidationFailed({"username": f"There is no user {username}."})
    return _make(actor, user, name, expires_days)


def create_with_password(username: str, password: str, name: str, expires_days: object = None) -> NewToken:
    """For scripts: a token in exchange for a username and password (rate limited by the
    view, like signing in)."""
    user = check_credentials(username, password)
    return _make(user, user, name, expires_days)


def mine(user: User) -> list[ApiToken]:
    authorize(user, "account.tokens")
    return list(db.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id.desc())))


@audit.refusals("token.revoke")
def revoke(user: User, token_id: int) -> None:
    """Revoke one of one's own tokens (an admin: anyone's); it stops working at once."""
    authorize(user, "account.tokens")
    row = db.session.get(ApiToken, token_id)
    if row is None or (row.user_id != user.id and not user.is_admin):
        raise ValidationFailed({"token": "There is no such token."})
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        audit.record("token.revoke", actor=user, target=row.user.username, detail=f"{row.name} ({row.prefix}…)")
        db.session.commit()


def authenticate(secret: str) -> User:
    """The enabled user a live token belongs to (``user.api_token`` is the token's row);
    TokenInvalid otherwise."""
    found = db.session.execute(
        select(ApiToken, User)
        .join(User, ApiToken.user_id == User.id)
        .where(ApiToken.token_hash == hashing.digest(secret))
    ).first()
    now = utcnow()
    if found is None:
        raise TokenInvalid()
    row, user = found
    if row.revoked_at is not None:
        raise TokenInvalid("This API token was revoked.")
    if row.expires_at is not None and row.expires_at <= now:
        raise TokenInvalid("This API token has expired.")
    if user.disabled:
        raise TokenInvalid("The account this API token belongs to is disabled.")
    if row.last_used_at is None or now - row.last_used_at >= LAST_USED_EVERY:
        row.last_used_at = now
        db.session.commit()
    user.api_token = row
    return user
