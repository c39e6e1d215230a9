"""OS profiles: the virtual hardware a kind of guest works best with, chosen when a VM is
made and kept with it.

Linux has virtio drivers built in. Windows has none until they are installed, so it gets a
SATA disk and an e1000e NIC, which its installer knows, unless the user chooses virtio (and
brings the driver ISO). Hyper-V enlightenments are left out: they speed Windows up, but some
hosts' KVM (nested ones) cannot set their MSRs and QEMU would not start. "Other" is for
anything older or unusual: the PC machine with IDE and e1000, which nearly every OS knows.
"""

from dataclasses import dataclass

KINDS = {"linux": "Linux", "windows": "Windows", "other": "Other"}
FIRMWARE = {"bios": "BIOS", "uefi": "UEFI (OVMF)"}


@dataclass(frozen=True)
class Profile:
    os_kind: str
    machine: str  # q35 or pc
    disk_bus: str  # virtio, sata or ide
    nic_model: str  # virtio, e1000e or e1000
    firmware: str = "bios"  # bios or uefi

    @property
    def cdrom_bus(self) -> str:
        """Where the CD-ROM drive (and a cloud image's seed in it) goes. Linux: virtio-scsi,
        which every kernel with virtio carries; Debian's cloud kernel has no AHCI driver, and
        on SATA its cloud-init would never see the seed. Others: SATA on q35, IDE on pc."""
        if self.os_kind == "linux":
            return "scsi"
        return "sata" if "q35" in self.machine else "ide"

    @property
    def clock(self) -> str:
        return "localtime" if self.os_kind == "windows" else "utc"  # Windows keeps local time

    def describe(self) -> str:
        return (
            f"{KINDS.get(self.os_kind, self.os_kind)}: {self.machine} machine, "
            f"{self.disk_bus} disk, {self.nic_model} network, {FIRMWARE.get(self.firmware, self.firmware)}"
        )


def profile(os_kind: str, firmware: str = "bios", virtio: bool = False) -> Profile:
    """The profile for ``os_kind``; ``virtio`` gives Windows virtio devices (its drivers are
    then the user's to provide)."""
    if os_kind == "linux":
        return Profile("linux", "q35", "virtio", "virtio", firmware)
    if os_kind == "windows":
        if virtio:
            return Profile("windows", "q35", "virtio", "virtio", firmware)
        return Profile("windows", "q35", "sata", "e1000e", firmware)
    if os_kind == "other":
        return Profile("other", "pc", "ide", "e1000", firmware)
    raise ValueError(f"unknown OS kind {os_kind!r}")
