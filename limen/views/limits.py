"""The sign-in rate limits, shared by every route that checks a password for a stranger
(/login and POST /api/v1/auth/tokens): guesses on one route count against the other."""

from flask import current_app, request

from .. import accounts
from ..extensions import limiter


def _username_key() -> str:
    """The username tried, from a form or a JSON body."""
    source = request.get_json(silent=True) if request.is_json else request.form
    name = source.get("username") if isinstance(source, dict) else ""  # a JSON body may be a list
    return "username:" + accounts.normal_username(name if isinstance(name, str) else "")


# Every attempt counts, and is counted before the password is checked: an attempt that waited
# for its answer before being counted would let a burst of parallel guesses through.
per_address = limiter.shared_limit(
    lambda: current_app.config["LOGIN_LIMIT_PER_IP"], scope="sign-in-address", methods=["POST"]
)
per_username = limiter.shared_limit(
    lambda: current_app.config["LOGIN_LIMIT_PER_USERNAME"],
    scope="sign-in-username",
    key_func=_username_key,
    methods=["POST"],
)
