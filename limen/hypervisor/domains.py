"""Domains: define, start, stop, change and read them, by UUID."""

import json
import logging
import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu

from ..errors import InvalidState, LimenError, VMNotFound, VMNotRunning, VMStartFailed
from ..profiles import Profile
from . import domain_xml
from .connection import Connection, is_error, read_each, translated
from .host import Host
from .pools import Pool
from .states import DomainState

log = logging.getLogger(__name__)

# Why QEMU stopped a guest's CPUs itself (its run state), where libvirt knows no reason.
_QEMU_PAUSES = {
    "internal-error": "KVM internal error: this host's KVM could not run the guest's code; "
    "LIMEN_DOMAIN_TYPE=qemu emulates it instead",
    "io-error": "I/O error (a disk's storage may be full)",
    "guest-panicked": "guest panicked",
    "watchdog": "watchdog",
    "paused": "paused through QEMU's monitor",
}


class Domains:
    def __init__(
        self,
        connection: Connection,
        host: Host,
        disks: Pool,
        media: Pool,
        network: str,
        cpu_mode: str = "",
        vnc_listen: str | None = "127.0.0.1",
    ):
        self.connection, self.host, self.disks, self.media = connection, host, disks, media
        self.network, self.cpu_mode, self.vnc_listen = network, cpu_mode, vnc_listen

    def _dom(self, uuid: str) -> libvirt.virDomain:
        return self.connection.get().lookupByUUIDString(uuid)

    def _find(self, uuid: str | None = None, *, name: str | None = None) -> libvirt.virDomain | None:
        """The domain with this UUID (or name), or None when libvirt has none."""
        conn = self.connection.get()
        try:
            return conn.lookupByName(name) if name is not None else conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_DOMAIN):
                return None
            raise

    @translated
    def name_in_use(self, name: str) -> bool:
        return self._find(name=name) is not None

    @translated
    def define(
        self,
        *,
        uuid: str,
        name: str,
        vcpus: int,
        memory_mib: int,
        volume: str,
        profile: Profile | None = None,
        iso: str | None = None,
        seed: str | None = None,
        boot_cdrom: bool = False,
        network: str | None = None,
    ) -> None:
        """Define the domain: its disk is the disk pool's ``volume``; its CD-ROM holds the
        media pool's ``iso`` or the disk pool's ``seed``, or nothing. ``profile``
        (limen.profiles) sets machine, buses, models and firmware; ``network`` what its NIC is
        attached to (networks.parse_network; default: the configured one)."""
        domain_type, arch = self.host.guest_choice()
        cdrom = self.media.path(iso) if iso else self.disks.path(seed) if seed else None
        devices = {}
        if profile is not None:
            devices = dict(
                machine=profile.machine,
                disk_bus=profile.disk_bus,
                nic_model=profile.nic_model,
                firmware=profile.firmware,
                clock=profile.clock,
                cdrom_bus=profile.cdrom_bus,
            )
        spec = domain_xml.DomainSpec(
            name=name,
            uuid=uuid,
            vcpus=vcpus,
            memory_mib=memory_mib,
            domain_type=domain_type,
            arch=arch,
            disk_path=self.disks.path(volume),
            network=network or self.network,
            cpu_mode=self.cpu_mode,
            cdrom_path=cdrom,
            boot_cdrom=boot_cdrom,
            max_vcpus=self.host.limits().cpus,  # more can be plugged in while it runs, up to the host's
            vnc_listen=self.vnc_listen,
            **devices,
        )
        self.connection.get().defineXML(domain_xml.build(spec))

    @translated
    def change_cdrom(self, uuid: str, iso: str | None, boot_first: bool | None = None) -> None:
        """Put the media pool's ``iso`` in the VM's CD-ROM drive, or eject it (None): at once
        when the VM runs, and in its definition for the next start. ``boot_first`` True boots
        from the drive before the disk from the next start, False from the disk only; None
        leaves the boot order. A VM with no drive gets one while it is shut off."""
        dom = self._dom(uuid)
        path = self.media.path(iso) if iso else None
        active = dom.isActive()
        if active:
            found = domain_xml.find_cdrom(dom.XMLDesc(0))
            if found is None:
                raise InvalidState("This VM has no CD-ROM drive yet: LIMEN adds one while it is shut off.")
            # The running VM's drive and its definition both; FORCE opens a tray the guest locked.
            dom.updateDeviceFlags(
                ET.tostring(domain_xml.cdrom(path, *found), encoding="unicode"),
                libvirt.VIR_DOMAIN_AFFECT_CONFIG
                | libvirt.VIR_DOMAIN_AFFECT_LIVE
                | libvirt.VIR_DOMAIN_DEVICE_MODIFY_FORCE,
            )
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # with the new drive, after a live change
        try:
            if not active:
                xml = domain_xml.with_cdrom(xml, path)
            if boot_first is not None:
                xml = domain_xml.with_boot(xml, boot_first)
        except ValueError as e:
            raise InvalidState(f"{e}.") from None
        if not active or boot_first is not None:
            self.connection.get().defineXML(xml)  # one new definition; every driver can (a live change cannot)

    # -- what a user changes after the create (limen.vms.edit); each takes effect at once or
    # not at all, and only on a shut-off domain where libvirt asks for one --
    @translated
    def definition(self, uuid: str) -> str:
        """The domain's definition, whole (secrets too), for ``restore`` after a change fails."""
        return self._dom(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)

    @translated
    def restore(self, xml: str) -> None:
        """Define a domain again as ``definition`` gave it."""
        self.connection.get().defineXML(xml)

    @translated
    def adopt(self, xml: str) -> None:
        """Define a domain that comes from another host (its ``definition``), its VNC server
        listening as this host's do."""
        self.connection.get().defineXML(domain_xml.with_vnc_listen(xml, self.vnc_listen))

    @translated
    def resources(self, uuid: str, live: bool = False) -> domain_xml.Resources:
        """The vCPUs and memory of the domain's definition (what its next start brings), or
        with ``live`` what it runs with (its definition while it does not run)."""
        dom = self._dom(uuid)
        return domain_xml.resources(dom.XMLDesc(0 if live else libvirt.VIR_DOMAIN_XML_INACTIVE))

    @translated
    def resize(self, uuid: str, vcpus: int, memory_mib: int) -> domain_xml.Resources:
        """Give the domain this many vCPUs and this much memory from its next start (its
        definition; vCPUs can be plugged in up to the host's count, and the memory is its own
        maximum). While it runs, what can change at once does: vCPUs added up to its maximum
        (never removed: that needs the guest's help), and memory through the balloon up to what
        it started with; a refusal there leaves the change for the next start. Returns what it
        runs with now."""
        dom = self._dom(uuid)
        defined = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)  # secrets kept
        was = domain_xml.resources(defined)
        # vCPUs can be plugged in up to the host's count (a VM made before LIMEN offered that gets
        # it), unless its definition fixes a CPU topology, whose count is its own.
        most = (
            max(was.max_vcpus, vcpus)
            if domain_xml.has_topology(defined)
            else max(was.max_vcpus, vcpus, self.host.limits().cpus)
        )
        # A guest without a balloon driver would use all of its maximum: it starts with no more.
        wanted = domain_xml.Resources(vcpus, most, memory_mib, memory_mib)
        self.connection.get().defineXML(domain_xml.with_resources(defined, wanted))
        if not dom.isActive():
            return wanted
        live = domain_xml.resources(dom.XMLDesc(0))
        has_vcpus, has_mib = live.vcpus, live.memory_mib
        try:
            if live.vcpus < vcpus <= live.max_vcpus:
                dom.setVcpusFlags(vcpus, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                has_vcpus = vcpus
            if memory_mib != live.memory_mib and memory_mib <= live.max_memory_mib:
                dom.setMemoryFlags(memory_mib * 1024, libvirt.VIR_DOMAIN_AFFECT_LIVE)
                has_mib = memory_mib
        except libvirt.libvirtError as e:  # QEMU or the guest cannot: from its next start, then
            log.info("vm %s: a live change was refused (%s); it waits for the next start", uuid, e)
        return domain_xml.Resources(has_vcpus, live.max_vcpus, has_mib, live.max_memory_mib)

    @translated
    def rename(self, uuid: str, name: str) -> None:
        """Rename a shut-off domain; its UUID, disks and everything else stay."""
        dom = self._dom(uuid)
        if dom.isActive():
            raise InvalidState("Shut the VM off to rename it.")
        if dom.snapshotNum(0):
            raise InvalidState("libvirt cannot rename a VM that has snapshots; delete them first.")
        dom.rename(name, 0)

    @translated
    def set_description(self, uuid: str, text: str) -> None:
        """The domain's own description (what ``virsh desc`` shows), live and for next starts."""
        dom = self._dom(uuid)
        live = libvirt.VIR_DOMAIN_AFFECT_LIVE if dom.isActive() else 0
        dom.setMetadata(
            libvirt.VIR_DOMAIN_METADATA_DESCRIPTION, text or None, None, None, libvirt.VIR_DOMAIN_AFFECT_CONFIG | live
        )

    @translated
    def autostart(self, uuid: str) -> bool:
        """Whether libvirt starts the domain when the host (libvirtd) starts."""
        return bool(self._dom(uuid).autostart())

    @translated
    def set_autostart(self, uuid: str, on: bool) -> None:
        self._dom(uuid).setAutostart(int(on))

    @translated
    def start(self, uuid: str) -> None:
        dom = self._dom(uuid)
        try:
            dom.create()
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_OPERATION_INVALID) and dom.isActive():
                return  # already running: the goal is reached
            raise VMStartFailed(e.get_error_message()) from None

    @translated
    def shutdown(self, uuid: str) -> None:
        """Ask the guest to power off: through its agent where one answers, else the ACPI
        power button."""
        dom = self._dom(uuid)
        try:
            dom.shutdownFlags(libvirt.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT | libvirt.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN)
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.shutdown()  # a driver that chooses the way itself (the test driver)

    @translated
    def reboot(self, uuid: str, timeout: float, error: type[LimenError]) -> None:
        """Ask the guest to restart (through its agent where one answers, else the ACPI power
        button), and return once QEMU reports its reset; ``error`` at the deadline, for a guest
        that ignored the request. A driver that reports no resets (the test driver) returns
        at once."""
        dom = self._dom(uuid)
        with self.connection.changed:
            before = self.connection.reboots.get(uuid, 0)
        try:
            dom.reboot(libvirt.VIR_DOMAIN_REBOOT_GUEST_AGENT | libvirt.VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.reboot(0)
        if not self.connection.is_qemu:
            return
        deadline = time.monotonic() + timeout
        while True:
            with self.connection.changed:
                if self.connection.reboots.get(uuid, 0) != before:
                    return
                seen = self.connection.events
            current = self.state(uuid)  # a guest that powered off, or a Force off, ends the wait too
            if current is None:
                raise VMNotFound("the domain vanished while LIMEN waited for it to restart")
            if current.state not in ("running", "shutting-down", "paused"):
                why = f" ({current.reason})" if current.reason else ""
                raise VMNotRunning(f"The VM is {current.state}{why}; its guest did not restart.")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error(f"no reset within {timeout:g} s of the request")
            self.connection.wait_for_event(seen, min(remaining, 0.5))

    @translated
    def pause(self, uuid: str) -> None:
        """Stop the guest's CPUs; its memory, devices and connections stay as they are."""
        self._dom(uuid).suspend()

    @translated
    def resume(self, uuid: str) -> None:
        self._dom(uuid).resume()

    @translated
    def destroy(self, uuid: str) -> None:
        """Power off at once; a domain that is not running is left as it is."""
        dom = self._dom(uuid)
        if dom.isActive():
            try:
                dom.destroy()
            except libvirt.libvirtError as e:
                if not is_error(e, libvirt.VIR_ERR_OPERATION_INVALID):
                    raise

    @translated
    def undefine(self, uuid: str, keep_nvram: bool = False) -> bool:
        """Remove the domain's definition; False when there was none. ``keep_nvram`` keeps its
        firmware variables file (an adopted VM's files are not LIMEN's to delete)."""
        dom = self._find(uuid)
        if dom is None:
            return False
        # A saved state and snapshot and checkpoint records go with it, and the firmware
        # variables unless kept (domains adopted from other tools may have them; a plain
        # undefine refuses then).
        nvram = libvirt.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM if keep_nvram else libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
        try:
            dom.undefineFlags(
                nvram
                | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
            )
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            dom.undefine()  # a driver without those flags (the test driver) has nothing of the kind
        return True

    @translated
    def state(self, uuid: str) -> DomainState | None:
        """The domain's state, or None when libvirt has no such domain."""
        dom = self._find(uuid)
        if dom is None:
            return None
        try:
            state, reason = dom.state()
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_DOMAIN):  # gone since the lookup
                return None
            raise
        return self._explained(dom, state, reason)

    @translated
    def all_states(self) -> dict[str, tuple[str, DomainState]]:
        """Every domain's name and state, in one call."""
        stats = self.connection.get().getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE)
        return {
            dom.UUIDString(): (dom.name(), self._explained(dom, s["state.state"], s["state.reason"]))
            for dom, s in stats
        }

    def _explained(self, dom: libvirt.virDomain, state: int, reason: int) -> DomainState:
        """libvirt's state in words. A guest QEMU paused on its own (a KVM internal error)
        reaches libvirt as "paused, reason unknown": QEMU's run state says what happened."""
        found = DomainState.from_libvirt(state, reason)
        if (state, reason) != (libvirt.VIR_DOMAIN_PAUSED, libvirt.VIR_DOMAIN_PAUSED_UNKNOWN):
            return found
        if not self.connection.is_qemu:
            return found
        try:
            answer = libvirt_qemu.qemuMonitorCommand(dom, '{"execute": "query-status"}', 0)
            status = json.loads(answer)["return"]["status"]
        except (libvirt.libvirtError, ValueError, KeyError, TypeError):
            return found  # gone meanwhile, or a QEMU that does not say
        return DomainState("paused", _QEMU_PAUSES.get(status, f"QEMU's run state: {status}"))

    @translated
    def specs(self, uuid: str) -> tuple[str, int, int]:
        """A domain's name, vCPUs and maximum memory (MiB), for adopting it."""
        dom = self._dom(uuid)
        _state, max_kib, _kib, vcpus, _cpu_time = dom.info()
        return dom.name(), vcpus, max_kib // 1024

    @translated
    def using(self, refs: set[str]) -> list[str]:
        """The names of the domains with one of ``refs`` (a file's path, or "pool/volume") in
        a drive, now or from their next start."""

        def user(dom: libvirt.virDomain) -> str | None:
            uses = refs & domain_xml.disk_sources(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)) or (
                dom.isActive() and refs & domain_xml.disk_sources(dom.XMLDesc(0))
            )
            return dom.name() if uses else None

        return read_each(self.connection.get().listAllDomains(), user, libvirt.VIR_ERR_NO_DOMAIN)

    def wait_for_state(self, uuid: str, wanted: set[str], timeout: float, error: type[LimenError]) -> DomainState:
        """Return once the domain is in one of ``wanted``; raise ``error`` at the deadline.

        Woken by lifecycle events; it also looks again every half second, so a lost event
        costs at most that much."""
        deadline = time.monotonic() + timeout
        while True:
            seen = self.connection.events
            current = self.state(uuid)
            if current is None:
                raise VMNotFound("the domain vanished while LIMEN waited for it")
            if current.state in wanted:
                return current
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error(f"still {current.state} after {timeout:g} s (waited for {' or '.join(sorted(wanted))})")
            self.connection.wait_for_event(seen, min(remaining, 0.5))
