"""The only package that imports libvirt. Everything above it speaks in UUIDs, plain values
and the project's own exceptions (limen.errors); libvirtError never leaves this package."""
import functools
import socket
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import InvalidState, LimenError, StorageFailed, VMNotFound, VMStartFailed, VNCUnreachable
from . import domain_xml, storage
from .connection import Connection, event_loop_alive, translate  # noqa: F401  (re-exported)
from .domain_xml import DomainSpec

__all__ = ["Hypervisor", "DomainState", "DomainSpec", "HostLimits"]

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "guest-crashed",  # QEMU still runs (on_crash=preserve)
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
# Reasons worth showing beside a state ("shut off (crashed)"); the rest say nothing new.
_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF: {
        libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shut down",
        libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "forced off",
        libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
        libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed to start",
        libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "stopped by libvirtd",
    },
    libvirt.VIR_DOMAIN_PAUSED: {
        libvirt.VIR_DOMAIN_PAUSED_USER: "paused by a user",
        libvirt.VIR_DOMAIN_PAUSED_IOERROR: "I/O error",
        libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
        libvirt.VIR_DOMAIN_PAUSED_CRASHED: "guest crashed",
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
        libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: "shutting down",
    },
    libvirt.VIR_DOMAIN_RUNNING: {
        libvirt.VIR_DOMAIN_RUNNING_CRASHED: "guest crashed",
        libvirt.VIR_DOMAIN_RUNNING_WAKEUP: "woken up",
    },
    libvirt.VIR_DOMAIN_CRASHED: {libvirt.VIR_DOMAIN_CRASHED_PANICKED: "guest panicked"},
}
# States with a QEMU process that force-off can end (a "crashed" VM whose QEMU died has none).
ACTIVE_STATES = frozenset({"running", "paused", "shutting-down", "suspended", "guest-crashed"})


@dataclass(frozen=True)
class DomainState:
    state: str
    reason: str | None = None

    @classmethod
    def from_libvirt(cls, state: int, reason: int) -> "DomainState":
        if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            # Not a shutdown anyone asked for: its QEMU process died.
            return cls("crashed", "the QEMU process ended unexpectedly (libvirt: shut off, crashed)")
        return cls(_STATES.get(state, "nostate"), _REASONS.get(state, {}).get(reason))


@dataclass(frozen=True)
class HostLimits:
    cpus: int
    memory_mib: int


def _libvirt_errors(method):
    """Raise the project's errors instead of libvirtError."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except libvirt.libvirtError as e:
            raise translate(e) from None

    return wrapper


class Hypervisor:
    def __init__(self, uri: str, pool: str, pool_dir: str, network: str, cpu_mode: str = "",
                 on_domain_event=None, *, media_pool: str, media_dir: str, domain_type: str = ""):
        self.uri = uri
        self.cpu_mode = cpu_mode
        self.pool_name = pool
        self.pool_dir = pool_dir
        self.media_pool_name = media_pool
        self.media_dir = media_dir
        self.network = network
        self.domain_type = domain_type  # "": KVM when offered, else TCG
        self.connection = Connection(uri, on_domain_event or (lambda uuid: None))
        self._guest: tuple[str, str] | None = None
        self._firmware: set[str] | None = None
        self._pool_lock = threading.Lock()

    def close(self) -> None:
        self.connection.close()

    @property
    def _conn(self) -> libvirt.virConnect:
        return self.connection.get()

    def _dom(self, uuid: str) -> libvirt.virDomain:
        return self._conn.lookupByUUIDString(uuid)

    # -- host ------------------------------------------------------------------------------
    @_libvirt_errors
    def host_limits(self) -> HostLimits:
        _model, memory_mib, cpus, *_ = self._conn.getInfo()
        return HostLimits(cpus=cpus, memory_mib=memory_mib)

    @_libvirt_errors
    def guest_choice(self) -> tuple[str, str]:
        """(domain type, arch) for new VMs, decided once per process from capabilities."""
        if self._guest is None:
            domain_type, arch = domain_xml.guest_choice(self._conn.getCapabilities())
            self._guest = (self.domain_type or domain_type, arch)
        return self._guest

    @_libvirt_errors
    def uefi_available(self) -> bool:
        """Can new VMs boot UEFI firmware (OVMF installed, and libvirt able to pick it)?"""
        if self._firmware is None:
            domain_type, arch = self.guest_choice()
            try:
                caps = self._conn.getDomainCapabilities(None, arch, "q35", domain_type, 0)
                self._firmware = domain_xml.firmware_offered(caps)
            except libvirt.libvirtError as e:
                if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG,
                                              libvirt.VIR_ERR_CONFIG_UNSUPPORTED):
                    raise
                self._firmware = set()  # a driver that cannot say offers none (the test driver)
        return "efi" in self._firmware

    # -- storage ---------------------------------------------------------------------------
    def _pool(self) -> libvirt.virStoragePool:
        with self._pool_lock:  # two first requests must not both define the pool
            return storage.ensure_pool(self._conn, self.pool_name, self.pool_dir)

    def _media_pool(self) -> libvirt.virStoragePool:
        with self._pool_lock:
            return storage.ensure_pool(self._conn, self.media_pool_name, self.media_dir)

    @_libvirt_errors
    def pool_free_bytes(self) -> int:
        return storage.free_bytes(self._pool())

    @_libvirt_errors
    def create_volume(self, name: str, gib: int) -> None:
        storage.create_volume(self._pool(), name, gib)

    @_libvirt_errors
    def delete_volume(self, name: str) -> bool:
        return storage.delete_volume(self._pool(), name)

    @_libvirt_errors
    def volume_names(self) -> set[str]:
        return storage.volume_names(self._pool())

    @_libvirt_errors
    def create_overlay(self, name: str, base_volume: str, gib: int) -> None:
        """A VM disk of ``gib`` GiB on the media pool's image ``base_volume``."""
        base = storage.volume(self._media_pool(), base_volume).path()
        storage.create_volume(self._pool(), name, gib, backing_path=base)

    @_libvirt_errors
    def upload_volume(self, name: str, data: bytes) -> None:
        """A small volume in the VM pool with ``data`` in it (a cloud-init seed ISO)."""
        storage.upload(self._conn, self._pool(), name, len(data), [data])

    # -- installation media ----------------------------------------------------------------
    @_libvirt_errors
    def media_free_bytes(self) -> int:
        return storage.free_bytes(self._media_pool())

    @_libvirt_errors
    def upload_medium(self, name: str, size: int, chunks) -> None:
        """Stream an upload into the media pool; nothing is left of it when it fails."""
        storage.upload(self._conn, self._media_pool(), name, size, chunks)

    @_libvirt_errors
    def medium_head(self, name: str, size: int) -> bytes:
        return storage.head(self._conn, storage.volume(self._media_pool(), name), size)

    @_libvirt_errors
    def media_files(self) -> dict[str, int]:
        """Each file in the media pool (its directory) and its size."""
        return storage.files(self._media_pool())

    @_libvirt_errors
    def medium_size(self, name: str) -> int | None:
        """The size of one file in the media pool, or None when it has no such file."""
        pool = self._media_pool()
        pool.refresh(0)  # a file copied in by hand is seen
        try:
            return storage.file_size(storage.volume(pool, name))
        except StorageFailed:
            return None

    @_libvirt_errors
    def delete_medium(self, name: str) -> bool:
        return storage.delete_volume(self._media_pool(), name)

    @_libvirt_errors
    def medium_users(self, name: str) -> list[str]:
        """What uses a medium: every domain with it in a drive, and every VM disk that
        reads through to it."""
        try:
            path = storage.volume(self._media_pool(), name).path()
        except StorageFailed:  # no such volume: nothing can use it
            return []
        refs = {path, f"{self.media_pool_name}/{name}"}
        users = [dom.name() for dom in self._conn.listAllDomains()
                 if refs & domain_xml.disk_sources(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                 or (dom.isActive() and refs & domain_xml.disk_sources(dom.XMLDesc(0)))]
        return users + [f"disk {v}" for v in storage.backed_by(self._pool(), path)]

    # -- domains ---------------------------------------------------------------------------
    @_libvirt_errors
    def name_in_use(self, name: str) -> bool:
        try:
            self._conn.lookupByName(name)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise
        return True

    @_libvirt_errors
    def define(self, *, uuid: str, name: str, vcpus: int, memory_mib: int, volume: str,
               profile=None, iso: str | None = None, seed: str | None = None,
               boot_cdrom: bool = False) -> None:
        """Define the domain: its disk is the VM pool's ``volume``; its CD-ROM holds the media
        pool's ``iso`` or the VM pool's ``seed``, or nothing. ``profile`` (limen.profiles)
        sets machine, buses, models and firmware."""
        domain_type, arch = self.guest_choice()
        path = storage.volume(self._pool(), volume).path()
        cdrom = (storage.volume(self._media_pool(), iso).path() if iso
                 else storage.volume(self._pool(), seed).path() if seed else None)
        devices = {}
        if profile is not None:
            devices = dict(machine=profile.machine, disk_bus=profile.disk_bus, nic_model=profile.nic_model,
                           firmware=profile.firmware, clock=profile.clock)
        spec = DomainSpec(name=name, uuid=uuid, vcpus=vcpus, memory_mib=memory_mib,
                          domain_type=domain_type, arch=arch, disk_path=path,
                          network=self.network, cpu_mode=self.cpu_mode,
                          cdrom_path=cdrom, boot_cdrom=boot_cdrom, **devices)
        self._conn.defineXML(domain_xml.build(spec))

    @_libvirt_errors
    def change_cdrom(self, uuid: str, iso: str | None, boot_first: bool | None = None) -> None:
        """Put the media pool's ``iso`` in the VM's CD-ROM drive, or eject it (None): at once
        when the VM runs, and in its definition for the next start. ``boot_first`` True boots
        from the drive before the disk from the next start, False from the disk only; None
        leaves the boot order. A VM with no drive gets one while it is shut off."""
        dom = self._dom(uuid)
        path = storage.volume(self._media_pool(), iso).path() if iso else None
        active = dom.isActive()
        if active:
            found = domain_xml.find_cdrom(dom.XMLDesc(0))
            if found is None:
                raise InvalidState("This VM has no CD-ROM drive yet: LIMEN adds one while it is shut off.")
            # The running VM's drive and its definition both; FORCE opens a tray the guest locked.
            dom.updateDeviceFlags(ET.tostring(domain_xml.cdrom(path, *found), encoding="unicode"),
                                  libvirt.VIR_DOMAIN_AFFECT_CONFIG | libvirt.VIR_DOMAIN_AFFECT_LIVE
                                  | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # with the new drive, after a live change
        try:
            if not active:
                xml = domain_xml.with_cdrom(xml, path)
            if boot_first is not None:
                xml = domain_xml.with_boot(xml, boot_first)
        except ValueError as e:
            raise InvalidState(f"{e}.") from None
        if not active or boot_first is not None:
            self._conn.defineXML(xml)  # one new definition; every driver can (a live change cannot)

    @_libvirt_errors
    def start(self, uuid: str) -> None:
        dom = self._dom(uuid)
        try:
            dom.create()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_OPERATION_INVALID and dom.isActive():
                return  # already running: the goal is reached
            raise VMStartFailed(e.get_error_message()) from None

    @_libvirt_errors
    def shutdown(self, uuid: str) -> None:
        """Ask the guest to power off (ACPI power button, or its agent if it has one)."""
        self._dom(uuid).shutdown()

    @_libvirt_errors
    def reboot(self, uuid: str) -> None:
        self._dom(uuid).reboot(0)

    @_libvirt_errors
    def destroy(self, uuid: str) -> None:
        """Power off at once; a domain that is not running is left as it is."""
        dom = self._dom(uuid)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if e.get_error_code() != libvirt.VIR_ERR_OPERATION_INVALID:
                    raise

    @_libvirt_errors
    def undefine(self, uuid: str, keep_nvram: bool = False) -> bool:
        """Remove the domain's definition; False when there was none. ``keep_nvram`` keeps its
        firmware variables file (an adopted VM's files are not LIMEN's to delete)."""
        try:
            dom = self._dom(uuid)
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False
            raise
        # A saved state and snapshot and checkpoint records go with it, and the firmware
        # variables unless kept (domains adopted from other tools may have them; a plain
        # undefine refuses then).
        nvram = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if keep_nvram else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        try:
            dom.undefineFlags(nvram | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                              | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                              | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.undefine()  # a driver without those flags (the test driver) has nothing of the kind
        return True

    @_libvirt_errors
    def open_display(self, uuid: str, timeout: float) -> socket.socket:
        """A connected socket to the running domain's VNC server.

        On a local connection libvirt hands over a socket of its own (openGraphicsFD), so no
        TCP port is involved; elsewhere LIMEN connects to the listen address and live port from
        the domain XML, retrying briefly while QEMU opens it."""
        dom = self._dom(uuid)
        try:
            fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
            return socket.socket(fileno=fd)
        except libvirt.libvirtError as e:
            if e.get_error_code() not in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                                          libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):  # remote: no fd passing
                raise VNCUnreachable(e.get_error_message()) from None
        target = domain_xml.vnc_address(dom.XMLDesc(0))
        if target is None:
            raise VNCUnreachable("the VM has no VNC display")
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                sock = socket.create_connection(target, timeout=max(remaining, 0.1))
            except OSError as e:
                if remaining <= 0:
                    raise VNCUnreachable(f"cannot connect to {target[0]}:{target[1]}: {e.strerror or e}") from None
                with self.connection.changed:  # a lifecycle event may explain it; else retry soon
                    self.connection.changed.wait(min(0.1, remaining))
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock

    @_libvirt_errors
    def state(self, uuid: str) -> DomainState | None:
        """The domain's state, or None when libvirt has no such domain."""
        try:
            state, reason = self._dom(uuid).state()
        except libvirt.libvirtError as e:
            if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        return DomainState.from_libvirt(state, reason)

    @_libvirt_errors
    def all_states(self) -> dict[str, tuple[str, DomainState]]:
        """Every domain's name and state, in one call."""
        stats = self._conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        return {dom.UUIDString(): (dom.name(), DomainState.from_libvirt(s["state.state"], s["state.reason"]))
                for dom, s in stats}

    @_libvirt_errors
    def specs(self, uuid: str) -> tuple[str, int, int]:
        """A domain's name, vCPUs and maximum memory (MiB), for adopting it."""
        dom = self._dom(uuid)
        _state, max_kib, _kib, vcpus, _cpu_time = dom.info()
        return dom.name(), vcpus, max_kib // 1024

    def wait_for_state(self, uuid: str, wanted: set[str], timeout: float,
                       error: type[LimenError]) -> DomainState:
        """Return once the domain is in one of ``wanted``; raise ``error`` at the deadline.

        Woken by lifecycle events; it also looks again every half second, so a lost event
        costs at most that much."""
        deadline = time.monotonic() + timeout
        conn = self.connection
        while True:
            seen = conn.events
            current = self.state(uuid)
            if current is None:
                raise VMNotFound("the domain vanished while LIMEN waited for it")
            if current.state in wanted:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error(f"still {current.state} after {timeout:g} s "
                            f"(waited for {' or '.join(sorted(wanted))})")
            with conn.changed:
                if conn.events == seen:
                    conn.changed.wait(min(remaining, 0.5))
