"""The host itself: its size, and what new guests can be (domain type, arch, firmware)."""

from dataclasses import dataclass

import libvirt

from . import domain_xml
from .connection import Connection, is_error, translated


@dataclass(frozen=True)
class HostLimits:
    cpus: int
    memory_mib: int


class Host:
    def __init__(self, connection: Connection, domain_type: str = ""):
        self.connection = connection
        self.domain_type = domain_type  # "": KVM when offered, else TCG
        self._guest: tuple[str, str] | None = None
        self._firmware: set[str] | None = None

    @translated
    def limits(self) -> HostLimits:
        _model, memory_mib, cpus, *_ = self.connection.get().getInfo()
        return HostLimits(cpus=cpus, memory_mib=memory_mib)

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
