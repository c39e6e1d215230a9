"""Storage pools: LIMEN's VM disks and its install media each live in one, so that a file is
wherever libvirt is. One ``Pool`` type serves both."""

import logging
import os
import stat
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator

import libvirt

from ..errors import StorageFailed
from .connection import Connection, is_error, read_each, translated

log = logging.getLogger(__name__)
CHUNK = 256 * 1024  # what a stream carries at a time


def _volume_xml(name: str, capacity: str, unit: str, fmt: str, backing_path: str | None = None) -> str:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit=unit).text = capacity
    ET.SubElement(vol, "allocation").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type=fmt)
    if fmt == "qcow2":  # version 3: it can grow while it holds internal snapshots (version 2 cannot)
        ET.SubElement(target, "compat").text = "1.1"
    if backing_path:
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = backing_path
        ET.SubElement(backing, "format", type="qcow2")
    return ET.tostring(vol, encoding="unicode")


def _file_size(vol: libvirt.virStorageVol) -> int:
    """The size of a volume's file (a qcow2 file's capacity is its disk's size instead)."""
    try:
        return int(vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2])
    except libvirt.libvirtError as e:
        if not is_error(e, libvirt.VIR_ERR_NO_SUPPORT):
            raise
        return int(vol.info()[1])  # a driver that cannot say (the test driver): its capacity


def _linked(vol: libvirt.virStorageVol) -> bool:
    """Whether a volume's file is a symbolic link, which LIMEN never lists, registers or reads
    (one could point anywhere, /etc/shadow included). Checked on this host: a pool of a
    libvirt elsewhere has no file here, and only that libvirt could tell."""
    try:
        return stat.S_ISLNK(os.lstat(vol.path()).st_mode)
    except OSError:
        return False


def _abort(stream: libvirt.virStream | None) -> None:
    try:
        if stream is not None:
            stream.abort()
    except libvirt.libvirtError:
        pass  # already ended by the failure


class Pool:
    """A directory pool named ``name`` at ``directory``, defined, built, started and set to
    autostart the first time it is needed (and again if someone removed it)."""

    def __init__(self, connection: Connection, name: str, directory: str):
        self.connection, self.name, self.directory = connection, name, directory
        self._lock = threading.Lock()  # two first requests must not both define it

    def _pool(self) -> libvirt.virStoragePool:
        conn = self.connection.get()
        with self._lock:
            try:
                pool = conn.storagePoolLookupByName(self.name)
            except libvirt.libvirtError as e:
                if not is_error(e, libvirt.VIR_ERR_NO_STORAGE_POOL):
                    raise
                root = ET.Element("pool", type="dir")
                ET.SubElement(root, "name").text = self.name
                ET.SubElement(ET.SubElement(root, "target"), "path").text = self.directory
                pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
                pool.build(0)
                log.info("defined storage pool %s at %s", self.name, self.directory)
            if not pool.isActive():
                pool.create(0)
            if not pool.autostart():
                pool.setAutostart(1)
            return pool

    def _volume(self, name: str, pool: libvirt.virStoragePool | None = None) -> libvirt.virStorageVol:
        try:
            return (pool or self._pool()).storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_STORAGE_VOL):
                raise StorageFailed(f"the storage pool {self.name} has no volume {name}") from None
            raise

    @translated
    def free_bytes(self) -> int:
        pool = self._pool()
        pool.refresh(0)
        return int(pool.info()[3])

    @translated
    def path(self, name: str) -> str:
        """The volume's path on the hypervisor's host (StorageFailed when there is none)."""
        return str(self._volume(name).path())

    @translated
    def create_volume(self, name: str, gib: int, backing: str | None = None) -> None:
        """A qcow2 volume of ``gib`` GiB; with ``backing`` (the path of a qcow2 file), one
        that reads what it has not written from that file, which is never written to."""
        try:
            self._pool().createXML(_volume_xml(name, str(gib), "GiB", "qcow2", backing), 0)
        except libvirt.libvirtError as e:
            raise StorageFailed(f"cannot create disk {name}: {e.get_error_message()}") from None

    @translated
    def create_empty_like(self, name: str, other: "Pool") -> None:
        """An empty qcow2 volume ``name`` here, of the capacity ``other``'s volume of that name
        has: what a migration then copies the disk into. (libvirt would make it itself, but
        fully allocated: the quota's measure of snapshots, and the host's free space, would
        suffer.)"""
        capacity = int(other._volume(name).info()[1])
        try:
            self._pool().createXML(_volume_xml(name, str(capacity), "B", "qcow2"), 0)
        except libvirt.libvirtError as e:
            raise StorageFailed(f"cannot create disk {name}: {e.get_error_message()}") from None

    @translated
    def copy_volume(self, source: str, name: str) -> None:
        """A new qcow2 volume ``name`` holding what ``source`` holds, read through its backing
        chain: a copy that stands on its own (virStorageVolCreateXMLFrom)."""
        pool = self._pool()
        origin = self._volume(source, pool)
        capacity = str(origin.info()[1])
        try:
            pool.createXMLFrom(_volume_xml(name, capacity, "bytes", "qcow2"), origin, 0)
        except libvirt.libvirtError as e:
            raise StorageFailed(f"cannot copy disk {source} to {name}: {e.get_error_message()}") from None

    @translated
    def delete_volume(self, name: str) -> bool:
        """Delete the volume; False when there was none."""
        try:
            vol = self._pool().storageVolLookupByName(name)
        except libvirt.libvirtError as e:
            if is_error(e, libvirt.VIR_ERR_NO_STORAGE_VOL):
                return False
            raise StorageFailed(e.get_error_message()) from None
        try:
            vol.delete(0)
        except libvirt.libvirtError as e:
            raise StorageFailed(f"cannot delete {name}: {e.get_error_message()}") from None
        return True

    @translated
    def names(self, prefix: str) -> list[str]:
        """The pool's volumes whose names start with ``prefix``."""
        pool = self._pool()
        pool.refresh(0)
        return sorted(name for name in pool.listVolumes() if name.startswith(prefix))

    @translated
    def files(self) -> dict[str, int]:
        """Each volume's name and the size of its file in bytes."""
        pool = self._pool()
        pool.refresh(0)

        def sized(vol: libvirt.virStorageVol) -> tuple[str, int] | None:
            return None if _linked(vol) else (vol.name(), _file_size(vol))

        return dict(read_each(pool.listAllVolumes(), sized, libvirt.VIR_ERR_NO_STORAGE_VOL))

    @translated
    def size(self, name: str) -> int | None:
        """The size of one volume's file, or None when the pool has no such volume, or it is a
        symbolic link (a file copied into the directory by hand is seen)."""
        pool = self._pool()
        pool.refresh(0)
        try:
            vol = self._volume(name, pool)
        except StorageFailed:
            return None
        return None if _linked(vol) else _file_size(vol)

    @translated
    def allocation(self, name: str) -> int:
        """The bytes a volume's file really takes on the disk (for a qcow2: its data, and its
        internal snapshots'), as libvirt reports it."""
        return int(self._volume(name).info()[2])  # libvirt looks at the file again for it

    @translated
    def is_link(self, name: str) -> bool:
        """Whether the pool's volume ``name`` is a symbolic link."""
        try:
            return _linked(self._volume(name))
        except StorageFailed:
            return False

    @translated
    def backing_of(self, name: str) -> str | None:
        """The path of the file the volume reads through to (its qcow2 backing store), or None."""
        return ET.fromstring(self._volume(name).XMLDesc(0)).findtext("./backingStore/path") or None

    @translated
    def backed_by(self, path: str) -> list[str]:
        """The volumes whose backing store is ``path``."""
        pool = self._pool()
        pool.refresh(0)

        def reading_through(vol: libvirt.virStorageVol) -> str | None:
            backing = ET.fromstring(vol.XMLDesc(0)).findtext("./backingStore/path")
            return vol.name() if backing == path else None

        return read_each(pool.listAllVolumes(), reading_through, libvirt.VIR_ERR_NO_STORAGE_VOL)

    @translated
    def upload(self, name: str, size: int, chunks: Iterable[bytes]) -> str:
        """Create the volume ``name`` of ``size`` bytes and stream ``chunks`` into it through
        libvirt, so that the file is written wherever libvirt runs; memory stays bounded by one
        chunk. On any failure, the caller's too (a cut-off upload), the volume is deleted
        before the exception goes on. Returns its path."""
        conn = self.connection.get()
        try:
            created = self._pool().createXML(_volume_xml(name, str(size), "B", "raw"), 0)
        except libvirt.libvirtError as e:
            raise StorageFailed(f"cannot create {name}: {e.get_error_message()}") from None
        stream = None
        try:
            stream = conn.newStream(0)
            created.upload(stream, 0, size, 0)
            for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[stream.send(view.tobytes()) :]
            stream.finish()
        except BaseException:
            _abort(stream)
            created.delete(0)  # if this fails too, the caller learns the volume may remain
            raise
        return str(created.path())

    @translated
    def copy_to(self, name: str, other: "Pool") -> None:
        """Copy a volume into ``other`` (the pool of the same name on another host), streamed
        through both libvirts a chunk at a time."""
        vol = self._volume(name)
        size = _file_size(vol)
        stream = self.connection.get().newStream(0)
        vol.download(stream, 0, size, 0)

        def chunks() -> Iterator[bytes]:
            left = size
            while left > 0:
                chunk = stream.recv(min(CHUNK, left))
                if not chunk:
                    raise StorageFailed(f"{name} ended {left} bytes early as it was read")
                left -= len(chunk)
                yield chunk
            stream.finish()

        try:
            other.upload(name, size, chunks())
        except BaseException:
            _abort(stream)
            raise

    @translated
    def head(self, name: str, size: int) -> bytes:
        """The first ``size`` bytes of a volume (fewer if it is smaller), read through libvirt."""
        vol = self._volume(name)
        if _linked(vol):
            raise StorageFailed(f"{name} is a symbolic link: LIMEN reads no file through one")
        length = min(size, _file_size(vol))
        stream = self.connection.get().newStream(0)
        try:
            vol.download(stream, 0, length, 0)
            data = bytearray()
            while len(data) < length:
                chunk = stream.recv(length - len(data))
                if not chunk:
                    break
                data += chunk
            stream.finish()
        except BaseException:
            _abort(stream)
            raise
        return bytes(data)
