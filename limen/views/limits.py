"""The sign-in rate limits, shared by every route that checks a password for a stranger
(/login and POST /api/v1/auth/tokens): guesses on one route count against the other."""

import time

from flask import current_app, request
from flask_login import current_user
from limits import parse

from .. import accounts
from ..extensions import limiter

# Where a password is checked for a stranger: the per-address limit is shared between them.
SIGN_IN = {"auth.login": "sign-in-address", "api.create_token": "sign-in-address", "auth.account": "account-address"}


class OverLimit(Exception):
    """More than a limit allows; ``wait`` seconds until the next attempt may come."""

    def __init__(self, limit: str, wait: int):
        super().__init__(limit)
        self.limit, self.wait = limit, wait


def per_address() -> None:
    """The per-address limit of the routes that check a password, counted before anything
    reads the request's body (this runs before the CSRF check, which reads forms): a client
    over it is refused with 429 having sent no more than its headers."""
    scope = SIGN_IN.get(request.endpoint or "")
    if request.method != "POST" or scope is None:
        return
    limit = current_app.config["LOGIN_LIMIT_PER_IP"]
    item, key = parse(limit), (scope, request.remote_addr or "")
    if not limiter.limiter.hit(item, *key):
        reset = limiter.limiter.get_window_stats(item, *key).reset_time
        raise OverLimit(limit, max(1, int(reset - time.time())))


def _username_key() -> str:
    """The username tried, from a form or a JSON body."""
    source = request.get_json(silent=True) if request.is_json else request.form
    name = source.get("username") if isinstance(source, dict) else ""  # a JSON body may be a list
    return "username:" + accounts.normal_username(name if isinstance(name, str) else "")


def _account_key() -> str:
    return f"account:{current_user.get_id()}"


# Every attempt counts, and is counted before the password is checked: an attempt that waited
# for its answer before being counted would let a burst of parallel guesses through.
per_username = limiter.shared_limit(
    lambda: current_app.config["LOGIN_LIMIT_PER_USERNAME"],
    scope="sign-in-username",
    key_func=_username_key,
    methods=["POST"],
)

# A stolen session cookie guessing its user's password on /account from many addresses: the
# per-user limit holds however many.
per_account = limiter.limit(
    lambda: current_app.config["LOGIN_LIMIT_PER_USERNAME"], key_func=_account_key, methods=["POST"]
)
