"""The long-lived parts of a LIMEN process: the hypervisor connection, the operation runner,
the state sync and the change counter.

``init_app`` builds them without starting anything, so that CLI commands and tests that only
need the database stay cheap. ``start`` is called once by the serving process (gunicorn's
post_worker_init hook, or a test fixture): it recovers what a previous process left
unfinished and starts the sync thread. Only one process may serve a database.
"""
import atexit
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import text

from .changes import Changes
from .errors import LimenError
from .extensions import db
from .hypervisor import Hypervisor, event_loop_alive
from .metrics import Metrics
from .operations import Runner
from .sync import StateSync


@dataclass
class Services:
    hypervisor: Hypervisor
    runner: Runner
    sync: StateSync
    changes: Changes
    metrics: Metrics
    started: bool = False


def init_app(app) -> Services:
    cfg = app.config
    changes = Changes()
    hypervisor = Hypervisor(cfg["LIBVIRT_URI"], cfg["STORAGE_POOL"], cfg["STORAGE_DIR"],
                            cfg["NETWORK"], cfg["CPU_MODE"], on_domain_event=lambda uuid: sync.notify(uuid),
                            media_pool=cfg["MEDIA_POOL"], media_dir=cfg["MEDIA_DIR"],
                            domain_type=cfg["DOMAIN_TYPE"])
    metrics = Metrics(app)
    sync = StateSync(app, hypervisor, cfg["RESYNC_INTERVAL"], metrics.event_lag)
    svc = Services(hypervisor, Runner(app, cfg["WORKERS"]), sync, changes, metrics)
    app.extensions["limen"] = svc
    return svc


def start(app) -> None:
    svc: Services = app.extensions["limen"]
    if svc.started:
        return
    svc.runner.recover()
    with app.app_context():
        from . import media
        from .console import end_stale_sessions

        end_stale_sessions()
        media.recover()
    svc.sync.start()
    svc.started = True
    atexit.register(stop, app)


def stop(app) -> None:
    svc: Services = app.extensions["limen"]
    if not svc.started:
        return
    svc.started = False
    svc.sync.stop()
    svc.runner.shutdown()
    svc.hypervisor.close()


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
        current_app.extensions["limen"].hypervisor.host_limits()
        checks["libvirt"] = "ok"
    except LimenError as e:
        checks["libvirt"] = f"failed: {e.code}"
    checks["event_loop"] = "ok" if event_loop_alive() else "failed: not running"
    return checks
