"""Who may ask, and what: sign-in, CSRF, tickets and tokens, validation, permissions,
quotas and rate limits."""

from .base import LimenError


class CSRFFailed(LimenError):
    code = "CSRF_FAILED"
    status = 400
    sentence = "This page is out of date (the session changed). Reload it and try again."


class NotSignedIn(LimenError):
    code = "NOT_SIGNED_IN"
    status = 401
    ws_close = 4401
    sentence = "Your session has ended. Sign in again."


class SignInEnded(LimenError):
    """A console opened under a sign-in (or an API token) that has ended since."""

    code = "SIGN_IN_ENDED"
    status = 401
    ws_close = 4401
    sentence = (
        "The sign-in this console was opened with has ended (signed out, or the "
        "password changed). Sign in again, then reconnect."
    )


class ValidationFailed(LimenError):
    """Bad input. ``fields`` maps a form field to what is wrong with it."""

    code = "VALIDATION_FAILED"
    status = 422
    sentence = "Some fields need attention."

    def __init__(self, fields: dict[str, str]):
        super().__init__(self.sentence, fields=fields)
        self.fields = fields


class NotAllowed(LimenError):
    code = "NOT_ALLOWED"
    status = 403
    ws_close = 4403
    sentence = "You are not allowed to do that."


class AccountDisabled(NotAllowed):
    code = "ACCOUNT_DISABLED"
    sentence = "This account has been disabled. Ask an administrator."


class UserNotFound(LimenError):
    code = "USER_NOT_FOUND"
    status = 404
    sentence = "There is no such user."


class TicketInvalid(LimenError):
    code = "TICKET_INVALID"
    status = 401
    ws_close = 4401
    sentence = "This console link has expired or was already used. Press Reconnect to get a new one."


class TokenInvalid(LimenError):
    code = "TOKEN_INVALID"
    status = 401
    ws_close = 4401
    sentence = (
        "The API token is missing, unknown, expired or revoked. Send "
        "'Authorization: Bearer <token>' with a valid token."
    )


class ForbiddenOrigin(LimenError):
    code = "FORBIDDEN_ORIGIN"
    status = 403
    ws_close = 4403
    sentence = (
        "The console was opened from a page of another site, which LIMEN refuses. Open it from LIMEN's own VM list."
    )


class QuotaExceeded(LimenError):
    """A create that would take a user past one of their quotas; ``fields`` names the form
    field each exceeded limit belongs to."""

    code = "QUOTA_EXCEEDED"
    status = 409
    sentence = "This would exceed your quota. Delete a VM, or ask an administrator for more."

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(problems.values()) + ".", fields=problems)
        self.fields = problems


class SignInFailed(LimenError):
    code = "SIGN_IN_FAILED"
    status = 401
    sentence = "Wrong username or password."


class TooManyAttempts(LimenError):
    code = "TOO_MANY_ATTEMPTS"
    status = 429
    sentence = "Too many attempts. Wait a minute, then try again."


# Why a sign-in ended (LoginSession.end).
SIGNED_OUT, PASSWORD_CHANGED, PASSWORD_RESET, USER_DISABLED = (
    "SIGNED_OUT",
    "PASSWORD_CHANGED",
    "PASSWORD_RESET",
    "USER_DISABLED",
)
