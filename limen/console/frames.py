"""The console's WebSocket frames, read and written by the bridge itself (RFC 6455).

flask-sock (simple-websocket, wsproto) does the opening handshake. After it, a console only
moves binary data, and the generic path costs more than the bytes: a reader thread per
connection that hands every message over through an Event, and several copies of each
outgoing frame. Here one thread reads and unmasks the browser's frames and writes them to VNC;
another frames VNC's output with a header of its own. Every write to the socket takes one lock.
"""

import socket
import threading
import time

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
OPCODES = {CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG}
# A browser's input events are tiny: a message (one frame, or a fragmented one) this big is abuse.
MAX_MESSAGE = 16 * 1024 * 1024
MAX_CONTROL = 125  # RFC 6455 5.5: a control frame's payload, and it is never fragmented
CHUNK = 64 * 1024


class NoReaderThread:
    """Given to simple-websocket as its thread class: its reader thread is never started,
    because the bridge reads the socket itself."""

    def __init__(self, target=None, **_):
        self.name = "limen-websocket-unused"

    def start(self) -> None:
        pass

    def join(self, timeout=None) -> None:
        pass

    def is_alive(self) -> bool:
        return False


class FrameError(Exception):
    """What the browser sent breaks RFC 6455; ``close_code`` is the code the RFC asks for
    (1002 protocol error, 1009 message too big)."""

    def __init__(self, message: str, close_code: int = 1002):
        super().__init__(message)
        self.close_code = close_code


def frame(opcode: int, payload: bytes = b"") -> bytes:
    """One final, unmasked frame, as a server sends it."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, n))
    elif n < 65536:
        header = bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big")
    return header + payload


def close_payload(code: int, reason: str) -> bytes:
    return code.to_bytes(2, "big") + reason.encode()[:120]


class Connection:
    """The server end of an open WebSocket: frames in, frames out."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.send_lock = threading.Lock()
        self.close_sent = False
        self._buffer = bytearray()
        self._message = 0  # bytes so far of a fragmented data message
        self._fragmented = False  # a data message's first frame came without FIN

    def send(self, opcode: int, payload: bytes = b"") -> None:
        with self.send_lock:
            if opcode == CLOSE:
                if self.close_sent:
                    return
                self.close_sent = True
            self.sock.sendall(frame(opcode, payload))

    def close(self, code: int, reason: str) -> None:
        """Send a close frame (once); errors mean the browser is gone already."""
        try:
            self.send(CLOSE, close_payload(code, reason))
        except OSError:
            pass

    def frames(self):
        """(opcode, payload) of each frame from the browser, unmasked, until the socket ends."""
        while True:
            parsed = self._parse()
            if parsed is not None:
                yield parsed
                continue
            data = self.sock.recv(CHUNK)
            if not data:
                return
            self._buffer += data

    def _parse(self) -> tuple[int, bytes] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        fin, opcode = buf[0] & 0x80, buf[0] & 0x0F
        if buf[0] & 0x70:
            raise FrameError("a frame with reserved bits set (no extension was agreed)")
        if opcode not in OPCODES:
            raise FrameError(f"a frame of unknown opcode {opcode:#x}")
        if not buf[1] & 0x80:
            raise FrameError("an unmasked frame (a client masks every frame)")
        size, pos = buf[1] & 0x7F, 2
        if opcode & 0x8 and (size > MAX_CONTROL or not fin):
            raise FrameError("a control frame over 125 bytes, or fragmented")
        if size == 126:
            if len(buf) < 4:
                return None
            size, pos = int.from_bytes(buf[2:4], "big"), 4
        elif size == 127:
            if len(buf) < 10:
                return None
            size, pos = int.from_bytes(buf[2:10], "big"), 10
        if not opcode & 0x8:
            if (opcode == CONTINUATION) != self._fragmented:
                raise FrameError("a continuation frame out of place")
            if self._message + size > MAX_MESSAGE:
                raise FrameError(f"a message of more than {MAX_MESSAGE} bytes", 1009)
        start = pos + 4
        end = start + size
        if len(buf) < end:
            return None
        payload = bytes(buf[start:end])
        if not opcode & 0x8:
            self._fragmented = not fin
            self._message = 0 if fin else self._message + size
        if size:  # one big-integer XOR unmasks the whole payload
            key = int.from_bytes((bytes(buf[pos:start]) * (size // 4 + 1))[:size], "little")
            payload = (int.from_bytes(payload, "little") ^ key).to_bytes(size, "little")
        del buf[:end]
        return opcode, payload

    def await_close(self, timeout: float) -> None:
        """After our close frame: read until the browser's answer, EOF or the deadline."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                parsed = self._parse()
                if parsed is not None:
                    if parsed[0] == CLOSE:
                        return
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self.sock.settimeout(remaining)
                data = self.sock.recv(CHUNK)
                if not data:
                    return
                self._buffer += data
        except (OSError, FrameError):
            pass

    def shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
