"""Moving a domain to another host, with libvirt's migration API: live (its memory and disks
copied while it runs, then a short pause), its progress from the job libvirt keeps, and an
abort. LIMEN writes no agent of its own: the two libvirtds do the work.

From the local host the migration is peer to peer (the local libvirtd opens the destination
itself, with LIMEN's key and the destination's pinned key, files it can read); between other
hosts LIMEN drives it over both connections (libvirt's managed migration), which needs no key
on the hosts."""

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import InvalidState, VMNotFound
from . import domain_xml
from .connection import Connection, translated

LIVE = (
    libvirt.VIR_MIGRATE_LIVE
    | libvirt.VIR_MIGRATE_PERSIST_DEST
    | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
    | libvirt.VIR_MIGRATE_NON_SHARED_DISK
)


@dataclass(frozen=True)
class Progress:
    processed: int  # bytes sent so far (memory and disks)
    remaining: int  # bytes still to send, as libvirt reckons now
    total: int

    @property
    def percent(self) -> int:
        return 100 * self.processed // self.total if self.total else 0


@dataclass(frozen=True)
class Completed:
    """A migration this host received, as its statistics tell once it is over."""

    seconds: float  # from start to end
    downtime_ms: int  # the guest's pause at the switch
    processed: int  # bytes received (memory and disks)


class Migration:
    def __init__(self, connection: Connection):
        self.connection = connection

    @translated
    def completed(self, uuid: str) -> Completed | None:
        """The statistics of the migration that brought the domain here, asked of this (the
        destination) host once it ended; None when libvirt keeps none."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        # Kept for whoever asks next (an admin's virsh domjobinfo --completed): reading clears them.
        stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        if "downtime" not in stats:
            return None
        processed = int(stats.get("memory_processed", 0)) + int(stats.get("disk_processed", 0))
        return Completed(float(stats.get("time_elapsed", 0)) / 1000, int(stats["downtime"]), processed)

    @translated
    def host_cpu(self) -> str | None:
        """This host's CPU, as libvirt describes it (<cpu> with its model, vendor and features),
        or None when the driver does not say."""
        cpu = ET.fromstring(self.connection.get().getCapabilities()).find("./host/cpu")
        if cpu is None or cpu.find("model") is None:
            return None
        return ET.tostring(cpu, encoding="unicode")

    @translated
    def cpu_problem(self, dest: Connection) -> str | None:
        """Why the destination cannot run what this host's guests see of its CPU (asked of the
        destination with this host's CPU definition), or None."""
        cpu = self.host_cpu()
        if cpu is None:
            return None  # libvirt checks again as it migrates
        if dest.get().compareCPU(cpu, 0) == libvirt.VIR_CPU_COMPARE_INCOMPATIBLE:
            model = ET.fromstring(cpu).findtext("model") or "this host's CPU"
            return f"the destination's CPU cannot run what {model} offers its guests"
        return None

    @translated
    def read_only_volumes(self, uuid: str) -> list[str]:
        """The paths of the domain's read-only disks (CD-ROMs, a cloud-init seed): a migration
        copies the disks it writes, and these must be at the same paths on the destination."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        found = []
        for disk in ET.fromstring(dom.XMLDesc(0)).findall("./devices/disk"):
            source = disk.find("source")
            path = source.get("file") if source is not None else None
            if path and (disk.get("device") == "cdrom" or disk.find("readonly") is not None):
                found.append(path)
        return found

    @translated
    def migrate(
        self,
        uuid: str,
        dest: Connection,
        dest_uri: str | None,
        data_uri: str | None,
        bandwidth_mib: int = 0,
        vnc_listen: str | None = "127.0.0.1",
    ) -> None:
        """Move the running domain to ``dest``, live, with its disks; returns when it runs there
        (and is gone from here). With ``dest_uri`` (a URI this host's libvirtd can open) it is
        peer to peer; without, managed over both connections. ``data_uri`` is where the
        destination takes the data (tcp://address); ``bandwidth_mib`` caps it (MiB/s, 0: no
        cap). Its VNC server listens there at ``vnc_listen``, as the destination's VMs do."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        if not dom.isActive():
            raise InvalidState("Only a running VM migrates live.")
        params: dict[str, str | int] = {libvirt.VIR_MIGRATE_PARAM_URI: data_uri} if data_uri else {}
        if bandwidth_mib:
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = bandwidth_mib
        secure = libvirt.VIR_DOMAIN_XML_SECURE
        persistent = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | secure)
        if domain_xml.vnc_listen(persistent) != vnc_listen:
            live = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_MIGRATABLE | secure)
            params[libvirt.VIR_MIGRATE_PARAM_DEST_XML] = domain_xml.with_vnc_listen(live, vnc_listen)
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = domain_xml.with_vnc_listen(persistent, vnc_listen)
        if dest_uri is not None:
            dom.migrateToURI3(dest_uri, params, LIVE | libvirt.VIR_MIGRATE_PEER2PEER)
        else:
            dom.migrate3(dest.get(), params, LIVE)

    @translated
    def progress(self, uuid: str) -> Progress | None:
        """How far the domain's migration is, or None when no job runs on it. (jobInfo: the
        typed-parameter jobStats of libvirt-python 12.8 crashed on a domain as it left.)"""
        info = self.connection.get().lookupByUUIDString(uuid).jobInfo()
        if info[0] == libvirt.VIR_DOMAIN_JOB_NONE:
            return None
        return Progress(processed=int(info[4]), remaining=int(info[5]), total=int(info[3]))

    def wait_for_end(self, uuid: str, timeout: float) -> None:
        """Return once no migration job runs on the domain (or it is gone), or after
        ``timeout`` seconds: the caller then looks at where it runs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.connection.events
            try:
                if self.progress(uuid) is None:
                    return
            except VMNotFound:
                return
            self.connection.wait_for_event(seen, 0.25)

    @translated
    def abort(self, uuid: str) -> None:
        """Stop the migration under way: the domain runs on here, as before."""
        self.connection.get().lookupByUUIDString(uuid).abortJob()
