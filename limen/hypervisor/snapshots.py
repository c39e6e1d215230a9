"""A domain's snapshots: libvirt's internal qcow2 snapshots (virDomainSnapshotCreateXML with no
flags). A running VM's holds its memory too, so reverting to it resumes the guest where it was;
a shut-off VM's holds its disks. libvirt keeps them and their tree; LIMEN keeps no copy."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime

import libvirt

from ..errors import SnapshotNotFound, SnapshotUnsupported
from .connection import Connection, is_error, translated

# What libvirt answers for a VM whose disks or firmware cannot hold an internal snapshot (a raw
# disk, UEFI variables in pflash …), and what a person can do about it.
_UNSUPPORTED = (
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_NO_SUPPORT,
)
WHAT_TO_DO = (
    "LIMEN takes internal snapshots, which need every writable disk in qcow2 format and BIOS "
    "firmware: convert a raw disk with qemu-img, or back the VM up by copying its disk while it is shut off."
)


@dataclass(frozen=True)
class SnapshotInfo:
    name: str
    description: str
    created: datetime
    vm_state: str  # the state the VM was in when it was taken (running, shutoff …)
    memory: bool  # it holds the VM's memory: reverting resumes the guest
    parent: str | None
    current: bool


class Snapshots:
    def __init__(self, connection: Connection):
        self.connection = connection

    def _snapshot(self, dom: libvirt.virDomain, name: str) -> libvirt.virDomainSnapshot:
        try:
            return dom.snapshotLookupByName(name, 0)
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT):
                raise SnapshotNotFound(f"The VM has no snapshot named {name}.") from None
            raise

    @translated
    def list(self, uuid: str) -> list[SnapshotInfo]:
        """The domain's snapshots, oldest first."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        found = [_info(snap) for snap in dom.listAllSnapshots(0)]
        return sorted(found, key=lambda s: (s.created, s.name))

    @translated
    def check_supported(self, uuid: str) -> None:
        """SNAPSHOT_UNSUPPORTED, before anything is asked of libvirt, for a domain whose
        writable disks are not all qcow2, whose firmware keeps its variables in pflash, or which
        runs with a vCPU plugged in since it started."""
        root = ET.fromstring(self.connection.get().lookupByUUIDString(uuid).XMLDesc(0))
        for disk in root.iterfind("./devices/disk"):
            if disk.find("readonly") is not None or disk.get("device") in ("cdrom", "floppy"):
                continue
            driver = disk.find("driver")
            kind = driver.get("type") if driver is not None else None
            if kind != "qcow2":
                target = disk.find("target")
                dev = target.get("dev") if target is not None else "?"
                raise SnapshotUnsupported(f"Its disk {dev} is {kind or 'of no stated format'}, not qcow2. {WHAT_TO_DO}")
        loader = root.find("./os/loader")
        if root.find("./os").get("firmware") == "efi" or (loader is not None and loader.get("type") == "pflash"):  # type: ignore[union-attr]
            raise SnapshotUnsupported(f"It boots UEFI firmware, whose variables are in pflash. {WHAT_TO_DO}")
        # A running domain's snapshot holds its memory, and QEMU brings it back in a process
        # started with the vCPUs it had at its start: one plugged in since cannot be restored.
        if root.find("./vcpus/vcpu[@enabled='yes'][@hotpluggable='yes']") is not None:
            raise SnapshotUnsupported(
                "A vCPU was plugged in since the VM started, and QEMU cannot bring back a snapshot of its memory "
                "then. Shut the VM down and start it again (it keeps its vCPUs), then take the snapshot."
            )

    @translated
    def create(self, uuid: str, name: str, description: str) -> SnapshotInfo:
        dom = self.connection.get().lookupByUUIDString(uuid)
        root = ET.Element("domainsnapshot")
        ET.SubElement(root, "name").text = name
        ET.SubElement(root, "description").text = description
        try:
            snap = dom.snapshotCreateXML(ET.tostring(root, encoding="unicode"), 0)
        except libvirt.libvirtError as e:
            if is_error(e, *_UNSUPPORTED):
                raise SnapshotUnsupported(f"{e.get_error_message()}. {WHAT_TO_DO}") from None
            raise
        return _info(snap)

    @translated
    def revert(self, uuid: str, name: str) -> None:
        """Back to the snapshot: its disks, and its memory and run state when it has them."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        dom.revertToSnapshot(self._snapshot(dom, name), 0)

    @translated
    def delete(self, uuid: str, name: str) -> None:
        """Its data and its record; its children become its parent's."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        self._snapshot(dom, name).delete(0)

    @translated
    def exists(self, uuid: str, name: str) -> bool:
        dom = self.connection.get().lookupByUUIDString(uuid)
        try:
            self._snapshot(dom, name)
        except SnapshotNotFound:
            return False
        return True


def _info(snap: libvirt.virDomainSnapshot) -> SnapshotInfo:
    root = ET.fromstring(snap.getXMLDesc(0))
    memory = root.find("memory")
    try:
        parent: str | None = snap.getParent(0).getName()
    except libvirt.libvirtError:  # a root of the tree
        parent = None
    return SnapshotInfo(
        name=root.findtext("name") or snap.getName(),
        description=root.findtext("description") or "",
        created=datetime.fromtimestamp(int(root.findtext("creationTime") or 0), UTC),
        vm_state=root.findtext("state") or "",
        memory=memory is not None and memory.get("snapshot") not in (None, "no"),
        parent=parent,
        current=bool(snap.isCurrent(0)),
    )
