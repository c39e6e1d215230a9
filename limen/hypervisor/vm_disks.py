"""A domain's disks after it is made: listed with what their volumes hold, added, grown and
taken away. Its CD-ROM drive is Domains.change_cdrom's."""

import string
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import DiskNotFound, InvalidState, StorageFailed
from . import domain_xml
from .connection import Connection, is_error, translated
from .pools import Pool

GIB = 1024**3
_PREFIX = {"virtio": "vd", "sata": "sd", "scsi": "sd", "ide": "hd"}


@dataclass(frozen=True)
class Disk:
    dev: str  # the guest's name for it (vda, sdb, …): what LIMEN names it by
    bus: str
    path: str | None  # its file on the host
    volume: str | None  # the disk pool's volume, when it is one of LIMEN's
    capacity: int | None  # bytes the guest sees (None: not a pool volume, libvirt cannot say)
    allocation: int | None  # bytes its file really takes
    backing: str | None  # the file it reads through to (a cloud image, a linked clone's source)


class VMDisks:
    def __init__(self, connection: Connection, pool: Pool):
        self.connection, self.pool = connection, pool

    def _dom(self, uuid: str) -> libvirt.virDomain:
        return self.connection.get().lookupByUUIDString(uuid)

    @translated
    def of(self, uuid: str) -> list[Disk]:
        """The domain's disks, as it runs (or starts, shut off), in its definition's order."""
        dom = self._dom(uuid)
        xml = ET.fromstring(dom.XMLDesc(0))
        found = []
        for el in xml.findall("./devices/disk[@device='disk']"):
            target, source = el.find("target"), el.find("source")
            path = source.get("file") if source is not None else None
            volume, capacity, allocation, backing = self._volume(path)
            found.append(
                Disk(
                    dev=target.get("dev", "") if target is not None else "",
                    bus=target.get("bus", "") if target is not None else "",
                    path=path,
                    volume=volume,
                    capacity=capacity,
                    allocation=allocation,
                    backing=backing or _backing(el),
                )
            )
        return found

    def _volume(self, path: str | None) -> tuple[str | None, int | None, int | None, str | None]:
        """(volume name, capacity, allocation, backing path) of the pool volume at ``path``."""
        if not path:
            return None, None, None, None
        try:
            vol = self.connection.get().storageVolLookupByPath(path)
            _type, capacity, allocation = vol.info()
            backing = ET.fromstring(vol.XMLDesc(0)).findtext("./backingStore/path")
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_STORAGE_VOL):
                return None, None, None, None
            raise
        return vol.name(), int(capacity), int(allocation), backing

    @translated
    def add(self, uuid: str, volume: str, gib: int, bus: str) -> str:
        """Make a new qcow2 volume and plug it in (while the domain runs, at once as well as from
        its next start); returns its dev. If it cannot be plugged in, the volume is deleted."""
        dom = self._dom(uuid)
        active = bool(dom.isActive())
        used = {t.get("dev") for t in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk/target")}
        used |= {
            t.get("dev")
            for t in ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)).findall("./devices/disk/target")
        }
        prefix = _PREFIX[bus]
        dev = next((prefix + c for c in string.ascii_lowercase if prefix + c not in used), None)
        if dev is None:
            raise InvalidState(f"The VM has no free {bus} slot for another disk.")
        self.pool.create_volume(volume, gib)
        try:
            el = ET.Element("disk", type="file", device="disk")
            ET.SubElement(el, "driver", name="qemu", type="qcow2")
            ET.SubElement(el, "source", file=self.pool.path(volume))
            ET.SubElement(el, "target", dev=dev, bus=bus)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if active else 0)
            dom.attachDeviceFlags(ET.tostring(el, encoding="unicode"), flags)
        except BaseException as e:
            self.pool.delete_volume(volume)
            if isinstance(e, libvirt.libvirtError) and active:
                raise InvalidState(
                    f"QEMU could not plug a {bus} disk in while the VM runs ({e.get_error_message()}); "
                    "shut it off and add the disk then."
                ) from None
            raise
        return dev

    @translated
    def grow(self, uuid: str, dev: str, gib: int) -> None:
        """Grow the disk to ``gib`` GiB: QEMU resizes it while the domain runs (its image is
        QEMU's then), the pool while it does not."""
        dom = self._dom(uuid)
        disk = self._find(uuid, dev)
        if disk.volume is None or disk.capacity is None:
            raise InvalidState(f"The disk {dev} is not a volume of LIMEN's pool; LIMEN leaves it as it is.")
        if gib * GIB <= disk.capacity:  # QEMU would cut it short: never
            raise InvalidState(f"The disk {dev} has {disk.capacity / GIB:g} GiB already; LIMEN grows disks only.")
        try:
            if dom.isActive():
                dom.blockResize(dev, gib * GIB, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)
            else:
                self.connection.get().storageVolLookupByPath(disk.path).resize(gib * GIB, 0)
        except libvirt.libvirtError as e:
            said = e.get_error_message() or ""
            if "which has snapshots" in said:  # a qcow2 of version 2 (LIMEN makes version 3)
                raise InvalidState(
                    f"The disk {dev} is an older qcow2 (version 2), which cannot grow while it holds snapshots: "
                    "delete the VM's snapshots, then grow it."
                ) from None
            if dom.isActive():
                raise
            raise StorageFailed(f"cannot grow {disk.volume}: {said}") from None

    @translated
    def remove(self, uuid: str, dev: str) -> str:
        """Unplug a shut-off domain's disk and delete its volume; returns the volume's name."""
        dom = self._dom(uuid)
        if dom.isActive():
            raise InvalidState("Shut the VM off to take a disk away: the guest may be using it.")
        disk = self._find(uuid, dev)
        if disk.volume is None:
            raise InvalidState(f"The disk {dev} is not a volume of LIMEN's pool; LIMEN leaves it as it is.")
        xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        el = next(
            d for d in xml.findall("./devices/disk[@device='disk']") if d.find(f"target[@dev='{dev}']") is not None
        )
        dom.detachDeviceFlags(ET.tostring(el, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        self.pool.delete_volume(disk.volume)
        return disk.volume

    @translated
    def boot(self, uuid: str) -> tuple[dict[str, str], list[str]]:
        """From the definition (the next start), in one read: the drives the domain can boot
        from (dev -> "disk" or "cdrom"), and those it boots from, in order."""
        xml = self._dom(uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        return domain_xml.drives(xml), domain_xml.boot_order(xml)

    def drives(self, uuid: str) -> dict[str, str]:
        return self.boot(uuid)[0]

    def boot_order(self, uuid: str) -> list[str]:
        return self.boot(uuid)[1]

    @translated
    def set_boot_order(self, uuid: str, devs: list[str]) -> None:
        """Boot from these disks and CD-ROM drives, in this order, from the next start."""
        dom = self._dom(uuid)
        xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
        try:
            changed = domain_xml.with_boot_order(xml, devs)
        except ValueError as e:
            raise InvalidState(f"{e}.") from None
        self.connection.get().defineXML(changed)

    def _find(self, uuid: str, dev: str) -> Disk:
        for disk in self.of(uuid):
            if disk.dev == dev:
                return disk
        raise DiskNotFound(f"The VM has no disk {dev}.")


def _backing(el: ET.Element) -> str | None:
    source = el.find("./backingStore/source")
    return source.get("file") if source is not None else None
