"""Every running domain's counters in one call (virConnectGetAllDomainStats): what the graphs
are drawn from. Counters only grow; the rates are the sampler's business (limen.stats)."""

import time
from dataclasses import dataclass

import libvirt

from .connection import Connection, translated

_GROUPS = (
    libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
    | libvirt.VIR_DOMAIN_STATS_BALLOON
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_INTERFACE
    | libvirt.VIR_DOMAIN_STATS_BLOCK
)


@dataclass(frozen=True)
class Counters:
    """One running domain at one moment. None: libvirt did not say (a driver without that
    group, or a guest without a balloon driver)."""

    uuid: str
    at: float  # seconds since the epoch
    vcpus: int
    cpu_ns: int | None  # CPU time its vCPUs and QEMU have used
    memory_kib: int | None  # in use: the guest's own view when it reports one, else QEMU's RSS
    read_bytes: int
    write_bytes: int
    rx_bytes: int
    tx_bytes: int


def _sum(stats: dict, prefix: str, count: str, field: str) -> int:
    return sum(int(stats.get(f"{prefix}.{i}.{field}", 0)) for i in range(int(stats.get(count, 0))))


def _memory(stats: dict) -> int | None:
    available, unused = stats.get("balloon.available"), stats.get("balloon.unused")
    if available is not None and unused is not None:
        return int(available) - int(unused)
    rss = stats.get("balloon.rss")
    return None if rss is None else int(rss)


class DomainCounters:
    def __init__(self, connection: Connection):
        self.connection = connection

    @translated
    def running(self) -> list[Counters]:
        """The counters of every running domain."""
        found = self.connection.get().getAllDomainStats(_GROUPS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        now = time.time()
        return [
            Counters(
                uuid=dom.UUIDString(),
                at=now,
                vcpus=int(s.get("vcpu.current", 0)) or 1,
                cpu_ns=int(s["cpu.time"]) if "cpu.time" in s else None,
                memory_kib=_memory(s),
                read_bytes=_sum(s, "block", "block.count", "rd.bytes"),
                write_bytes=_sum(s, "block", "block.count", "wr.bytes"),
                rx_bytes=_sum(s, "net", "net.count", "rx.bytes"),
                tx_bytes=_sum(s, "net", "net.count", "tx.bytes"),
            )
            for dom, s in found
        ]
