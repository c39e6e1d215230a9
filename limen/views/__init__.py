"""Blueprints and the error pages: every LimenError reaches the person as its code and sentence."""
import logging

from flask import Flask, jsonify, redirect, render_template, request, url_for
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..errors import LimenError, RequestRefused
from ..extensions import login_manager
from . import auth, console, health, vms
from .vms import is_htmx

log = logging.getLogger(__name__)


def register(app: Flask) -> None:
    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(vms.bp)
    app.register_blueprint(console.bp)

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

    @app.errorhandler(CSRFError)
    def csrf_error(err: CSRFError):
        return limen_error(RequestRefused(
            "CSRF_FAILED", 400, "This page is out of date (the session changed). Reload it and try again."))

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        code = (err.name or "error").upper().replace(" ", "_").replace("'", "")
        return limen_error(RequestRefused(code, err.code or 500, err.description or err.name))

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return limen_error(LimenError())

    @login_manager.unauthorized_handler
    def unauthorized():
        if is_htmx():  # a poll after the session ended: send the whole tab to the login page
            return "", 401, {"HX-Redirect": url_for("auth.login")}
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error={"code": "NOT_SIGNED_IN", "details": {},
                                  "message": "Your session has ended. Sign in again."}), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
