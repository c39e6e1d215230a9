"""One long-lived libvirt connection per URI, with libvirt's event loop running in a thread.

libvirt needs its default event implementation registered before the first connection is
opened, and something has to run that loop: one daemon thread per process does it. Lifecycle
events only wake waiters and hand the domain's UUID to a callback; no libvirt call is made from
the event thread.
"""

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import ParamSpec, TypeVar

import libvirt

from ..errors import HostUnreachable, HypervisorError, HypervisorUnavailable, InvalidState, LimenError, VMNotFound

log = logging.getLogger(__name__)

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _ignore_libvirt_errors(_ctx, _err) -> None:
    """libvirt prints every error on stderr by default; LIMEN reports them itself."""


libvirt.registerErrorHandler(_ignore_libvirt_errors, None)


def ensure_event_loop() -> None:
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        _loop_thread = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _loop_thread.start()


def event_loop_alive() -> bool:
    return _loop_thread is not None and _loop_thread.is_alive()


_UNREACHABLE_CODES = {libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN}
_UNREACHABLE_DOMAINS = {libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE}


def translate(e: libvirt.libvirtError) -> LimenError:
    """Turn a libvirtError into the project's own error, keeping libvirt's message."""
    code, domain, msg = e.get_error_code(), e.get_error_domain(), e.get_error_message() or str(e)
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return VMNotFound(msg)
    if code in _UNREACHABLE_CODES or domain in _UNREACHABLE_DOMAINS:
        return HypervisorUnavailable(f"libvirt connection lost: {msg}")
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState(msg)
    return HypervisorError(msg)


P = ParamSpec("P")
R = TypeVar("R")


# A thread that serves a request sets a deadline for each of its libvirt calls
# (set_call_deadline); each call then runs on a thread of this pool while the request waits for
# it, at most that long. A call that misses it finishes (or stays stuck on libvirtd) on its own.
_calls = ThreadPoolExecutor(max_workers=32, thread_name_prefix="limen-libvirt-call")
_local = threading.local()


def set_call_deadline(seconds: float | None) -> None:
    """From now on, each of this thread's calls through the hypervisor ends within ``seconds``
    (None: it waits as long as libvirt takes, as background work does)."""
    _local.seconds = seconds


def _call(method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    try:
        return method(*args, **kwargs)
    except libvirt.libvirtError as e:
        raise translate(e) from None


def _called(method: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    _local.inside = True  # a nested call runs right here: the pool never waits on itself
    try:
        return _call(method, *args, **kwargs)
    finally:
        _local.inside = False


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Raise the project's errors instead of libvirtError, and keep the caller's deadline."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        seconds = getattr(_local, "seconds", None)
        if seconds is None or getattr(_local, "inside", False):
            return _call(method, *args, **kwargs)
        future = _calls.submit(functools.partial(_called, method, *args, **kwargs))
        # The method's object (a Host, a Pool …) has the connection, whose watchdog may know
        # before the deadline that libvirtd does not answer: then nobody waits any longer.
        connection = getattr(args[0], "connection", None) if args else None
        deadline = time.monotonic() + seconds
        while True:
            try:
                return future.result(timeout=max(0.0, min(0.25, deadline - time.monotonic())))
            except FutureTimeout:
                late = isinstance(connection, Connection) and not connection.answering()
                if late or time.monotonic() >= deadline:
                    # Not begun (every pool thread waits on libvirtd): it never will be. Begun: it
                    # ends when libvirtd answers, after the caller was told it failed.
                    future.cancel()
                    raise HypervisorUnavailable(f"libvirtd did not answer within {seconds:g} s") from None

    return wrapper


def is_error(e: libvirt.libvirtError, *codes: int) -> bool:
    """Is ``e`` one of libvirt's error ``codes`` (VIR_ERR_NO_DOMAIN …)?"""
    return e.get_error_code() in codes


T = TypeVar("T")
V = TypeVar("V")


def read_each(listed: Iterable[T], read: Callable[[T], V | None], gone: int) -> list[V]:
    """What ``read`` gives of each object a listing named (None: leave it out). Others come and
    go meanwhile: one gone before it was read (libvirt's error ``gone``, VIR_ERR_NO_DOMAIN …) is
    left out too."""
    found = []
    for obj in listed:
        try:
            value = read(obj)
        except libvirt.libvirtError as e:
            if not is_error(e, gone):
                raise
            continue
        if value is not None:
            found.append(value)
    return found


class _Opening:
    """``libvirt.open`` in a thread of its own: a libvirtd that accepts the socket and then
    never answers (stopped, deadlocked) would hold the caller for good. Whoever needs the
    connection waits for it with a deadline; a late answer is taken by the next caller."""

    def __init__(self, uri: str):
        self.done = threading.Event()
        self.conn: libvirt.virConnect | None = None
        self.error: str | None = None
        self.started = time.monotonic()
        threading.Thread(target=self._run, args=(uri,), name="limen-libvirt-open", daemon=True).start()

    def _run(self, uri: str) -> None:
        try:
            self.conn = libvirt.open(uri)
        except libvirt.libvirtError as e:
            self.error = e.get_error_message() or str(e)
        finally:
            self.done.set()


class Connection:
    """A lazily (re)opened connection. ``get()`` returns a live one or raises
    HypervisorUnavailable; ``generation`` grows at every (re)connect so that state can be
    resynchronised after a gap in events.

    A libvirtd that stops answering (stopped, deadlocked) holds no request past its deadline:
    - opening waits at most ``timeout / 2`` (``_Opening``);
    - a watchdog thread asks libvirtd for its version every second; once an answer is
      ``timeout / 2`` late, ``get()`` refuses at once;
    - a call already waiting when libvirtd stopped answering holds only a pool thread: the
      request waits for it until its deadline (``set_call_deadline``);
    - libvirt's keepalive closes a connection that has been silent for 30 s.
    When libvirtd answers again, so does everything.
    """

    def __init__(self, uri: str, on_domain_event, timeout: float = 5.0):
        self.uri = uri
        self.timeout = timeout
        # Another host's libvirt has a transport in its scheme (qemu+libssh2://…); when it cannot
        # be reached that is HOST_UNREACHABLE, and the local one's HYPERVISOR_UNAVAILABLE.
        self.is_local = "+" not in uri.partition(":")[0]
        self._unavailable = HypervisorUnavailable if self.is_local else HostUnreachable
        self.generation = 0
        self.changed = threading.Condition()  # notified on every lifecycle and reboot event
        self.events = 0  # counts them, under ``changed``
        self.reboots: dict[str, int] = {}  # the guest resets seen per domain UUID, under ``changed``
        self._on_domain_event = on_domain_event
        self._lock = threading.Lock()
        self._conn: libvirt.virConnect | None = None
        self._closed_by_peer = False
        self._callback_ids: list[int] = []
        self._driver_of: libvirt.virConnect | None = None  # the connection is_qemu answered for
        self._qemu = False
        self._opening: _Opening | None = None
        self._asked_at: float | None = None  # when the watchdog's question still unanswered was asked
        self._dropped = threading.Event()  # set when the connection being watched is dropped
        self._watchdog: threading.Thread | None = None

    def get(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None and not self._closed_by_peer:
            self.check_answering()
            return conn
        with self._lock:
            if self._conn is not None and not self._closed_by_peer:
                return self._conn
            self._drop()
            ensure_event_loop()
            if self._opening is None:
                self._opening = _Opening(self.uri)
            opening = self._opening
        # Half the deadline from when the opening began: while libvirtd stays silent, later
        # callers are refused at once rather than each wait anew.
        if not opening.done.wait(max(0.0, opening.started + self.timeout / 2 - time.monotonic())):
            raise self._unavailable(f"libvirtd did not answer {self.uri} within {self.timeout / 2:g} s")
        with self._lock:
            if self._opening is opening:  # the first back installs it
                self._opening = None
                if opening.conn is not None:
                    self._install(opening.conn)
            if opening.error is not None:
                raise self._unavailable(f"cannot connect to {self.uri}: {opening.error}")
            if self._conn is None:
                raise self._unavailable(f"the connection to {self.uri} was lost as it opened")
            return self._conn

    def answering(self) -> bool:
        """False once the watchdog's question has waited longer than half the deadline."""
        asked = self._asked_at
        return asked is None or time.monotonic() - asked <= self.timeout / 2

    def check_answering(self) -> None:
        """HypervisorUnavailable if libvirtd does not answer (``answering``)."""
        if not self.answering():
            raise self._unavailable(f"libvirtd at {self.uri} has not answered for over {self.timeout / 2:g} s")

    def _install(self, conn: libvirt.virConnect) -> None:
        """Keepalive, the close callback, the event callbacks and the watchdog: a connection
        ready for use (under ``_lock``)."""
        # The last resort, for a peer gone for good (a remote host cut off): libvirt closes the
        # connection after 30 s without an answer to its pings. Not the deadline: libvirt
        # 9.0's client, closing a connection several threads wait on, leaves all but one of
        # them waiting for good, or crashes; requests have their deadline instead.
        try:
            conn.setKeepAlive(5, 5)
        except libvirt.libvirtError:
            pass  # local drivers (test://) have no keepalive
        try:
            conn.registerCloseCallback(self._on_close, None)
        except libvirt.libvirtError:
            pass
        self._callback_ids = [
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_lifecycle, None),
            conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._on_reboot, None),
        ]
        self._conn, self._closed_by_peer, self._asked_at = conn, False, None
        self.generation += 1
        self._dropped = threading.Event()
        self._watchdog = threading.Thread(
            target=self._watch, args=(conn, self._dropped), name="limen-libvirt-watchdog", daemon=True
        )
        self._watchdog.start()
        log.info("connected to %s", self.uri)

    def _watch(self, conn: libvirt.virConnect, dropped: threading.Event) -> None:
        """Ask libvirtd a trivial question every second, for as long as ``conn`` is the
        connection; how late an answer is tells ``get()`` whether libvirtd still answers."""
        ask = conn.getLibVersion
        while self._conn is conn and not self._closed_by_peer:
            self._asked_at = time.monotonic()
            try:
                ask()
            except libvirt.libvirtError:
                pass  # the connection is going: the close callback says so
            if self._conn is not conn:
                return  # dropped while it asked: the time asked is a newer watchdog's now
            if self._asked_at is not None and time.monotonic() - self._asked_at > self.timeout / 2:
                log.warning("libvirtd at %s answers again", self.uri)
            self._asked_at = None
            if dropped.wait(1.0):  # the next question in a second, unless it is gone
                return

    @property
    def is_qemu(self) -> bool:
        """Does this connection drive QEMU (a monitor, resets, guest agents)? The test driver
        runs no guest. Asked once per connection."""
        conn = self.get()
        if self._driver_of is not conn:
            self._driver_of, self._qemu = conn, conn.getType() == "QEMU"
        return self._qemu

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _drop(self) -> None:
        """Let go of the connection, at once. Deregistering its callbacks and closing it are
        calls to libvirtd, which may not answer now: a thread of its own makes them once the
        watchdog no longer waits on it (``_release``)."""
        self._dropped.set()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        callback_ids, self._callback_ids = self._callback_ids, []
        watchdog, self._watchdog = self._watchdog, None
        threading.Thread(
            target=_release, args=(self.uri, conn, callback_ids, watchdog), name="limen-libvirt-close", daemon=True
        ).start()

    def wait_for_event(self, seen: int, timeout: float) -> None:
        """Return when a lifecycle event comes after the first ``seen`` (``events`` read
        earlier), or after ``timeout`` seconds: the caller then looks again."""
        with self.changed:
            if self.events == seen:
                self.changed.wait(timeout)

    def _on_close(self, conn, reason, _opaque) -> None:
        if conn is not self._conn:
            return  # one let go of already, and not yet released
        log.warning("libvirt closed the connection to %s (reason %s)", self.uri, reason)
        self._closed_by_peer = True
        self._notify(None)

    def _on_lifecycle(self, _conn, dom, _event, _detail, _opaque) -> None:
        self._notify(dom.UUIDString())

    def _on_reboot(self, _conn, dom, _opaque) -> None:
        """The guest was reset (it rebooted): counted, for a reboot request to wait on."""
        uuid = dom.UUIDString()
        with self.changed:
            self.reboots[uuid] = self.reboots.get(uuid, 0) + 1
            self.events += 1
            self.changed.notify_all()

    def _notify(self, uuid: str | None) -> None:
        with self.changed:
            self.events += 1
            self.changed.notify_all()
        self._on_domain_event(uuid)


# How long a connection let go of waits for its watchdog's question to be answered. Asleep
# between questions, the watchdog ends at once; asking a libvirtd that does not answer, it waits
# until libvirtd does, or until keepalive closes the connection (30 s of silence) and the call
# fails (or, with libvirt 9.0's client, may never return).
RELEASE_DEADLINE = 60.0


def _release(uri: str, conn: libvirt.virConnect, callback_ids: list[int], watchdog: threading.Thread | None) -> None:
    """Deregister ``conn``'s callbacks and close it, once ``watchdog`` no longer waits on it:
    libvirt 9.0's client, closing a connection a call waits on, can leave that call waiting for
    good. Still waiting after RELEASE_DEADLINE, the connection is left as it is."""
    if watchdog is not None:
        watchdog.join(RELEASE_DEADLINE)
        if watchdog.is_alive():
            log.warning("%s: no answer in %g s; its connection is left as it is", uri, RELEASE_DEADLINE)
            return
    try:
        for callback_id in callback_ids:
            conn.domainEventDeregisterAny(callback_id)
        conn.unregisterCloseCallback()
    except libvirt.libvirtError:
        pass
    try:
        conn.close()
    except libvirt.libvirtError:
        pass
