"""The long-lived parts of a LIMEN process, one ``Runtime`` per app: the hypervisor
connection, the operation runner, the state sync, the guest watch, the pruner, the change
counter and the metrics.

``init_app`` builds them without starting anything, so that CLI commands and tests that only
need the database stay cheap. ``start`` is called once by the serving process (gunicorn's
post_worker_init hook, or a test fixture): it recovers what a previous process left
unfinished (the runner's interrupted Operations, and whatever the use cases registered with
``at_start``) and starts the sync, guest-watch and pruning threads. Only one process may serve a database.
"""

import atexit
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask, current_app
from sqlalchemy import text

from .changes import Changes
from .errors import LimenError
from .extensions import db
from .guests import GuestWatch
from .hypervisor import Hypervisor, event_loop_alive
from .metrics import Metrics
from .operations import Runner
from .retention import Pruner
from .stats import StatsSampler
from .sync import StateSync

_KEY = "limen.runtime"
_AT_START: list[Callable[[], object]] = []


@dataclass
class Runtime:
    hypervisor: Hypervisor
    runner: Runner
    sync: StateSync
    guests: GuestWatch
    pruner: Pruner
    changes: Changes
    metrics: Metrics
    stats: StatsSampler
    started: bool = False


def get(app: Flask | None = None) -> Runtime:
    """The Runtime of ``app``, or of the app in context."""
    runtime: Runtime = (app or current_app).extensions[_KEY]
    return runtime


def at_start(fn: Callable[[], object]) -> Callable[[], object]:
    """Run ``fn`` (in an app context) when a serving process starts, before the sync does:
    for a use case to settle what a stopped process left half done."""
    _AT_START.append(fn)
    return fn


def init_app(app: Flask) -> Runtime:
    cfg = app.config
    changes = Changes(app)
    hypervisor = Hypervisor(
        cfg["LIBVIRT_URI"],
        disk_pool=cfg["STORAGE_POOL"],
        disk_dir=cfg["STORAGE_DIR"],
        media_pool=cfg["MEDIA_POOL"],
        media_dir=cfg["MEDIA_DIR"],
        network=cfg["NETWORK"],
        cpu_mode=cfg["CPU_MODE"],
        domain_type=cfg["DOMAIN_TYPE"],
        on_domain_event=lambda uuid: sync.notify(uuid),
        timeout=float(cfg["LIBVIRT_TIMEOUT"]),
    )
    metrics = Metrics(app)
    sync = StateSync(app, hypervisor, changes, cfg["RESYNC_INTERVAL"], metrics.event_lag)
    guests = GuestWatch(app, hypervisor, changes, cfg["GUEST_POLL_INTERVAL"])
    pruner = Pruner(app, float(cfg["PRUNE_INTERVAL"]))
    metrics.watch(hypervisor, sync, lambda: dict(pruner.pruned))
    stats = StatsSampler(app, hypervisor, cfg["STATS_INTERVAL"], cfg["STATS_KEEP"])
    runtime = Runtime(hypervisor, Runner(app, cfg["WORKERS"]), sync, guests, pruner, changes, metrics, stats)
    app.extensions[_KEY] = runtime
    return runtime


def start(app: Flask) -> None:
    runtime = get(app)
    if runtime.started:
        return
    runtime.runner.recover()
    with app.app_context():
        for fn in _AT_START:
            fn()
    runtime.sync.start()
    runtime.guests.start()
    runtime.stats.start()
    runtime.pruner.start()
    runtime.started = True
    atexit.register(stop, app)


def stop(app: Flask) -> None:
    runtime = get(app)
    if not runtime.started:
        return
    runtime.started = False
    runtime.pruner.stop()
    runtime.stats.stop()
    runtime.guests.stop()
    runtime.sync.stop()
    runtime.runner.shutdown()
    runtime.hypervisor.close()


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
