"""The long-lived parts of a LIMEN process, one ``Runtime`` per app: for each enabled host its
hypervisor connection, state sync, guest watch and sampler (``HostRuntime``); and the
operation runner, the pruner, the change counter and the metrics.

``init_app`` builds them without starting anything, so that CLI commands and tests that only
need the database stay cheap. ``start`` is called once by the serving process (gunicorn's
post_worker_init hook, or a test fixture): it reads the hosts, recovers what a previous process
left unfinished (the runner's interrupted Operations, and whatever the use cases registered
with ``at_start``) and starts each host's threads, the pruner and the hosts' watch. Only one
process may serve a database.
"""

import atexit
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask, current_app
from sqlalchemy import select, text

from . import remote
from .changes import Changes
from .errors import HostDisabled, LimenError
from .extensions import db
from .guests import GuestWatch
from .hypervisor import VNCTLS, Hypervisor, SSHTarget, event_loop_alive
from .metrics import Metrics
from .models import LOCAL_HOST, VM
from .models import Host as HostRow
from .operations import Runner
from .periodic import Periodic
from .retention import Pruner
from .stats import StatsSampler
from .sync import StateSync

_KEY = "limen.runtime"
_AT_START: list[Callable[[], object]] = []


@dataclass
class HostRuntime:
    """One libvirt host's long-lived parts: its connection (with its events and keepalive),
    its state sync (with its reconnect backoff), its guest watch and its usage sampler. A host
    that cannot be reached holds up none of the others."""

    id: int
    name: str
    hypervisor: Hypervisor
    sync: StateSync
    guests: GuestWatch
    stats: StatsSampler

    def start(self) -> None:
        self.sync.start()
        self.guests.start()
        self.stats.start()

    def stop(self, close: bool = True) -> None:
        """Stop watching the host, and (``close``) let go of its connection: only once no
        operation can use it, since libvirt-python frees a closed connection under its callers."""
        self.stats.stop()
        self.guests.stop()
        self.sync.stop()
        if close:
            self.hypervisor.close()


class HostsWatch(Periodic):
    """Every RESYNC_INTERVAL, the hosts as the table has them (a host added, disabled or
    removed from the command line reaches the serving process so), and the certificates of
    connection tests no add followed are removed."""

    name = "limen-hosts"

    def __init__(self, runtime: "Runtime", interval: float):
        super().__init__(interval)
        self.runtime = runtime

    def round(self) -> None:
        self.runtime.refresh_hosts()
        remote.sweep_staged(self.runtime.app.instance_path)


@dataclass
class Runtime:
    app: Flask
    hosts: dict[int, HostRuntime]  # the enabled hosts, by id
    runner: Runner
    pruner: Pruner
    changes: Changes
    metrics: Metrics
    started: bool = False
    _hosts_lock: threading.Lock = field(default_factory=threading.Lock)
    watch: HostsWatch | None = None

    @property
    def local(self) -> HostRuntime:
        """The host LIMEN runs beside (its install media live there)."""
        return self.hosts[LOCAL_HOST]

    @property
    def hypervisor(self) -> Hypervisor:
        return self.local.hypervisor

    @property
    def sync(self) -> StateSync:
        return self.local.sync

    @property
    def stats(self) -> StatsSampler:
        return self.local.stats

    def host(self, host_id: int) -> HostRuntime:
        """An enabled host's parts (HOST_DISABLED for a host an admin disabled)."""
        if host_id not in self.hosts:  # added since (or by another process): read the table again
            self.refresh_hosts()
        try:
            return self.hosts[host_id]
        except KeyError:
            raise HostDisabled() from None

    def _build(self, row: HostRow) -> HostRuntime:
        cfg, path = self.app.config, self.app.instance_path
        uri, ssh, tls = cfg["LIBVIRT_URI"], None, None
        if remote.is_tls(row.uri or ""):
            pki = remote.tls_dir(path, row.id)
            uri = remote.tls_uri(row.uri or "", pki)
            tls = VNCTLS(remote.host_name(row.uri or ""), pki / remote.CA, pki / remote.CERT, pki / remote.KEY)
        elif not row.local:
            known_hosts = remote.known_hosts_file(path, row.id, row.uri or "", row.host_key)
            uri = remote.libvirt_uri(row.uri or "", path, known_hosts)
            host, port, user = remote.ssh_endpoint(row.uri or "")
            ssh = SSHTarget(host, port, user, str(remote.key_file(path)), str(known_hosts))
        sync: StateSync
        hypervisor = Hypervisor(
            uri,
            disk_pool=cfg["STORAGE_POOL"],
            disk_dir=cfg["STORAGE_DIR"],
            media_pool=cfg["MEDIA_POOL"],
            media_dir=cfg["MEDIA_DIR"],
            network=cfg["NETWORK"],
            cpu_mode=cfg["CPU_MODE"],
            domain_type=cfg["DOMAIN_TYPE"],
            on_domain_event=lambda uuid: sync.notify(uuid),
            timeout=float(cfg["LIBVIRT_TIMEOUT"]),
            ssh=ssh,
            tls=tls,
        )
        sync = StateSync(self.app, hypervisor, self.changes, cfg["RESYNC_INTERVAL"], self.metrics.event_lag, row.id)
        return HostRuntime(
            row.id,
            row.name,
            hypervisor,
            sync,
            GuestWatch(self.app, hypervisor, self.changes, cfg["GUEST_POLL_INTERVAL"], row.id),
            StatsSampler(self.app, hypervisor, cfg["STATS_INTERVAL"], cfg["STATS_KEEP"]),
        )

    def refresh_hosts(self) -> None:
        """Make the running hosts what the host table says: a host added or enabled gets its
        parts (started, when this process serves), one disabled or removed loses them. Called at
        start-up and by the hosts' use cases (limen.hosts) after each change."""
        with self._hosts_lock, self.app.app_context():
            rows = {h.id: h for h in db.session.scalars(select(HostRow).where(HostRow.enabled))}
            db.session.expunge_all()
            for host_id in set(self.hosts) - set(rows) - {LOCAL_HOST}:
                gone = self.hosts.pop(host_id)
                if self.started:
                    gone.stop()
            for host_id, row in rows.items():
                if host_id not in self.hosts:
                    self.hosts[host_id] = self._build(row)
                    if self.started:
                        self.hosts[host_id].start()


def get(app: Flask | None = None) -> Runtime:
    """The Runtime of ``app``, or of the app in context."""
    runtime: Runtime = (app or current_app).extensions[_KEY]
    return runtime


def on(vm_uuid: str) -> HostRuntime:
    """The parts of the host a VM lives on (its row says which; the local host's for a VM
    LIMEN has no row for)."""
    host_id = db.session.scalar(select(VM.host_id).where(VM.uuid == vm_uuid))
    return get().host(host_id or LOCAL_HOST)


def at_start(fn: Callable[[], object]) -> Callable[[], object]:
    """Run ``fn`` (in an app context) when a serving process starts, before the sync does:
    for a use case to settle what a stopped process left half done."""
    _AT_START.append(fn)
    return fn


def init_app(app: Flask) -> Runtime:
    cfg = app.config
    metrics = Metrics(app)
    pruner = Pruner(app, float(cfg["PRUNE_INTERVAL"]))
    runtime = Runtime(app, {}, Runner(app, cfg["WORKERS"]), pruner, Changes(app), metrics)
    app.extensions[_KEY] = runtime
    local = HostRow(id=LOCAL_HOST, name="local", uri=None, enabled=True)
    runtime.hosts[LOCAL_HOST] = runtime._build(local)  # before the database is asked: always there
    metrics.watch(lambda: [(h.name, h.hypervisor, h.sync) for h in runtime.hosts.values()], lambda: dict(pruner.pruned))
    return runtime


def start(app: Flask) -> None:
    runtime = get(app)
    if runtime.started:
        return
    runtime.refresh_hosts()
    runtime.runner.recover()
    with app.app_context():
        for fn in _AT_START:
            fn()
    for host in list(runtime.hosts.values()):
        host.start()
    runtime.pruner.start()
    runtime.watch = HostsWatch(runtime, float(app.config["RESYNC_INTERVAL"]))
    runtime.watch.start()
    runtime.started = True
    atexit.register(stop, app)


def stop(app: Flask) -> None:
    runtime = get(app)
    if not runtime.started:
        return
    runtime.started = False
    runtime.pruner.stop()
    if runtime.watch is not None:
        runtime.watch.stop()
    for host in list(runtime.hosts.values()):
        host.stop(close=False)
    runtime.runner.shutdown()  # operations under way end first: they use the connections
    for host in list(runtime.hosts.values()):
        host.hypervisor.close()


def health() -> dict[str, str]:
    """Each part LIMEN needs, "ok" or why not: the database, the libvirt connection (asked
    now), and libvirt's event loop thread (without it no event arrives)."""
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # any failure is the answer here
        checks["database"] = f"failed: {e.__class__.__name__}"
    try:
        get().hypervisor.host.limits()
        checks["libvirt"] = "ok"
    except LimenError as e:
        checks["libvirt"] = f"failed: {e.code}"
    checks["event_loop"] = "ok" if event_loop_alive() else "failed: not running"
    return checks
