"""Blueprints and the error pages: every LimenError reaches the person as its code and sentence."""
import logging

from flask import Flask, jsonify, redirect, render_template, request, url_for

from ..errors import LimenError
from ..extensions import login_manager
from . import auth, health, vms

log = logging.getLogger(__name__)


def is_htmx() -> bool:
    return request.headers.get("HX-Request") == "true"


def register(app: Flask) -> None:
    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(vms.bp)

    @app.errorhandler(LimenError)
    def limen_error(err: LimenError):
        log.info("%s %s -> %s", request.method, request.path, err)
        if is_htmx():
            # Errors go to the page's message area, whatever element asked.
            return render_template("_flash.html", error=err), err.status, {
                "HX-Retarget": "#flash", "HX-Reswap": "innerHTML"}
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error=err.to_dict()), err.status
        return render_template("error.html", error=err), err.status

    @login_manager.unauthorized_handler
    def unauthorized():
        if is_htmx():  # a poll after the session ended: send the whole tab to the login page
            return "", 401, {"HX-Redirect": url_for("auth.login")}
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
