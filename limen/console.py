"""The browser console: ticket → authorise → ensure running → open VNC → bridge bytes.

A ticket is 32 random bytes, stored only as its SHA-256, bound to one user and one VM, valid
for a minute and usable once. The WebSocket checks the Origin first, then redeems the ticket,
checks again that the user may use the VM, starts the VM if it is not running (one start per
VM however many consoles race) and then copies bytes both ways until either side closes.
Every refusal is a LimenError, whose ``ws_close`` code and ``code`` close the WebSocket.
"""
import hashlib
import logging
import secrets
import socket
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update
from . import audit, vms, websocket
from .errors import (AccountDisabled, ForbiddenOrigin, LimenError, NotAllowed, TicketInvalid,
                     TokenInvalid, VMNotRunning, error_from)
from .extensions import db, services
from .models import ConsoleSession, ConsoleTicket, Operation, User, utcnow

log = logging.getLogger(__name__)
TICKET_LIFETIME = timedelta(seconds=60)
CHUNK = websocket.CHUNK
CLOSE_GRACE = 2.0  # seconds the browser has to answer our close frame


@dataclass(frozen=True)
class Ticket:
    ticket: str
    expires_at: datetime


def _digest(ticket: str) -> str:
    return hashlib.sha256(ticket.encode()).hexdigest()


def issue_ticket(user: User, vm_uuid: str) -> Ticket:
    vm = vms.get_vm(user, vm_uuid, "vm.console")
    ticket = secrets.token_urlsafe(32)
    row = ConsoleTicket(token_hash=_digest(ticket), user_id=user.id, vm_uuid=vm.uuid,
                        expires_at=utcnow() + TICKET_LIFETIME)
    db.session.add(row)
    db.session.commit()
    return Ticket(ticket, row.expires_at)


def check_origin(origin: str | None, own_origin: str) -> None:
    """A browser always sends Origin with a WebSocket; a page of another site must not get a
    console (cross-site WebSocket hijacking). Clients that are not browsers send none."""
    if origin is None:
        return
    extra = current_app.config["ALLOWED_ORIGINS"]
    if isinstance(extra, str):  # LIMEN_ALLOWED_ORIGINS=https://a.example,https://b.example
        extra = extra.split(",")
    allowed = {o.strip().rstrip("/").lower() for o in (own_origin, *extra) if o.strip()}
    if origin.rstrip("/").lower() not in allowed:
        raise ForbiddenOrigin(f"Origin {origin} is not this site.")


def authorize_bearer(authorization: str, vm_uuid: str) -> User:
    """A client that is not a browser may present its API token instead of a ticket."""
    from . import tokens  # tokens need the accounts; the console is below neither

    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("The Authorization header is not 'Bearer <token>'.")
    user = tokens.authenticate(token.strip())
    vms.get_vm(user, vm_uuid, "vm.console")
    return user


def redeem(ticket: str | None, vm_uuid: str, session_user_id: int | None) -> User:
    """Use the ticket up and return its user, still enabled and still allowed this VM."""
    if not ticket:
        raise TicketInvalid("The console link carries no ticket. Open the console from the VM list.")
    row = db.session.scalar(select(ConsoleTicket).where(ConsoleTicket.token_hash == _digest(ticket)))
    if row is None or row.vm_uuid != vm_uuid:
        raise TicketInvalid()
    if session_user_id is not None and session_user_id != row.user_id:
        raise NotAllowed("This console ticket was issued to another user.")
    now = utcnow()
    claimed = db.session.execute(
        update(ConsoleTicket)
        .where(ConsoleTicket.id == row.id, ConsoleTicket.used_at.is_(None), ConsoleTicket.expires_at > now)
        .values(used_at=now)).rowcount
    db.session.commit()
    if not claimed:
        db.session.refresh(row)
        used = row.used_at is not None and row.used_at <= now
        raise TicketInvalid(("This console ticket was already used." if used else
                             "This console ticket has expired.") + " Press Reconnect for a new one.")
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise AccountDisabled()
    vms.get_vm(user, vm_uuid, "vm.console")  # still theirs (VM_NOT_FOUND otherwise)
    return user


def ensure_running(user: User, vm_uuid: str, timeout: float) -> None:
    """Return once the VM runs, starting it if needed; VM_START_FAILED, VM_NOT_RUNNING … else."""
    op = vms.start_or_join(user, vm_uuid)
    if op is None:
        return
    op_id = op.id
    db.session.close()  # hold no database connection while waiting
    if not services().runner.wait(op_id, timeout):
        raise VMNotRunning(f"The VM was not running {timeout:g} s after the start was requested.")
    op = db.session.get(Operation, op_id)
    if op.state == "failed":
        raise error_from(op.error_code, op.error_message)


class Bridge:
    """Copy bytes between the browser's WebSocket and the VNC socket until either side ends,
    then end the other at once. No thread or socket outlives ``run``."""

    # The bridges running now, by user id: disabling a user ends theirs.
    live: dict[int, set["Bridge"]] = {}
    _live_lock = threading.Lock()

    def __init__(self, conn: websocket.Connection, vnc: socket.socket, user_id: int | None = None,
                 vm_uuid: str | None = None):
        self.conn, self.vnc, self.user_id, self.vm_uuid = conn, vnc, user_id, vm_uuid
        self.to_client = self.from_client = 0
        self.end = "CLIENT_CLOSED"
        self._ended = threading.Lock()
        self._reader_done = threading.Event()

    def run(self) -> None:
        with Bridge._live_lock:
            Bridge.live.setdefault(self.user_id, set()).add(self)
        pump = threading.Thread(target=self._vnc_to_client, name="limen-vnc-pump", daemon=True)
        pump.start()
        try:
            self._client_to_vnc()
        finally:
            self._reader_done.set()
            self._finish("CLIENT_CLOSED", 1000)
            pump.join()
            self.vnc.close()
            self.conn.shutdown()
            with Bridge._live_lock:
                mine = Bridge.live.get(self.user_id, set())
                mine.discard(self)
                if not mine:
                    Bridge.live.pop(self.user_id, None)

    def stop(self, err: LimenError) -> None:
        """End the bridge from outside (the user was disabled): the browser gets the code."""
        self._finish(err.code, err.ws_close)

    def _client_to_vnc(self) -> None:
        try:
            for opcode, payload in self.conn.frames():
                if opcode in (websocket.BINARY, websocket.TEXT, 0):  # 0: a continuation
                    try:
                        self.vnc.sendall(payload)
                    except OSError:
                        return self._finish("VNC_CLOSED", 1000)
                    self.from_client += len(payload)
                elif opcode == websocket.CLOSE:  # answer with the browser's own code
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
                    self.conn.close(code if 1000 <= code < 5000 and code not in (1005, 1006) else 1000, "")
                    return
                elif opcode == websocket.PING:
                    self.conn.send(websocket.PONG, payload)
        except websocket.ProtocolError as e:
            log.warning("console: %s from the browser", e)
            self._finish("PROTOCOL_ERROR", 1002)
        except OSError:
            pass  # the browser's side is gone (or did not answer our close in time)

    def _vnc_to_client(self) -> None:
        try:
            while True:
                try:
                    data = self.vnc.recv(CHUNK)
                except OSError:
                    data = b""
                if not data:
                    self._finish("VNC_CLOSED", 1000)
                    break
                try:
                    self.conn.send(websocket.BINARY, data)
                except OSError:
                    self._finish("CLIENT_CLOSED", 1000)
                    break
                self.to_client += len(data)
        finally:
            # Our close frame is out: give the browser a moment to answer, then end its socket
            # so that the reading side returns.
            if not self._reader_done.wait(CLOSE_GRACE):
                self.conn.shutdown()

    def _finish(self, end: str, code: int) -> None:
        """The first side to end names the end; VNC is shut and the browser told at once."""
        if not self._ended.acquire(blocking=False):
            return
        self.end = end
        try:
            self.vnc.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close(code, end)


def close_websocket(conn: websocket.Connection, code: int, reason: str) -> None:
    """Refuse: a close frame with the code and reason, a moment for the browser's answer, then
    the socket is shut, so nothing else is written on it."""
    conn.close(code, reason)
    conn.await_close(CLOSE_GRACE)
    conn.shutdown()


def serve(ws, vm_uuid: str, *, origin: str | None, own_origin: str, ticket: str | None,
          session_user_id: int | None, authorization: str | None = None) -> None:
    """The console WebSocket, from the Origin check to the end of the bridge."""
    conn = websocket.Connection(ws.sock)
    ws.connected = False  # the connection is ours now: flask-sock must not close it again
    session_id = user_id = None
    try:
        check_origin(origin, own_origin)
        if authorization and not ticket:
            user = authorize_bearer(authorization, vm_uuid)
        else:
            user = redeem(ticket, vm_uuid, session_user_id)
        user_id = user.id
        record = ConsoleSession(user_id=user_id, vm_uuid=vm_uuid)
        db.session.add(record)
        db.session.commit()
        session_id = record.id
        cfg = current_app.config
        ensure_running(user, vm_uuid, cfg["CONSOLE_START_TIMEOUT"])
        vnc = services().hypervisor.open_display(vm_uuid, cfg["VNC_CONNECT_TIMEOUT"])
    except Exception as exc:  # every way out says why: never a bare 1006 in the browser
        if isinstance(exc, LimenError):
            err = exc
            log.info("console vm %s refused: %s", vm_uuid, err)
        else:
            err = LimenError()
            log.exception("console vm %s failed", vm_uuid)
        close_websocket(conn, err.ws_close, err.code)  # first: the browser learns why, whatever follows
        db.session.rollback()
        if session_id is not None:
            _record_end(session_id, err.code, err.message)
        _audit("console.open", err.code, user_id, vm_uuid, err.message)
        return
    _audit("console.open", "ok", user_id, vm_uuid, f"session {session_id}")
    db.session.close()  # the bridge may run for hours: hold no database connection
    bridge = Bridge(conn, vnc, user_id, vm_uuid)
    try:
        try:
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass  # the browser left while the VM started: the bridge ends at once
        log.info("console vm %s opened by user %s (session %s)", vm_uuid, user_id, session_id)
        bridge.run()
    finally:
        vnc.close()
        _record_end(session_id, bridge.end, None, bridge.to_client, bridge.from_client)
        _audit("console.close", "ok", user_id, vm_uuid, f"session {session_id}: {bridge.end}, "
               f"{bridge.to_client} bytes out, {bridge.from_client} in")
        log.info("console vm %s closed: %s, %d bytes out, %d in", vm_uuid, bridge.end,
                 bridge.to_client, bridge.from_client)


def end_consoles_of(user_id: int, err: LimenError, keep: set[str] = frozenset()) -> int:
    """End every console the user has open, but those of the VMs in ``keep``, telling each
    browser ``err``'s code."""
    with Bridge._live_lock:
        bridges = [b for b in Bridge.live.get(user_id, ()) if b.vm_uuid not in keep]
    for bridge in bridges:
        bridge.stop(err)
    return len(bridges)


def end_stale_sessions() -> int:
    """At start-up: sessions a previous process left open ended with it."""
    ended = db.session.execute(update(ConsoleSession).where(ConsoleSession.ended_at.is_(None))
                               .values(ended_at=utcnow(), end="LIMEN_RESTARTED")).rowcount
    db.session.commit()
    return ended


def _record_end(session_id: int, end: str, detail: str | None, out: int = 0, inn: int = 0) -> None:
    """Record how a session ended; a failure to record is logged, never raised into the close."""
    try:
        record = db.session.get(ConsoleSession, session_id)
        record.ended_at = utcnow()
        record.end, record.end_detail = end, detail
        record.bytes_to_client, record.bytes_from_client = out, inn
        db.session.commit()
    except Exception:
        log.exception("console session %s: recording its end failed", session_id)
        db.session.rollback()



def _audit(action: str, result: str, user_id: int | None, vm_uuid: str, detail: str) -> None:
    """Console opens and closes in the audit log; a failure to record is logged, never raised."""
    try:
        user = db.session.get(User, user_id) if user_id is not None else None
        audit.record(action, result, actor=user, vm_uuid=vm_uuid, detail=detail)
        db.session.commit()
    except Exception:
        log.exception("console vm %s: auditing %s failed", vm_uuid, action)
        db.session.rollback()
