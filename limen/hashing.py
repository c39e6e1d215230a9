"""Secrets LIMEN hands out (sign-in, API and console tokens) are stored as a SHA-256 only;
passwords as a slow hash (scrypt, or PASSWORD_HASH_METHOD)."""

import hashlib
import secrets

from flask import current_app, has_app_context
from werkzeug.security import check_password_hash, generate_password_hash

DEFAULT_METHOD = "scrypt"
_dummies: dict[str, str] = {}


def digest(token: str) -> str:
    """What is stored of a token: enough to recognise it, useless to whoever reads the database."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = "") -> str:
    return prefix + secrets.token_urlsafe(32)


def _method() -> str:
    return current_app.config["PASSWORD_HASH_METHOD"] if has_app_context() else DEFAULT_METHOD


def hash_password(password: str) -> str:
    return generate_password_hash(password, method=_method())


def check_password(stored_hash: str, password: str) -> bool:
    return check_password_hash(stored_hash, password)


def check_no_password(password: str) -> None:
    """Spend what checking a password costs, for a username that does not exist: a wrong name
    and a wrong password take about as long."""
    method = _method()
    if method not in _dummies:
        _dummies[method] = generate_password_hash(secrets.token_urlsafe(16), method=method)
    check_password_hash(_dummies[method], password)
