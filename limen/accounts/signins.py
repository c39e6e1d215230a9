"""Signing in and out. A sign-in is a LoginSession row; the session cookie carries its token
(stored hashed). Signing out ends that row, a new password ends the user's other sign-ins,
and disabling a user ends all of theirs, so an old cookie stops working at once."""

from datetime import timedelta

from flask import current_app
from sqlalchemy import ColumnElement, select, update

from .. import audit, hashing
from ..errors import SIGNED_OUT, AccountDisabled, SignInFailed
from ..extensions import db, rows_changed
from ..models import LoginSession, User, utcnow


def normal_username(username: str | None) -> str:
    return str(username or "").strip().lower()


def user_named(username: str | None) -> User | None:
    return db.session.scalar(select(User).where(User.username == normal_username(username)))


def sign_in(username: str, password: str) -> User:
    """The user, with a new LoginSession (``user.login_session.token`` goes in the cookie)."""
    user = check_credentials(username, password)
    token = hashing.new_token()
    login = LoginSession(token_hash=hashing.digest(token), user=user, ip=audit.source_ip())
    db.session.add(login)
    audit.record("sign-in", actor=user)
    db.session.commit()
    login.token = token
    user.login_session = login
    return user


def check_credentials(username: str, password: str) -> User:
    """The enabled user with this password, or SignInFailed (audited). A wrong name and a
    wrong password get the same answer, in about the same time."""
    user = user_named(username)
    if user is None:
        hashing.check_no_password(password)
        # The name is not recorded: it may be a password typed into the wrong field.
        audit.record("sign-in", SignInFailed.code, actor=None, detail="unknown username")
        db.session.commit()
        raise SignInFailed()
    if not user.check_password(password):
        audit.record("sign-in", SignInFailed.code, actor=None, target=user.username, detail="wrong password")
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
    found = db.session.execute(
        select(LoginSession, User)
        .join(User, LoginSession.user_id == User.id)
        .where(LoginSession.token_hash == hashing.digest(token), live_sign_in(), User.disabled.is_(False))
    ).first()
    if found is None:
        return None
    login, user = found
    login.token = token
    user.login_session = login
    return user


def live_sign_in() -> ColumnElement[bool]:
    """The condition a LoginSession meets while it still signs someone in."""
    oldest = utcnow() - timedelta(hours=float(current_app.config["SIGN_IN_LIFETIME_HOURS"]))
    return LoginSession.ended_at.is_(None) & (LoginSession.created_at > oldest)


def sign_out(user: User) -> None:
    login = user.login_session
    if login is not None:
        login.ended_at, login.end = utcnow(), SIGNED_OUT
        audit.record("sign-out", actor=user)
        db.session.commit()


def end_sign_ins(user: User, end: str, keep: LoginSession | None = None) -> int:
    """End the user's sign-ins (but ``keep``), and so the consoles opened under them."""
    query = update(LoginSession).where(LoginSession.user_id == user.id, LoginSession.ended_at.is_(None))
    if keep is not None:
        query = query.where(LoginSession.id != keep.id)
    return rows_changed(query.values(ended_at=utcnow(), end=end))
