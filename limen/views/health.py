"""GET /healthz: can LIMEN reach its database and libvirt, and is libvirt's event loop
running? 200, or 503 naming what failed. For load balancers and monitors."""
from flask import Blueprint, jsonify

from ..services import health

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = health()
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "failed", checks=checks), 200 if healthy else 503
