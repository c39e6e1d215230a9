"""A second libvirt host on this machine (scripts/second-host), the ground the tests of LIMEN's
hosts stand on (qemu tier): another libvirtd in its own mount namespace, reached only over SSH
on 127.0.0.1, whose host key is pinned at first contact, and to which a VM of this host
migrates live with its disk."""
import os
import subprocess
import xml.etree.ElementTree as ET

import libvirt
import pytest

from helpers import open_libvirt, unique_name, wait_until

pytestmark = pytest.mark.qemu


def host_uuid(conn: libvirt.virConnect) -> str:
    return ET.fromstring(conn.getCapabilities()).findtext("./host/uuid")


def test_the_second_host_is_another_libvirt_whose_key_is_pinned(second_host, qemu_host):
    uri, root = second_host.test_uri, second_host.known_hosts.parent
    remote = open_libvirt(uri)
    try:
        assert host_uuid(remote) != host_uuid(qemu_host)
        names = set(remote.listDefinedDomains()) | {d.name() for d in remote.listAllDomains()}
        assert not names & {d.name() for d in qemu_host.listAllDomains()}  # none of this host's
    finally:
        remote.close()
    pinned = (root / "known_hosts").read_text()
    assert "ssh-ed25519" in pinned  # at first contact
    # Another key under the same name: libvirt refuses the host from then on.
    other = root / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    host = pinned.split()[0]
    (root / "known_hosts").write_text(f"{host} {(root / 'other.pub').read_text().split()[0]} "
                                      f"{(root / 'other.pub').read_text().split()[1]}\n")
    try:
        with pytest.raises(libvirt.libvirtError, match="(?i)host key|known"):
            libvirt.open(uri.replace("known_hosts_verify=auto", "known_hosts_verify=normal"))
    finally:
        (root / "known_hosts").write_text(pinned)


def test_a_vm_of_this_host_migrates_live_with_its_disk_to_the_second(second_host, qemu_host):
    uri = second_host.test_uri
    remote = open_libvirt(uri)
    name, pool = unique_name("migrated"), unique_name("pool")
    target = f"/var/lib/limen/{pool}"  # the same path on both hosts; the second's is its own
    pool_xml = f"<pool type='dir'><name>{pool}</name><target><path>{target}</path></target></pool>"
    pools = []
    try:
        for conn in (qemu_host, remote):
            pools.append(conn.storagePoolCreateXML(pool_xml, libvirt.VIR_STORAGE_POOL_CREATE_WITH_BUILD))
        pools[0].createXML(f"<volume><name>{name}.qcow2</name><capacity unit='MiB'>64</capacity>"
                           "<target><format type='qcow2'/></target></volume>", 0)
        dom = qemu_host.createXML(
            f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{target}/{name}.qcow2'/><target dev='vda' bus='virtio'/></disk>"
            "</devices></domain>", 0)
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
        # Both hosts are 127.0.0.1 to each other: the migration's data goes to that address.
        dom.migrateToURI3(uri, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}, flags)
        moved = remote.lookupByName(name)
        assert moved.isActive() and moved.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        wait_until(lambda: name not in {d.name() for d in qemu_host.listAllDomains()}, 30,
                   "the domain to leave this host")
        pools[1].refresh(0)
        assert f"{name}.qcow2" in pools[1].listVolumes()  # made on the second host by the migration
    finally:
        for conn in (remote, qemu_host):
            try:
                dom = conn.lookupByName(name)
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        for p in pools:
            p.refresh(0)
            for vol in p.listAllVolumes():
                vol.delete(0)
            p.destroy()
        os.rmdir(target)  # this host's; the second's goes with it
        remote.close()
