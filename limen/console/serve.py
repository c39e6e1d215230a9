"""The console WebSocket: Origin check → ticket (or API token) → ensure running → open the
VM's side (its VNC screen or its serial line) → bridge bytes, with every way out recorded and
told to the browser as a code.

Every refusal is a LimenError, whose ``ws_close`` code and ``code`` close the WebSocket.
"""

import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from flask import current_app, request
from limits import parse
from sqlalchemy import select, update

from .. import audit, runtime, vms
from ..errors import (
    HypervisorUnavailable,
    LimenError,
    LimenRestarted,
    LimenStopping,
    SerialBusy,
    SerialClosed,
    SerialTakenOver,
    VMMigrated,
    VMNotRunning,
    VNCClosed,
    error_from,
)
from ..extensions import db, limiter, rows_changed
from ..hypervisor import serial
from ..models import MIGRATING, VM, ConsoleSession, Operation, User, utcnow
from . import frames, standing, tickets
from .bridge import Bridge, Far
from .tickets import SCREEN, SERIAL

log = logging.getLogger(__name__)
_bridges: set[Bridge] = set()  # the consoles open in this process
_bridges_lock = threading.Lock()


def ensure_running(user: User, vm_uuid: str, timeout: float) -> None:
    """Return once the VM runs, starting it if needed; VM_START_FAILED, VM_NOT_RUNNING … else."""
    op = vms.start_or_join(user, vm_uuid)
    if op is None:
        return
    op_id = op.id
    db.session.close()  # hold no database connection while waiting
    if not runtime.get().runner.wait(op_id, timeout):
        raise VMNotRunning(f"The VM was not running {timeout:g} s after the start was requested.")
    op = db.session.get(Operation, op_id)
    if op is not None and op.state == "failed":
        raise error_from(op.error_code, op.error_message)


def refuse(conn: frames.Connection, err: LimenError) -> None:
    """A close frame with the code and reason, then the socket is shut at once: a refused peer
    (a script that never answers the close, as well as a browser) holds no thread."""
    conn.close(err.ws_close, err.close_reason())
    conn.shutdown()


def audited_refusal() -> bool:
    """Whether a refusal from this address still goes to the audit log: at most
    CONSOLE_REFUSALS_AUDITED, so a flood of refused handshakes cannot grow the database (they
    are all in the server log)."""
    limit = parse(current_app.config["CONSOLE_REFUSALS_AUDITED"])
    return limiter.limiter.hit(limit, "console-refused", request.remote_addr or "")


def _moved(vm_uuid: str) -> Callable[[], bool]:
    """Asked when the VM's side ends: did the VM move to another host meanwhile (its QEMU here
    ends as a migration completes)?"""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    host_id = db.session.scalar(select(VM.host_id).where(VM.uuid == vm_uuid))

    def moved() -> bool:
        with app.app_context():  # the bridge's pump thread asks
            now = db.session.execute(select(VM.host_id, VM.state).where(VM.uuid == vm_uuid)).first()
        return now is not None and (now.state == MIGRATING or now.host_id != host_id)

    return moved


def open_screen(vm_uuid: str) -> tuple[Far, Callable[[], LimenError]]:
    """The VM's VNC server; its end is VNC_CLOSED, or VM_MIGRATED when the VM moved."""
    moved = _moved(vm_uuid)
    far = runtime.on(vm_uuid).hypervisor.display.open(vm_uuid, current_app.config["VNC_CONNECT_TIMEOUT"])
    return far, lambda: VMMigrated() if moved() else VNCClosed()


def open_serial(vm_uuid: str, session_id: int, take_over: bool) -> tuple[Far, Callable[[], LimenError]]:
    """The VM's serial line, which one client holds at a time: SERIAL_BUSY names who holds it,
    unless ``take_over``. Its end says whether the VM closed it (SERIAL_CLOSED) or someone took
    it over (SERIAL_TAKEN_OVER, by whom)."""
    hypervisor = runtime.on(vm_uuid).hypervisor
    try:
        line = hypervisor.serial.open(vm_uuid, take_over)
    except SerialBusy:
        raise SerialBusy(_serial_holder(vm_uuid, session_id) or OUTSIDER) from None
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    moved = _moved(vm_uuid)

    def ended() -> LimenError:
        if moved():
            return VMMigrated()
        if line.stalled:
            return SerialClosed(f"The serial line took no input for {serial.SEND_TIMEOUT:g} s: is the VM paused?")
        if line.ended != serial.FAILED:
            return SerialClosed()
        with app.app_context():  # the bridge's pump thread asks: who opened it after us?
            taker = _serial_holder(vm_uuid, session_id, newer=True)
        if taker is None and not hypervisor.connection.answering():
            return HypervisorUnavailable("The libvirt connection was lost.")
        return SerialTakenOver(taker or OUTSIDER)

    return line, ended


SERIAL_OPEN = b'{"event": "open"}'
OUTSIDER = "a client outside LIMEN (such as virsh console)"


def _serial_holder(vm_uuid: str, session_id: int, newer: bool = False) -> str | None:
    """The user of the latest other open serial console of the VM (opened after ours: ``newer``)."""
    query = (
        select(User.username)
        .join(ConsoleSession, ConsoleSession.user_id == User.id)
        .where(
            ConsoleSession.vm_uuid == vm_uuid,
            ConsoleSession.kind == SERIAL,
            ConsoleSession.ended_at.is_(None),
            ConsoleSession.id > session_id if newer else ConsoleSession.id != session_id,
        )
        .order_by(ConsoleSession.id.desc())
        .limit(1)
    )
    return db.session.scalar(query)


def serve(
    ws: Any,
    vm_uuid: str,
    *,
    kind: str = SCREEN,
    take_over: bool = False,
    origin: str | None,
    own_origin: str,
    ticket: str | None,
    session_user_id: int | None,
    authorization: str | None = None,
) -> None:
    """The console WebSocket (``kind``: the VM's screen or its serial line), from the Origin
    check to the end of the bridge."""
    conn = frames.Connection(ws.sock)
    ws.connected = False  # the connection is ours now: flask-sock must not close it again
    session_id = user_id = slot = holder = None
    cfg = current_app.config
    try:
        tickets.check_origin(origin, own_origin)
        if authorization and not ticket:
            admitted = tickets.admit_bearer(authorization, vm_uuid)
        else:
            admitted = tickets.redeem(ticket, vm_uuid, session_user_id, kind)
        user_id = admitted.user.id
        held = standing.Standing(user_id, vm_uuid, admitted.login_session_id, admitted.api_token_id)
        (lost,) = standing.revoked([held])
        if lost is not None:
            raise lost
        standing.slots.take(user_id, int(cfg["CONSOLES_PER_USER"]), int(cfg["CONSOLES_MAX"]))
        slot = user_id
        record = ConsoleSession(
            user_id=user_id,
            vm_uuid=vm_uuid,
            kind=kind,
            login_session_id=held.login_session_id,
            api_token_id=held.api_token_id,
        )
        db.session.add(record)
        db.session.commit()
        session_id = record.id
        ensure_running(admitted.user, vm_uuid, cfg["CONSOLE_START_TIMEOUT"])
        if kind == SERIAL:
            holder = _serial_holder(vm_uuid, session_id) if take_over else None
            far, far_closed = open_serial(vm_uuid, session_id, take_over)
        else:
            far, far_closed = open_screen(vm_uuid)
    except Exception as exc:  # every way out says why: never a bare 1006 in the browser
        if isinstance(exc, LimenError):
            err = exc
            log.info("console vm %s refused: %s", vm_uuid, err)
        else:
            err = LimenError()
            log.exception("console vm %s failed", vm_uuid)
        refuse(conn, err)  # first: the browser learns why, whatever follows
        if slot is not None:
            standing.slots.give_back(slot)
        db.session.rollback()
        if session_id is not None:
            _record_end(session_id, err.code, err.message)
        if audited_refusal():
            _audit("console.open", err.code, user_id, vm_uuid, f"{kind}: {err.message}")
        else:
            log.info(
                "console refusal from %s not audited: more than %s",
                request.remote_addr,
                cfg["CONSOLE_REFUSALS_AUDITED"],
            )
        return
    bridge = Bridge(conn, far, far_closed)
    try:  # from here on, whatever fails, the slot, the VM's side and the session are given back
        taken = (
            f", taken over from {holder}" if holder else (", with take-over" if kind == SERIAL and take_over else "")
        )
        _audit("console.open", "ok", user_id, vm_uuid, f"{kind} session {session_id}{taken}")
        db.session.close()  # the bridge may run for hours: hold no database connection
        with _bridges_lock:
            _bridges.add(bridge)
        standing.watch.add(bridge, current_app._get_current_object(), held, bridge.stop)  # type: ignore[attr-defined]
        if conn.sock.family in (socket.AF_INET, socket.AF_INET6):  # behind nginx: a unix socket
            try:
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass  # the browser left while the VM started: the bridge ends at once
        if kind == SERIAL:  # the one text message: the line is held (its bytes are binary)
            try:
                conn.send(frames.TEXT, SERIAL_OPEN)
            except OSError:
                pass  # the browser left: the bridge ends at once
        log.info("%s console vm %s opened by user %s (session %s)", kind, vm_uuid, user_id, session_id)
        bridge.run()
    finally:
        with _bridges_lock:
            _bridges.discard(bridge)
        standing.watch.remove(bridge)
        standing.slots.give_back(user_id)
        far.close()
        _record_end(session_id, bridge.end, bridge.end_detail, bridge.to_client, bridge.from_client)
        _audit(
            "console.close",
            "ok",
            user_id,
            vm_uuid,
            f"{kind} session {session_id}: {bridge.end}, {bridge.to_client} bytes out, {bridge.from_client} in",
        )
        log.info(
            "%s console vm %s closed: %s, %d bytes out, %d in",
            kind,
            vm_uuid,
            bridge.end,
            bridge.to_client,
            bridge.from_client,
        )


def stop_all() -> int:
    """LIMEN is stopping: every open console is told so now (1001 LIMEN_STOPPING, for its page
    to offer to reconnect), rather than find its connection gone. Returns how many."""
    with _bridges_lock:
        bridges = list(_bridges)
    for bridge in bridges:  # each on its own: one browser that stopped reading holds up no other
        threading.Thread(target=bridge.halt, args=(LimenStopping(),), name="limen-stopping", daemon=True).start()
    return len(bridges)


@runtime.at_start
def end_stale_sessions() -> int:
    """At start-up: sessions a previous process left open ended with it."""
    ended = rows_changed(
        update(ConsoleSession)
        .where(ConsoleSession.ended_at.is_(None))
        .values(ended_at=utcnow(), end=LimenRestarted.code)
    )
    db.session.commit()
    return ended


def _record_end(session_id: int, end: str, detail: str | None, out: int = 0, inn: int = 0) -> None:
    """Record how a session ended; a failure to record is logged, never raised into the close."""
    try:
        record = db.session.get(ConsoleSession, session_id)
        assert record is not None, "a session's row outlives it"
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
        # Named as every other row names a VM, once the user was let in (a refusal may be a probe).
        vm = db.session.scalar(select(VM).where(VM.uuid == vm_uuid)) if result == "ok" else None
        audit.record(action, result, actor=user, vm=vm, vm_uuid=vm_uuid, detail=detail)
        db.session.commit()
    except Exception:
        log.exception("console vm %s: auditing %s failed", vm_uuid, action)
        db.session.rollback()
