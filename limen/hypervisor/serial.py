"""A running domain's serial line: libvirt's console stream (virDomainOpenConsole), driven by
the stream's event callbacks, so it works the same on a remote libvirt. No pty is opened here.

A ``SerialLine`` reads like a socket (``recv``, ``sendall``, ``shutdown``, ``close``), so the
console bridge copies it as it copies a VNC socket. The event loop thread only moves bytes into
a bounded buffer; when the buffer is full it stops asking for more (the guest's tty waits), and
the reader asks again as it drains it.
"""

import threading

import libvirt

from ..errors import SerialBusy
from .connection import Connection, translated

CHUNK = 64 * 1024
BUFFER = 256 * 1024  # bytes from the guest held for a slow reader before the line waits
SEND_TIMEOUT = 10.0  # seconds a write may wait for the stream to take it

# How a line ended: the guest's side closed it (the VM stopped), or the stream failed (another
# client took the line over with VIR_DOMAIN_CONSOLE_FORCE, or libvirtd went away), or LIMEN
# closed it.
EOF, FAILED, CLOSED = "eof", "failed", "closed"

_ENDS = libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


class Serial:
    def __init__(self, connection: Connection):
        self.connection = connection

    @translated
    def open(self, uuid: str, take_over: bool = False) -> "SerialLine":
        """The running domain's first serial console. libvirt lets one client hold it at a time:
        SERIAL_BUSY when another does, unless ``take_over`` (that client's stream then fails)."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        stream = self.connection.get().newStream(libvirt.VIR_STREAM_NONBLOCK)
        flags = libvirt.VIR_DOMAIN_CONSOLE_SAFE | (libvirt.VIR_DOMAIN_CONSOLE_FORCE if take_over else 0)
        try:
            dom.openConsole(None, stream, flags)
        except libvirt.libvirtError as e:
            _abort(stream)
            message = e.get_error_message() or ""
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED and "console session exists" in message:
                raise SerialBusy() from None
            raise
        try:
            return SerialLine(stream)
        except libvirt.libvirtError:
            _abort(stream)
            raise


class SerialLine:
    """One open console stream; ``ended`` says how it ended (EOF, FAILED, CLOSED) once it has."""

    def __init__(self, stream: libvirt.virStream):
        self._stream = stream
        self._cond = threading.Condition()
        self._buffer = bytearray()
        self._reading = True  # whether the callback asks for READABLE (no: the buffer is full)
        self._waiting_to_write = False  # whether a writer waits for WRITABLE
        self._writable = False
        self.ended: str | None = None
        self.stalled = False  # a write waited SEND_TIMEOUT in vain (the guest takes no input)
        stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | _ENDS, self._on_event, None)

    # -- the event loop thread --
    def _on_event(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        with self._cond:
            if self.ended:
                return
            try:
                if events & libvirt.VIR_STREAM_EVENT_READABLE:
                    self._read(stream)
                if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
                    self._writable, self._waiting_to_write = True, False
                    self._interest()
                if events & _ENDS and not self.ended:
                    self._end(FAILED)
            except libvirt.libvirtError:  # "stream had I/O failure": taken over, or libvirtd gone
                self._end(FAILED)
            self._cond.notify_all()

    def _read(self, stream: libvirt.virStream) -> None:
        while len(self._buffer) < BUFFER:
            data = stream.recv(CHUNK)
            if data == -2:  # nothing more for now
                return
            if not data:
                self._end(EOF)
                return
            self._buffer += data
        self._reading = False  # full: the reader asks again as it drains the buffer
        self._interest()

    def _interest(self) -> None:
        """Ask libvirt for the events the line waits for now."""
        events = _ENDS
        if self._reading:
            events |= libvirt.VIR_STREAM_EVENT_READABLE
        if self._waiting_to_write:
            events |= libvirt.VIR_STREAM_EVENT_WRITABLE
        self._stream.eventUpdateCallback(events)

    def _end(self, how: str) -> None:
        """Called with the condition held."""
        if self.ended:
            return
        self.ended = how
        try:
            self._stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass
        if how == CLOSED:
            _abort(self._stream)
        else:
            try:
                self._stream.finish() if how == EOF else self._stream.abort()
            except libvirt.libvirtError:
                pass
        self._cond.notify_all()

    # -- the bridge's threads: a socket's interface --
    def recv(self, size: int) -> bytes:
        """Up to ``size`` bytes from the guest, waiting for some; b"" once the line has ended."""
        with self._cond:
            while not self._buffer and not self.ended:
                self._cond.wait()
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            if not self._reading and not self.ended and len(self._buffer) < BUFFER // 2:
                self._reading = True
                self._interest_or_end()
            return data

    def sendall(self, data: bytes) -> None:
        """Send every byte to the guest; OSError once the line has ended, or if the stream takes
        nothing for SEND_TIMEOUT seconds."""
        view = memoryview(data)
        with self._cond:
            while view:
                if self.ended:
                    raise OSError(f"the serial line has ended ({self.ended})")
                try:
                    sent = self._stream.send(bytes(view[:CHUNK]))
                except libvirt.libvirtError as e:
                    self._end(FAILED)
                    raise OSError(e.get_error_message()) from None
                if sent == -2:  # the stream is full: wait until libvirt says it takes more
                    self._writable, self._waiting_to_write = False, True
                    self._interest_or_end()
                    taken = self._cond.wait_for(lambda: self._writable or self.ended, SEND_TIMEOUT)
                    if not taken:
                        self.stalled = True
                        raise OSError(f"the serial line took nothing for {SEND_TIMEOUT:g} s")
                    continue
                view = view[sent:]

    def _interest_or_end(self) -> None:
        try:
            self._interest()
        except libvirt.libvirtError:
            self._end(FAILED)

    def shutdown(self, _how: int = 0) -> None:
        """End the line now; a reader waiting in ``recv`` gets b"" at once."""
        with self._cond:
            self._end(CLOSED)

    def close(self) -> None:
        self.shutdown()


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass
