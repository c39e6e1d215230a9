"""Consoles: why one could not open, how one ended, and what the console page finds out by
itself (it shows these sentences too)."""

from .base import LimenError


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


class VMMigrated(LimenError):
    """The console's VM moved to another host (its QEMU here ended as it did): the page opens
    the console again at once, on the new host."""

    code = "VM_MIGRATED"
    ws_close = 4409
    sentence = "The VM moved to another host. The console reconnects to it."


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
