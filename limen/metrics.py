"""GET /metrics, for Prometheus: VMs by state, operations by kind and result, console sessions
open, each host's libvirt reconnects and whether it is reachable, how long libvirt's events wait before
the table shows them, and the rows pruned as past their retention.

Counts come from the database when scraped (so they survive restarts and need no
bookkeeping); the event lag is measured by the state sync as it applies each event. Each app
has a registry of its own.
"""

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from flask import Flask
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select

from .extensions import db
from .models import VM, ConsoleSession, Operation

if TYPE_CHECKING:
    from .hypervisor import Hypervisor
    from .sync import StateSync


Hosts = Callable[[], list[tuple[str, "Hypervisor", "StateSync"]]]


class _FromDatabase:
    def __init__(self, app: Flask, hosts: Hosts, pruned: Callable[[], dict[str, int]]):
        self.app, self.hosts, self.pruned = app, hosts, pruned

    def collect(self) -> Iterator[Metric]:
        with self.app.app_context():
            vms = GaugeMetricFamily("limen_vms", "VMs by the state LIMEN last saw", labels=["state"])
            for state, n in db.session.execute(select(VM.state, func.count()).group_by(VM.state)):
                vms.add_metric([state], n)
            finished = CounterMetricFamily(
                "limen_operations",
                "Finished operations by kind and result (done, or the error code)",
                labels=["kind", "result"],
            )
            active = GaugeMetricFamily("limen_operations_active", "Operations under way", labels=["kind"])
            rows = db.session.execute(
                select(Operation.kind, Operation.state, Operation.error_code, func.count()).group_by(
                    Operation.kind, Operation.state, Operation.error_code
                )
            )
            for kind, state, code, n in rows:
                if state in Operation.ACTIVE:
                    active.add_metric([kind], n)
                else:
                    finished.add_metric([kind, "done" if state == "done" else code or "failed"], n)
            consoles = db.session.scalar(select(func.count()).where(ConsoleSession.ended_at.is_(None)))
            db.session.remove()
        yield vms
        yield finished
        yield active
        yield GaugeMetricFamily("limen_console_sessions_open", "Console sessions open", value=consoles)
        reconnects = CounterMetricFamily(
            "limen_libvirt_reconnects", "Times LIMEN connected to a host's libvirt again", labels=["host"]
        )
        reachable = GaugeMetricFamily(
            "limen_libvirt_reachable", "1 when LIMEN reaches a host's libvirt", labels=["host"]
        )
        for name, hypervisor, sync in self.hosts():
            reconnects.add_metric([name], max(0, hypervisor.connection.generation - 1))
            reachable.add_metric([name], 1 if sync.reachable else 0)
        yield reconnects
        yield reachable
        pruned = CounterMetricFamily(
            "limen_pruned_rows", "Rows deleted as older than their retention, by kind", labels=["kind"]
        )
        for kind, n in sorted(self.pruned().items()):
            pruned.add_metric([kind], n)
        yield pruned


class Metrics:
    def __init__(self, app: Flask):
        self.app = app
        self.registry = CollectorRegistry()
        self.event_lag = Histogram(
            "limen_event_lag_seconds",
            "From a libvirt event's arrival to its VM row being written",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
            registry=self.registry,
        )

    def watch(self, hosts: Hosts, pruned: Callable[[], dict[str, int]]) -> None:
        """Count from the database, and report each host's connection and sync (``hosts``: their
        names, hypervisors and syncs now) and the pruning, when scraped."""
        self.registry.register(_FromDatabase(self.app, hosts, pruned))

    def render(self) -> bytes:
        return generate_latest(self.registry)
