"""The host itself: its size, and what new guests can be (domain type, arch, firmware)."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from . import domain_xml
from .connection import Connection, is_error, read_each, translated


@dataclass(frozen=True)
class HostLimits:
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class PoolUsage:
    name: str
    active: bool
    capacity: int  # bytes
    allocation: int
    available: int


@dataclass(frozen=True)
class HostOverview:
    cpus: int
    memory_mib: int
    free_memory_mib: int | None  # None: the driver does not say
    libvirt_version: str
    hypervisor: str  # "QEMU 7.2.0"
    domain_type: str  # what new VMs run as: kvm, or qemu (emulation)
    domain_type_reason: str  # why, when it is not KVM
    pools: list[PoolUsage]


def _version(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


class Host:
    def __init__(self, connection: Connection, domain_type: str = ""):
        self.connection = connection
        self.domain_type = domain_type  # "": KVM when offered, else TCG
        self._guest: tuple[str, str] | None = None
        self._firmware: set[str] | None = None
        self._uuid: str | None = None

    @translated
    def limits(self) -> HostLimits:
        _model, memory_mib, cpus, *_ = self.connection.get().getInfo()
        return HostLimits(cpus=cpus, memory_mib=memory_mib)

    @translated
    def free_memory_mib(self) -> int:
        """Memory the host has free now (its size, where the driver cannot say)."""
        conn = self.connection.get()
        try:
            return int(conn.getFreeMemory() // 2**20)
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            return int(conn.getInfo()[1])

    @translated
    def cpu_times(self) -> tuple[int, int] | None:
        """The host's CPU time so far, busy and in all (ns, over every CPU); None where the
        driver cannot say. Two readings give the share in use between them."""
        try:
            times = self.connection.get().getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS)
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            return None
        total = sum(int(v) for k, v in times.items() if k != "utilization")
        return total - int(times.get("idle", 0)) - int(times.get("iowait", 0)), total

    @translated
    def uuid(self) -> str:
        """libvirt's UUID of the host: one machine reached by two URIs has one."""
        if self._uuid is None:
            caps = ET.fromstring(self.connection.get().getCapabilities())
            self._uuid = caps.findtext("./host/uuid") or ""
        return self._uuid

    @translated
    def overview(self) -> HostOverview:
        """The host for an admin's overview: its size, free memory, versions, what new VMs run
        as (and why, when it is not KVM) and each storage pool's use."""
        conn = self.connection.get()
        _model, memory_mib, cpus, *_ = conn.getInfo()
        try:
            free: int | None = conn.getFreeMemory() // 2**20
        except libvirt.libvirtError:
            free = None
        domain_type, _arch = self.guest_choice()
        if domain_type == "kvm":
            reason = ""
        elif self.domain_type:
            reason = f"configured: LIMEN_DOMAIN_TYPE={self.domain_type}"
        else:
            reason = "libvirt offers no KVM here (no /dev/kvm, or not usable): QEMU emulates the CPU"

        def usage(pool: libvirt.virStoragePool) -> PoolUsage:
            _state, capacity, allocation, available = pool.info()
            return PoolUsage(pool.name(), bool(pool.isActive()), capacity, allocation, available)

        pools = read_each(conn.listAllStoragePools(), usage, libvirt.VIR_ERR_NO_STORAGE_POOL)
        return HostOverview(
            cpus=cpus,
            memory_mib=memory_mib,
            free_memory_mib=free,
            libvirt_version=_version(conn.getLibVersion()),
            hypervisor=f"{conn.getType()} {_version(conn.getVersion())}",
            domain_type=domain_type,
            domain_type_reason=reason,
            pools=sorted(pools, key=lambda p: p.name),
        )

    @translated
    def guest_choice(self) -> tuple[str, str]:
        """(domain type, arch) for new VMs, decided once per process from capabilities."""
        if self._guest is None:
            domain_type, arch = domain_xml.guest_choice(self.connection.get().getCapabilities())
            self._guest = (self.domain_type or domain_type, arch)
        return self._guest

    @translated
    def uefi_available(self) -> bool:
        """Can new VMs boot UEFI firmware (OVMF installed, and libvirt able to pick it)?"""
        if self._firmware is None:
            domain_type, arch = self.guest_choice()
            try:
                caps = self.connection.get().getDomainCapabilities(None, arch, "q35", domain_type, 0)
                self._firmware = domain_xml.firmware_offered(caps)
            except libvirt.libvirtError as e:
                if not is_error(
                    e, libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_CONFIG_UNSUPPORTED
                ):
                    raise
                self._firmware = set()  # a driver that cannot say offers none (the test driver)
        return "efi" in self._firmware
