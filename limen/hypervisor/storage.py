"""Volumes through a libvirt storage pool, so that the disk lives wherever libvirt does."""
import logging
import xml.etree.ElementTree as ET

import libvirt

from ..errors import StorageFailed

log = logging.getLogger(__name__)
GIB = 1024 ** 3


def ensure_pool(conn: libvirt.virConnect, name: str, directory: str) -> libvirt.virStoragePool:
    """The pool ``name``, defined as a directory pool at ``directory``, built, started and set
    to autostart when it is missing or inactive."""
    try:
        pool = conn.storagePoolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_STORAGE_POOL:
            raise
        root = ET.Element("pool", type="dir")
        ET.SubElement(root, "name").text = name
        target = ET.SubElement(root, "target")
        ET.SubElement(target, "path").text = directory
        pool = conn.storagePoolDefineXML(ET.tostring(root, encoding="unicode"), 0)
        pool.build(0)
        log.info("defined storage pool %s at %s", name, directory)
    if not pool.isActive():
        pool.create(0)
    if not pool.autostart():
        pool.setAutostart(1)
    return pool


def free_bytes(pool: libvirt.virStoragePool) -> int:
    pool.refresh(0)
    return pool.info()[3]


def create_volume(pool: libvirt.virStoragePool, name: str, gib: int, backing_path: str | None = None) -> None:
    """A qcow2 volume of ``gib`` GiB; with ``backing_path``, one that reads what it has not
    written from that qcow2 file (its backing store, never written to)."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="GiB").text = str(gib)
    ET.SubElement(vol, "allocation").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
    if backing_path:
        backing = ET.SubElement(vol, "backingStore")
        ET.SubElement(backing, "path").text = backing_path
        ET.SubElement(backing, "format", type="qcow2")
    try:
        pool.createXML(ET.tostring(vol, encoding="unicode"), 0)
    except libvirt.libvirtError as e:
        raise StorageFailed(f"cannot create disk {name}: {e.get_error_message()}") from None


def delete_volume(pool: libvirt.virStoragePool, name: str) -> bool:
    """Delete the volume; False when there was none."""
    try:
        vol = pool.storageVolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            return False
        raise StorageFailed(e.get_error_message()) from None
    try:
        vol.delete(0)
    except libvirt.libvirtError as e:
        raise StorageFailed(f"cannot delete disk {name}: {e.get_error_message()}") from None
    return True


def volume_names(pool: libvirt.virStoragePool) -> set[str]:
    pool.refresh(0)
    return set(pool.listVolumes())


def volume(pool: libvirt.virStoragePool, name: str) -> libvirt.virStorageVol:
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_STORAGE_VOL:
            raise StorageFailed(f"the storage pool {pool.name()} has no volume {name}") from None
        raise


def upload(conn: libvirt.virConnect, pool: libvirt.virStoragePool, name: str, size: int,
           chunks) -> str:
    """Create the volume ``name`` of ``size`` bytes and stream ``chunks`` (an iterable of
    bytes) into it through libvirt, so that the file is written wherever libvirt runs. Memory
    stays bounded by one chunk. On any failure, the caller's too (a cut-off upload), the
    volume is deleted before the exception goes on. Returns its path."""
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="B").text = str(size)
    ET.SubElement(vol, "allocation").text = "0"
    ET.SubElement(ET.SubElement(vol, "target"), "format", type="raw")  # the bytes as they come
    try:
        created = pool.createXML(ET.tostring(vol, encoding="unicode"), 0)
    except libvirt.libvirtError as e:
        raise StorageFailed(f"cannot create {name}: {e.get_error_message()}") from None
    stream = None
    try:
        stream = conn.newStream(0)
        created.upload(stream, 0, size, 0)
        for chunk in chunks:
            view = memoryview(chunk)
            while view:
                view = view[stream.send(view.tobytes()):]
        stream.finish()
    except BaseException:
        try:
            if stream is not None:
                stream.abort()
        except libvirt.libvirtError:
            pass  # already ended by the failure
        created.delete(0)  # if this fails too, the caller learns the volume may remain
        raise
    return created.path()


def head(conn: libvirt.virConnect, vol: libvirt.virStorageVol, size: int) -> bytes:
    """The first ``size`` bytes of a volume (fewer if it is smaller), read through libvirt."""
    length = min(size, file_size(vol))
    stream = conn.newStream(0)
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
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass
        raise
    return bytes(data)


def file_size(vol: libvirt.virStorageVol) -> int:
    """The size of a volume's file (a qcow2 file's capacity is its disk's size instead)."""
    try:
        return vol.infoFlags(libvirt.VIR_STORAGE_VOL_GET_PHYSICAL)[2]
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
        return vol.info()[1]  # a driver that cannot say (the test driver): its capacity


def files(pool: libvirt.virStoragePool) -> dict[str, int]:
    """Each volume's name and size in bytes."""
    pool.refresh(0)
    return {vol.name(): file_size(vol) for vol in pool.listAllVolumes()}


def backed_by(pool: libvirt.virStoragePool, path: str) -> list[str]:
    """The volumes whose backing store is ``path``."""
    pool.refresh(0)
    names = []
    for vol in pool.listAllVolumes():
        backing = ET.fromstring(vol.XMLDesc(0)).findtext("./backingStore/path")
        if backing == path:
            names.append(vol.name())
    return names
