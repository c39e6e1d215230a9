"""GET /healthz: can LIMEN reach its database and libvirt? For load balancers and monitors."""
from flask import Blueprint, jsonify
from sqlalchemy import text

from ..errors import LimenError
from ..extensions import db, services

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    checks = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as e:  # any failure is the answer here
        checks["database"] = f"failed: {e.__class__.__name__}"
    try:
        services().hypervisor.host_limits()
        checks["libvirt"] = "ok"
    except LimenError as e:
        checks["libvirt"] = f"failed: {e.code}"
    healthy = all(v == "ok" for v in checks.values())
    return jsonify(status="ok" if healthy else "failed", checks=checks), 200 if healthy else 503
