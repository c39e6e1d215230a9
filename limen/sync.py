"""libvirt → DB: keep each VM row's last seen state true.

libvirt's lifecycle events name the domains that changed; a thread looks up their state and
records it. A full resync (one getAllDomainStats call) runs at start, after every reconnect and
every RESYNC_INTERVAL seconds, so that a lost event cannot leave the table wrong for long.
Rows that an Operation owns (creating, deleting) are left to that Operation.

Reading libvirt and writing the row happen under one lock, and so does an Operation's hand-back
of a row it owned: otherwise a state read just before a change could be written just after it,
and the table would show the past.
"""

import logging
import queue
import threading
import time

from flask import Flask
from prometheus_client import Histogram
from sqlalchemy import select, update

from .changes import Changes
from .errors import HypervisorUnavailable, LimenError
from .extensions import cut, db, rows_changed
from .hypervisor import DomainState, Forward, Hypervisor
from .models import CREATING, DELETING, ERROR, LOCAL_HOST, MIGRATING, MISSING, VM, UnmanagedDomain, utcnow
from .models import Forward as ForwardRow

log = logging.getLogger(__name__)
OWNED_BY_OPERATION = (CREATING, DELETING, MIGRATING)
_FULL = object()
_STOP = object()


REASON_LENGTH = 512  # VM.state_reason's column


def _desired(current: DomainState | None) -> tuple[str, str | None]:
    """The row's state and reason for what libvirt reports (a bulk UPDATE is not cut by the
    models' hook, so the reason is cut here)."""
    if current is None:
        return MISSING, None
    return current.state, cut(current.reason, REASON_LENGTH) if current.reason else None


def _write(host_id: int, uuid: str, current: DomainState | None) -> bool:
    """Write what host ``host_id``'s libvirt reports for one VM into its row, if the VM is that
    host's and no Operation owns the row. A vanished domain makes the row ``missing``, except an
    ``error`` row, whose reason already says why it has no domain. Does not commit."""
    state, reason = _desired(current)
    keep = (*OWNED_BY_OPERATION, ERROR) if current is None else OWNED_BY_OPERATION
    changed = rows_changed(
        update(VM)
        .where(
            VM.uuid == uuid,
            VM.host_id == host_id,
            VM.state.not_in(keep),
            (VM.state != state) | VM.state_reason.is_distinct_from(reason),
        )
        .values(state=state, state_reason=reason, state_seen_at=utcnow())
    )
    if changed:
        log.info("vm %s is now %s%s", uuid, state, f" ({reason})" if reason else "")
    return bool(changed)


class StateSync:
    """The thread that applies one host's libvirt events to the rows of its VMs, resyncs, and
    reconnects.

    When libvirt cannot be reached it says so (``reachable``, which the table shows as a
    banner) and retries with a growing pause, at most ``MAX_BACKOFF`` seconds, so that LIMEN
    is back within moments of libvirtd; every reconnect re-registers the event callbacks and
    is followed by a full resync."""

    MIN_BACKOFF, MAX_BACKOFF = 0.25, 2.0

    def __init__(
        self,
        app: Flask,
        hypervisor: Hypervisor,
        changes: Changes,
        interval: float,
        event_lag: Histogram | None = None,
        host_id: int = LOCAL_HOST,
    ):
        self.app, self.host_id = app, host_id
        self.hypervisor = hypervisor
        self.changes = changes
        # Reading libvirt and writing a row are one step under it; use cases that write what
        # the sync also writes (forget, adopt) hold it too.
        self.state_lock = threading.RLock()
        self.interval = interval
        self.event_lag = event_lag  # a histogram: from an event's arrival to its row's update
        self._arrived: dict[str, float] = {}
        self.reachable = True  # until a failure says otherwise
        self.unreachable_reason: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._generation: int | None = None
        self._backoff = self.MIN_BACKOFF

    def _set_reachable(self, reachable: bool, reason: str | None = None) -> None:
        if reachable != self.reachable:
            log.warning("libvirt %s", "reachable again" if reachable else f"unreachable: {reason}")
            self.reachable, self.unreachable_reason = reachable, reason
            self.changes.bump()  # the table shows (or drops) its banner at the next poll

    @property
    def problem(self) -> str | None:
        """Why libvirt cannot be reached right now, or None."""
        return None if self.reachable else (self.unreachable_reason or "unreachable")

    def _commit(self, changed: bool) -> None:
        db.session.commit()
        if changed:
            self.changes.bump()

    def refresh(self, uuid: str) -> DomainState | None:
        """Read one VM's state from libvirt and record it; returns what libvirt said."""
        with self.state_lock:
            current = self.hypervisor.domains.state(uuid)
            changed = _write(self.host_id, uuid, current)
            self._commit(changed)
        if changed and current is not None and current.state == "running":
            self._started(uuid)
        elif changed and current is not None and current.state == "shutoff":
            self._stopped(uuid)
        return current

    def apply_forwards(self, uuid: str) -> None:
        """Give the VM's running QEMU the host-port forwards its row keeps (PortInUse when a
        port is taken). Whoever started it, LIMEN or another tool, they are applied."""
        rows = db.session.scalars(select(ForwardRow).join(VM).where(VM.uuid == uuid)).all()
        wanted = [Forward(f.protocol, f.host_address, f.host_port, f.guest_port) for f in rows]
        db.session.commit()  # no database connection held while QEMU answers
        self.hypervisor.networks.apply_forwards(uuid, wanted)

    def _started(self, uuid: str) -> None:
        """A VM was seen running after another state: its QEMU may be new, so its forwards
        go in again (applying them twice changes nothing)."""
        try:
            self.apply_forwards(uuid)
        except LimenError as e:
            log.warning("vm %s: its port forwards could not be applied: %s", uuid, e)

    def _stopped(self, uuid: str) -> None:
        """A VM was seen shut off after another state: it has what it is set to now, so
        nothing waits for its next start any more (limen.vms.edit)."""
        seen = db.session.execute(
            select(VM.vcpus, VM.memory_mib, VM.pending_vcpus, VM.pending_memory_mib).where(VM.uuid == uuid)
        ).first()
        db.session.commit()  # no database connection held while libvirt answers
        if seen is None:
            return
        try:
            r = self.hypervisor.domains.resources(uuid)
        except LimenError as e:
            log.warning("vm %s: its vCPUs and memory could not be read: %s", uuid, e)
            return
        # Written only over the row as it was read: an edit that changed it meanwhile wrote what
        # libvirt had then, and wins.
        unchanged = (
            (VM.vcpus == seen[0])
            & (VM.memory_mib == seen[1])
            & VM.pending_vcpus.is_not_distinct_from(seen[2])
            & VM.pending_memory_mib.is_not_distinct_from(seen[3])
        )
        values = dict(vcpus=r.vcpus, memory_mib=r.memory_mib, pending_vcpus=None, pending_memory_mib=None)
        if tuple(seen) == (r.vcpus, r.memory_mib, None, None):
            return
        self._commit(bool(rows_changed(update(VM).where(VM.uuid == uuid, unchanged).values(**values))))

    def hand_back(self, uuid: str, *, error: str | None = None) -> None:
        """An Operation gives up the row it owned: with ``error``, the row is an ``error``
        with that reason; without, it shows what libvirt reports now."""
        with self.state_lock:
            if error is None:
                state, reason = _desired(self.hypervisor.domains.state(uuid))
            else:
                state, reason = ERROR, cut(error, REASON_LENGTH)
            db.session.execute(
                update(VM)
                .where(VM.uuid == uuid, VM.host_id == self.host_id)
                .values(state=state, state_reason=reason, state_seen_at=utcnow())
            )
            self._commit(True)
        if state == "shutoff":
            self._stopped(uuid)

    def notify(self, uuid: str | None) -> None:
        """Called from libvirt's event thread: only queue. None: the connection closed."""
        if uuid:
            self._arrived.setdefault(uuid, time.monotonic())
        self._queue.put(uuid)

    def _applied(self, uuids) -> None:
        now = time.monotonic()
        for uuid in uuids:
            arrived = self._arrived.pop(uuid, None)
            if arrived is not None and self.event_lag is not None:
                self.event_lag.observe(now - arrived)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="limen-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self) -> None:
        next_full = 0.0
        while True:
            try:
                item = self._queue.get(timeout=max(0.0, next_full - time.monotonic()))
            except queue.Empty:
                item = _FULL
            items = {item}
            while not self._queue.empty():
                items.add(self._queue.get_nowait())
            if _STOP in items:
                return
            full = _FULL in items or None in items or time.monotonic() >= next_full
            if None in items and self.reachable:  # the connection closed: say so at once
                self._set_reachable(False, "the connection to libvirtd closed")
            try:
                with self.app.app_context():
                    if full or self.hypervisor.connection.generation != self._generation:
                        self.resync_all()
                        next_full = time.monotonic() + self.interval
                    else:
                        self._apply_events({i for i in items if isinstance(i, str)})
                self._applied([i for i in items if isinstance(i, str)])
                self._backoff = self.MIN_BACKOFF
                self._set_reachable(True)
            except HypervisorUnavailable as e:
                self._set_reachable(False, e.message)
                next_full = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.MAX_BACKOFF)
            except LimenError as e:  # libvirt answered with an error: try again, not at once
                log.warning("state sync: %s", e)
                next_full = time.monotonic() + self._backoff
                self._backoff = min(self._backoff * 2, self.MAX_BACKOFF)
            except Exception:
                log.exception("state sync failed")
                next_full = time.monotonic() + self.MAX_BACKOFF

    def resync_all(self) -> None:
        """Compare every row with one getAllDomainStats answer; write only what differs. Domains
        LIMEN has no row for are kept in the unmanaged list, for admins to see and adopt."""
        with self.state_lock:
            domains = self.hypervisor.domains.all_states()
            self._generation = self.hypervisor.connection.generation
            known = set(db.session.scalars(select(VM.uuid)))  # on any host: none is unmanaged here
            rows = db.session.execute(
                select(VM.uuid, VM.state, VM.state_reason).where(
                    VM.host_id == self.host_id, VM.state.not_in(OWNED_BY_OPERATION)
                )
            )
            changed = False
            started: list[str] = []
            stopped: list[str] = []
            for uuid, state, reason in rows.all():
                current = domains[uuid][1] if uuid in domains else None
                if (state, reason) != _desired(current) and _write(self.host_id, uuid, current):
                    changed = True
                    if current is not None and current.state in ("running", "shutoff"):
                        (started if current.state == "running" else stopped).append(uuid)
            changed |= _record_unmanaged(self.host_id, {u: d for u, d in domains.items() if u not in known})
            self._commit(changed)
        for uuid in started:
            self._started(uuid)
        for uuid in stopped:
            self._stopped(uuid)

    def _apply_events(self, uuids: set[str]) -> None:
        """Refresh the rows the events name; an event about a domain LIMEN has no row for (one
        another tool defined or removed) updates the unmanaged list by a resync."""
        known = set(db.session.scalars(select(VM.uuid).where(VM.uuid.in_(uuids), VM.host_id == self.host_id)))
        if known != uuids:
            self.resync_all()
            return
        for uuid in uuids:
            self.refresh(uuid)


def _record_unmanaged(host_id: int, domains: dict[str, tuple[str, DomainState]]) -> bool:
    """Make the unmanaged list of host ``host_id`` what ``domains`` says; True when it changed.
    Does not commit."""
    changed = False
    listed = {
        row.uuid: row for row in db.session.scalars(select(UnmanagedDomain).where(UnmanagedDomain.host_id == host_id))
    }
    for uuid, gone in listed.items():
        if uuid not in domains:
            db.session.delete(gone)
            changed = True
    for uuid, (name, current) in domains.items():
        row = listed.get(uuid)
        if row is None:
            db.session.add(
                UnmanagedDomain(uuid=uuid, host_id=host_id, name=name, state=current.state, state_reason=current.reason)
            )
            changed = True
        elif (row.name, row.state, row.state_reason) != (name, current.state, current.reason):
            row.name, row.state, row.state_reason, row.seen_at = name, current.state, current.reason, utcnow()
            changed = True
    return changed
