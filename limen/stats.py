"""Each running VM's recent past, for its graphs: CPU, memory, disk and network; and how busy
the host's CPUs were over the last interval, for the host overview.

A thread asks libvirt every STATS_INTERVAL seconds for every running domain's counters, in one
call, and keeps for each VM a ring of points of the last STATS_KEEP seconds: the rates between
two samples. The rings live in memory only, so a restart starts the graphs anew; a VM that
stops keeps its points until they age out, and its next start begins a new line (a counter is
never compared across a stop).
"""

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from .errors import HypervisorUnavailable, LimenError
from .hypervisor import Counters, Hypervisor
from .periodic import Periodic

FIELDS = ("cpu_percent", "memory_mib", "disk_read_bps", "disk_write_bps", "net_rx_bps", "net_tx_bps")


@dataclass(frozen=True)
class Point:
    at: float  # seconds since the epoch
    values: tuple[float | None, ...]  # in the order of FIELDS


def _rate(now: int, before: int, seconds: float) -> float | None:
    """Bytes a second; None when the counter went back (the VM restarted in between)."""
    return None if now < before else (now - before) / seconds


def point(before: Counters, now: Counters) -> Point | None:
    """What happened between two samples of one VM; None if they are not in order."""
    seconds = now.at - before.at
    if seconds <= 0:
        return None
    cpu = None
    if now.cpu_ns is not None and before.cpu_ns is not None and now.cpu_ns >= before.cpu_ns:
        cpu = min(100.0, (now.cpu_ns - before.cpu_ns) / (seconds * 1e9 * now.vcpus) * 100)
    memory = None if now.memory_kib is None else now.memory_kib / 1024
    return Point(
        now.at,
        (
            cpu,
            memory,
            _rate(now.read_bytes, before.read_bytes, seconds),
            _rate(now.write_bytes, before.write_bytes, seconds),
            _rate(now.rx_bytes, before.rx_bytes, seconds),
            _rate(now.tx_bytes, before.tx_bytes, seconds),
        ),
    )


class StatsSampler(Periodic):
    name = "limen-stats"

    def __init__(
        self, app: Flask, hypervisor: Hypervisor, interval: float, keep: float, clock: Callable[[], float] = time.time
    ):
        super().__init__(interval)
        self.app, self.hypervisor, self.keep, self.clock = app, hypervisor, float(keep), clock
        self._size = max(2, int(self.keep // self.interval))
        self._lock = threading.Lock()
        self._series: dict[str, deque[Point]] = {}
        self._last: dict[str, Counters] = {}
        self._host_times: tuple[int, int] | None = None
        self.host_cpu_percent: float | None = None  # the host's CPUs in use over the last interval

    def round(self) -> None:
        try:
            self.sample()
        except HypervisorUnavailable:
            self.record_host(None)  # the sync says so; the graphs show a gap, the host no share

    def sample(self) -> None:
        """One round: every running VM's counters, and a point for each that was sampled before;
        and the host's CPU time."""
        self.record(self.hypervisor.counters.running())
        try:
            times = self.hypervisor.host.cpu_times()
        except LimenError:  # not known this round: the next share needs two readings again
            times = None
        self.record_host(times)

    def record_host(self, times: tuple[int, int] | None) -> None:
        """Keep the host's CPU time (busy, all): the share busy since the reading before."""
        with self._lock:
            before, self._host_times = self._host_times, times
            if times is None or before is None or times[1] <= before[1] or times[0] < before[0]:
                self.host_cpu_percent = None
            else:
                self.host_cpu_percent = min(100.0, (times[0] - before[0]) / (times[1] - before[1]) * 100)

    def record(self, found: list[Counters]) -> None:
        """Keep a round of counters (every running VM's): a point for each VM sampled before."""
        with self._lock:
            running = set()
            for now in found:
                running.add(now.uuid)
                before, self._last[now.uuid] = self._last.get(now.uuid), now
                new = point(before, now) if before else None
                if new is not None:
                    self._series.setdefault(now.uuid, deque(maxlen=self._size)).append(new)
            for uuid in set(self._last) - running:  # stopped: its next start is a new line
                del self._last[uuid]
            self._prune(self.clock() - self.keep)

    def _prune(self, oldest: float) -> None:
        """Drop the points older than ``oldest``, and the VMs left with none (lock held)."""
        for uuid, points in list(self._series.items()):
            while points and points[0].at < oldest:
                points.popleft()
            if not points:
                del self._series[uuid]

    def series(self, uuid: str) -> dict[str, object]:
        """The VM's points, oldest first: their times and a list per field (None: not known)."""
        with self._lock:
            self._prune(self.clock() - self.keep)
            points = list(self._series.get(uuid, ()))
        return series(points, self.interval)


def series(points: list[Point], interval: float) -> dict[str, object]:
    """Points as the graphs and the API take them: their times, and a list per field."""
    found: dict[str, object] = {"interval": interval, "t": [round(p.at, 3) for p in points]}
    for i, field in enumerate(FIELDS):
        found[field] = [None if (v := p.values[i]) is None else round(v, 2) for p in points]
    return found
