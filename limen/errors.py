"""LIMEN's errors: a stable UPPER_SNAKE code, a sentence for a person, an HTTP status and a
WebSocket close code.

The same code reaches the HTML page, the JSON API and the logs, so a person who reports
"VM_START_FAILED" and an operator reading the log talk about the same thing.
"""


class LimenError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    ws_close = 4500
    sentence = "Something went wrong inside LIMEN. The details are in the server log."

    def __init__(self, message: str | None = None, **details):
        self.message = message or self.sentence
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def close_reason(self) -> str:
        """What a console's close frame says: the code (the page shows its sentence)."""
        return self.code


class RequestRefused(LimenError):
    """An HTTP-level refusal (unknown URL, wrong method, a body too large) with its status."""

    code = "HTTP_ERROR"
    sentence = "LIMEN refused the request."

    # The code for each status Werkzeug may refuse a request with; others are HTTP_ERROR.
    CODES = {
        400: "BAD_REQUEST",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "REQUEST_ENTITY_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
    }

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.code, self.status = self.CODES.get(status, "HTTP_ERROR"), status


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


class VMNotFound(LimenError):
    code = "VM_NOT_FOUND"
    status = 404
    ws_close = 4404
    sentence = "There is no such VM. It may have been deleted; go back to the VM list."


class OperationNotFound(LimenError):
    code = "OPERATION_NOT_FOUND"
    status = 404
    sentence = "There is no such operation (or it is about a VM that is not yours)."


class ForwardNotFound(LimenError):
    code = "FORWARD_NOT_FOUND"
    status = 404
    sentence = "This VM has no such forwarded port."


class UserNotFound(LimenError):
    code = "USER_NOT_FOUND"
    status = 404
    sentence = "There is no such user."


class VMBusy(LimenError):
    code = "VM_BUSY"
    status = 409
    ws_close = 4409
    sentence = "Another action on this VM is still in progress; wait for it to finish, then try again."


class InvalidState(LimenError):
    code = "VM_STATE_CONFLICT"
    status = 409
    ws_close = 4409
    sentence = "The VM's current state does not allow that action."


class VMStartFailed(LimenError):
    code = "VM_START_FAILED"
    status = 409
    ws_close = 4409
    sentence = (
        "The hypervisor could not start the VM. Its reason is below; fix that "
        "(a missing disk, too little memory) and try again."
    )


class VMNotRunning(LimenError):
    code = "VM_NOT_RUNNING"
    status = 409
    ws_close = 4410
    sentence = "The VM did not reach the running state in time. Look at its state in the VM list, then reconnect."


class RebootTimeout(LimenError):
    code = "REBOOT_TIMEOUT"
    status = 409
    sentence = (
        "The guest did not restart after the reboot request (through its agent, else ACPI). It may "
        "have no operating system or ignore it; use Force off, then Start."
    )


class VMPaused(LimenError):
    code = "VM_PAUSED"
    status = 409
    ws_close = 4411
    sentence = "The VM is paused. Resume it to use its console."


class ShutdownTimeout(LimenError):
    code = "SHUTDOWN_TIMEOUT"
    status = 409
    sentence = (
        "The guest did not power off after the shutdown request (through its agent, else ACPI). "
        "It may have no operating system or ignore it; use Force off."
    )


class ShutdownCutShort(LimenError):
    code = "SHUTDOWN_CUT_SHORT"
    status = 409
    sentence = "Force off ended the VM before its guest had shut down."


class PortInUse(LimenError):
    code = "PORT_IN_USE"
    status = 409
    sentence = "A host port this VM forwards to its guest is taken by another program; choose another port."


class StorageFailed(LimenError):
    code = "STORAGE_FAILED"
    status = 502
    sentence = "The storage pool refused the operation."


class HypervisorError(LimenError):
    """libvirt answered with an error that has no more specific code; its message is kept."""

    code = "HYPERVISOR_ERROR"
    status = 502
    ws_close = 4502
    sentence = "The hypervisor refused the request."


class HypervisorUnavailable(LimenError):
    code = "HYPERVISOR_UNAVAILABLE"
    status = 503
    ws_close = 4503
    sentence = (
        "LIMEN cannot reach the hypervisor (libvirtd). It retries on its own; "
        "reconnect in a moment, or ask an administrator to check libvirtd."
    )


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


class VNCUnreachable(LimenError):
    code = "VNC_UNREACHABLE"
    status = 502
    ws_close = 4502
    sentence = "The VM is running but its display cannot be reached. Reconnect; if it keeps failing, restart the VM."


class SerialBusy(LimenError):
    """libvirt lets one client hold a serial line; another holds this VM's."""

    code = "SERIAL_BUSY"
    status = 409
    ws_close = 4409
    sentence = (
        "Someone else has this VM's serial console open, and a serial line takes one at a time. "
        "Take it over (they are disconnected), or stay out."
    )

    def __init__(self, holder: str | None = None):
        super().__init__(f"{self.sentence} It is held by {holder}." if holder else None, holder=holder)
        self.holder = holder

    def close_reason(self) -> str:
        return f"{self.code}: {self.holder}" if self.holder else self.code


class SerialTakenOver(LimenError):
    """Another client took this console's serial line (VIR_DOMAIN_CONSOLE_FORCE)."""

    code = "SERIAL_TAKEN_OVER"
    status = 409
    ws_close = 4409
    sentence = "Someone else took over this VM's serial console. Take it over again, or stay out."

    def __init__(self, by: str):
        super().__init__(f"{by} took over this VM's serial console.", by=by)
        self.by = by

    def close_reason(self) -> str:
        return f"{self.code}: {self.by}"


class VMIsBase(LimenError):
    """Linked clones read this VM's disk: it must not change while they exist."""

    code = "VM_HAS_LINKED_CLONES"
    status = 409
    ws_close = 4409
    sentence = (
        "Linked clones are built on this VM's disk: it cannot start, change or be deleted while "
        "they exist. Delete its linked clones first."
    )


class SnapshotUnsupported(LimenError):
    code = "SNAPSHOT_UNSUPPORTED"
    status = 409
    sentence = "This VM cannot be snapshotted."


class SnapshotNotFound(LimenError):
    code = "SNAPSHOT_NOT_FOUND"
    status = 404
    sentence = "The VM has no snapshot of that name."


class OperationInterrupted(LimenError):
    code = "OPERATION_INTERRUPTED"
    status = 500
    sentence = "LIMEN stopped while this operation was running."


class QuotaExceeded(LimenError):
    """A create that would take a user past one of their quotas; ``fields`` names the form
    field each exceeded limit belongs to."""

    code = "QUOTA_EXCEEDED"
    status = 409
    sentence = "This would exceed your quota. Delete a VM, or ask an administrator for more."

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(problems.values()) + ".", fields=problems)
        self.fields = problems


class MediumNotFound(LimenError):
    code = "MEDIUM_NOT_FOUND"
    status = 404
    sentence = "There is no such ISO or image in the library."


class MediumInUse(LimenError):
    code = "MEDIUM_IN_USE"
    status = 409
    sentence = "A VM still uses this medium."


class MediumTooLarge(LimenError):
    code = "MEDIUM_TOO_LARGE"
    status = 413
    sentence = "The file does not fit in the media storage pool."


class LengthRequired(LimenError):
    code = "LENGTH_REQUIRED"
    status = 411
    sentence = "An upload must say its size (Content-Length)."


class UploadIncomplete(LimenError):
    code = "UPLOAD_INCOMPLETE"
    status = 400
    sentence = "The upload ended before the whole file arrived; nothing was kept."


class SignInFailed(LimenError):
    code = "SIGN_IN_FAILED"
    status = 401
    sentence = "Wrong username or password."


class ConsoleLimit(LimenError):
    """One console more than a user, or this LIMEN, may have open (CONSOLES_PER_USER,
    CONSOLES_MAX)."""

    code = "CONSOLE_LIMIT"
    status = 429
    ws_close = 4429
    sentence = "Too many consoles are open. Close one, then try again."

    def __init__(self, limit: str):
        super().__init__(f"Too many consoles are open ({limit}). Close one, then try again.", limit=limit)
        self.limit = limit

    def close_reason(self) -> str:
        return f"{self.code}: {self.limit}"  # the page names the limit


class TooManyAttempts(LimenError):
    code = "TOO_MANY_ATTEMPTS"
    status = 429
    sentence = "Too many attempts. Wait a minute, then try again."


# -- how a console ended, when no error ended it (recorded in ConsoleSession.end) ---------
class ClientClosed(LimenError):
    code = "CLIENT_CLOSED"
    ws_close = 1000
    sentence = "The console was closed in the browser."


class LimenStopping(LimenError):
    code = "LIMEN_STOPPING"
    ws_close = 1001  # RFC 6455: going away
    sentence = "LIMEN is stopping or restarting. Press Reconnect in a moment."


class VNCClosed(LimenError):
    code = "VNC_CLOSED"
    ws_close = 1000
    sentence = "The VM's display closed: the VM was shut down or stopped. Press Reconnect to start it again."


class SerialClosed(LimenError):
    code = "SERIAL_CLOSED"
    ws_close = 1000
    sentence = "The VM's serial line closed: the VM was shut down or stopped. Press Reconnect to start it again."


class ProtocolError(LimenError):
    code = "PROTOCOL_ERROR"
    ws_close = 1002
    sentence = "The browser sent something that is not a WebSocket frame LIMEN accepts."


class MessageTooBig(LimenError):
    code = "MESSAGE_TOO_BIG"
    ws_close = 1009
    sentence = "The browser sent a WebSocket message larger than a console takes."


class LimenRestarted(LimenError):
    code = "LIMEN_RESTARTED"
    sentence = "LIMEN restarted while this console was open."


# -- what the console page finds out by itself (it shows these sentences too) -------------
class LimenUnreachable(LimenError):
    code = "LIMEN_UNREACHABLE"
    sentence = "LIMEN did not answer. Check your connection, then press Reconnect."


class ConnectionLost(LimenError):
    code = "CONNECTION_LOST"
    sentence = "The connection to the console was lost. Check the network, then press Reconnect."


class VNCPasswordRequired(LimenError):
    code = "VNC_PASSWORD_REQUIRED"
    sentence = (
        "The VM's display asks for a password, which LIMEN does not manage. "
        "Remove the VNC password from the VM's definition."
    )


class VNCSecurityFailed(LimenError):
    code = "VNC_SECURITY_FAILED"
    sentence = "The VM's display refused the connection."


class ConsolePageError(LimenError):
    code = "CONSOLE_PAGE_ERROR"
    sentence = "The console page failed. Reload the page."


# Why a sign-in ended (LoginSession.end).
SIGNED_OUT, PASSWORD_CHANGED, PASSWORD_RESET, USER_DISABLED = (
    "SIGNED_OUT",
    "PASSWORD_CHANGED",
    "PASSWORD_RESET",
    "USER_DISABLED",
)


def all_errors() -> dict[str, type[LimenError]]:
    """Every error class by its code (the console page maps close reasons with it)."""
    found: dict[str, type[LimenError]] = {}
    todo: list[type[LimenError]] = [LimenError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from(code: str | None, message: str | None) -> LimenError:
    """Rebuild a recorded error (an Operation's error_code and message) as an exception."""
    cls = all_errors().get(code or "", LimenError)
    err = cls.__new__(cls)
    LimenError.__init__(err, message)
    return err


def sentences() -> dict[str, str]:
    """Each code's sentence: the catalogue the console page shows its messages from."""
    return {code: cls.sentence for code, cls in sorted(all_errors().items())}
