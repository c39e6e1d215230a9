"""The bytes of a console: browser WebSocket ↔ the VM's side (its VNC socket, or its serial
line, which reads like one), until either side ends."""

import logging
import socket
import threading
from collections.abc import Callable
from typing import Protocol

from ..errors import ClientClosed, LimenError, MessageTooBig, ProtocolError, VNCClosed
from . import frames

log = logging.getLogger(__name__)
CLOSE_GRACE = 2.0  # seconds the browser has to answer our close frame
REVOKED = 4403  # the close code of a console whose user lost the right to it


class Far(Protocol):
    """The VM's side of a console: a socket, or anything that reads and writes like one."""

    def recv(self, size: int, /) -> bytes: ...
    def sendall(self, data: bytes, /) -> None: ...
    def shutdown(self, how: int, /) -> None: ...
    def close(self) -> None: ...


class Bridge:
    """Copy bytes between the browser's WebSocket and the VM's side until either side ends,
    then end the other at once. No thread or socket outlives ``run``. ``far_closed`` names the
    end when the VM's side ends first."""

    def __init__(self, conn: frames.Connection, far: Far, far_closed: Callable[[], LimenError] = VNCClosed):
        self.conn, self.far, self.far_closed = conn, far, far_closed
        self.to_client = self.from_client = 0
        self.end = ClientClosed.code
        self.end_detail: str | None = None  # what the end's error said beyond its sentence
        self._ended = threading.Lock()
        self._reader_done = threading.Event()

    def run(self) -> None:
        pump = threading.Thread(target=self._far_to_client, name="limen-console-pump", daemon=True)
        pump.start()
        try:
            self._client_to_far()
        finally:
            self._reader_done.set()
            self._finish(ClientClosed())
            pump.join()
            self.far.close()
            self.conn.shutdown()

    def halt(self, err: LimenError) -> None:
        """End the bridge from outside with the error's own code (LIMEN is stopping)."""
        self._finish(err)

    def stop(self, err: LimenError) -> None:
        """End the bridge from outside: the user lost the right to it. The browser gets 4403
        (forbidden from now on, whatever the code would say at the door) and the reason."""
        self._finish(err, REVOKED)

    def _client_to_far(self) -> None:
        try:
            for opcode, payload in self.conn.frames():
                if opcode in (frames.BINARY, frames.TEXT, 0):  # 0: a continuation
                    try:
                        self.far.sendall(payload)
                    except OSError:
                        return self._finish(self.far_closed())
                    self.from_client += len(payload)
                elif opcode == frames.CLOSE:  # answer with the browser's own code
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                    self.conn.close(code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000, "")
                    return
                elif opcode == frames.PING:
                    self.conn.send(frames.PONG, payload)
        except frames.FrameError as e:
            log.warning("console: %s from the browser", e)
            self._finish(MessageTooBig() if e.close_code == 1009 else ProtocolError())
        except OSError:
            pass  # the browser's side is gone (or did not answer our close in time)

    def _far_to_client(self) -> None:
        try:
            while True:
                try:
                    data = self.far.recv(frames.CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._finish(self.far_closed())
                    break
                try:
                    self.conn.send(frames.BINARY, data)
                except OSError:
                    self._finish(ClientClosed())
                    break
                self.to_client += len(data)
        finally:
            # Our close frame is out: give the browser a moment to answer, then end its socket
            # so that the reading side returns.
            if not self._reader_done.wait(CLOSE_GRACE):
                self.conn.shutdown()

    def _finish(self, err: LimenError, ws_close: int | None = None) -> None:
        """The first side to end names the end; the VM's side is shut and the browser told at
        once."""
        if not self._ended.acquire(blocking=False):
            return
        self.end = err.code
        self.end_detail = err.message if err.message != err.sentence else None
        try:
            self.far.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close(ws_close or err.ws_close, err.close_reason())
