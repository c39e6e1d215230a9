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


def create_volume(pool: libvirt.virStoragePool, name: str, gib: int) -> None:
    vol = ET.Element("volume")
    ET.SubElement(vol, "name").text = name
    ET.SubElement(vol, "capacity", unit="GiB").text = str(gib)
    ET.SubElement(vol, "allocation").text = "0"
    target = ET.SubElement(vol, "target")
    ET.SubElement(target, "format", type="qcow2")
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
