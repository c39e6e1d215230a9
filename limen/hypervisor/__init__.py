"""The only package that imports libvirt. Everything above it speaks in UUIDs, plain values
and the project's own exceptions (limen.errors); libvirtError never leaves this package.

A ``Hypervisor`` is one libvirt URI: its connection (with events), the host, the two storage
pools (VM disks and install media), the domains, their displays, what their NICs are
attached to, and what their guests tell.
"""

from collections.abc import Callable

from ..errors import StorageFailed
from .connection import Connection, event_loop_alive, set_call_deadline
from .counters import Counters, DomainCounters
from .display import Display
from .domain_xml import Resources, parse_network
from .domains import Domains
from .guest import GuestInfo, Guests, Nic
from .host import Host, HostLimits, HostOverview
from .migration import Migration, Progress
from .networks import Attachment, Forward, Networks
from .pools import Pool
from .serial import Serial, SerialLine
from .snapshots import SnapshotInfo, Snapshots
from .states import ACTIVE_STATES, DomainState
from .tunnel import SSHTarget, Tunnel
from .vm_disks import Disk, VMDisks
from .vm_nics import Interface, VMNics
from .vnc_tls import VNCTLS

__all__ = [
    "ACTIVE_STATES",
    "VNCTLS",
    "Attachment",
    "Counters",
    "Disk",
    "DomainState",
    "Forward",
    "GuestInfo",
    "HostLimits",
    "HostOverview",
    "Hypervisor",
    "Interface",
    "Nic",
    "Pool",
    "Progress",
    "Resources",
    "SSHTarget",
    "SerialLine",
    "SnapshotInfo",
    "event_loop_alive",
    "parse_network",
    "set_call_deadline",
]


class Hypervisor:
    def __init__(
        self,
        uri: str,
        *,
        disk_pool: str,
        disk_dir: str,
        media_pool: str,
        media_dir: str,
        network: str,
        cpu_mode: str = "",
        domain_type: str = "",
        on_domain_event: Callable[[str | None], None] | None = None,
        timeout: float = 5.0,
        ssh: SSHTarget | None = None,
        tls: VNCTLS | None = None,
    ):
        self.uri = uri
        self.connection = Connection(uri, on_domain_event or (lambda uuid: None), timeout)
        self.host = Host(self.connection, domain_type)
        self.disks = Pool(self.connection, disk_pool, disk_dir)
        self.media = Pool(self.connection, media_pool, media_dir)
        # A TLS host's VNC servers listen where its qemu.conf says, and speak TLS; others' on 127.0.0.1.
        vnc_listen = None if tls else "127.0.0.1"
        self.domains = Domains(self.connection, self.host, self.disks, self.media, network, cpu_mode, vnc_listen)
        self.vm_disks = VMDisks(self.connection, self.disks)
        self.vm_nics = VMNics(self.connection)
        self.tunnel = Tunnel(ssh) if ssh is not None else None  # another host's, for its consoles
        self.display = Display(self.connection, self.tunnel, tls)
        self.serial = Serial(self.connection)
        self.snapshots = Snapshots(self.connection)
        self.migration = Migration(self.connection)
        self.networks = Networks(self.connection)
        self.guests = Guests(self.connection)
        self.counters = DomainCounters(self.connection)

    def close(self) -> None:
        if self.tunnel is not None:
            self.tunnel.close()
        self.connection.close()

    def medium_users(self, volume: str) -> list[str]:
        """What uses a medium: every domain with it in a drive, and every VM disk that reads
        through to it."""
        try:
            path = self.media.path(volume)
        except StorageFailed:  # no such volume: nothing can use it
            return []
        users = self.domains.using({path, f"{self.media.name}/{volume}"})
        return users + [f"disk {v}" for v in self.disks.backed_by(path)]
