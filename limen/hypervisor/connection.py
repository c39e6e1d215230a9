"""One long-lived libvirt connection per URI, with libvirt's event loop running in a thread.

libvirt needs its default event implementation registered before the first connection is
opened, and something has to run that loop: one daemon thread per process does it. Lifecycle
events only wake waiters and hand the domain's UUID to a callback; no libvirt call is made from
the event thread.
"""

import functools
import logging
import threading
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import libvirt

from ..errors import HypervisorError, HypervisorUnavailable, InvalidState, LimenError, VMNotFound

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


def translated(method: Callable[P, R]) -> Callable[P, R]:
    """Raise the project's errors instead of libvirtError."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except libvirt.libvirtError as e:
            raise translate(e) from None

    return wrapper


def is_error(e: libvirt.libvirtError, *codes: int) -> bool:
    """Is ``e`` one of libvirt's error ``codes`` (VIR_ERR_NO_DOMAIN …)?"""
    return e.get_error_code() in codes


class Connection:
    """A lazily (re)opened connection. ``get()`` returns a live one or raises
    HypervisorUnavailable; ``generation`` grows at every (re)connect so that state can be
    resynchronised after a gap in events."""

    def __init__(self, uri: str, on_domain_event):
        self.uri = uri
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

    def get(self) -> libvirt.virConnect:
        conn = self._conn
        if conn is not None and not self._closed_by_peer:
            return conn
        with self._lock:
            if self._conn is not None and not self._closed_by_peer:
                return self._conn
            self._drop()
            ensure_event_loop()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as e:
                raise HypervisorUnavailable(f"cannot connect to {self.uri}: {e.get_error_message()}") from None
            try:
                conn.setKeepAlive(5, 3)
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
            self._conn, self._closed_by_peer = conn, False
            self.generation += 1
            log.info("connected to %s", self.uri)
            return conn

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
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            for callback_id in self._callback_ids:
                conn.domainEventDeregisterAny(callback_id)
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            pass
        self._callback_ids = []
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def wait_for_event(self, seen: int, timeout: float) -> None:
        """Return when a lifecycle event comes after the first ``seen`` (``events`` read
        earlier), or after ``timeout`` seconds: the caller then looks again."""
        with self.changed:
            if self.events == seen:
                self.changed.wait(timeout)

    def _on_close(self, _conn, reason, _opaque) -> None:
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
