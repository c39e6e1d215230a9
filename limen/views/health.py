"""GET /healthz: can LIMEN reach its database and libvirt, and is libvirt's event loop
running? 200, or 503 naming what failed. GET /metrics: Prometheus's text format. For load
balancers and monitors: neither needs a sign-in, and neither names a VM or a user."""

from flask import Blueprint, Response, jsonify

from .. import runtime

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = runtime.health()
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "failed", checks=checks), 200 if healthy else 503


@bp.get("/metrics")
def metrics():
    return Response(runtime.get().metrics.render(), mimetype="text/plain; version=0.0.4")
