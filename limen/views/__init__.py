"""Blueprints, the sign-in gate, the security headers, and the error pages: every LimenError
reaches the person as its code and sentence."""

import logging
import time

from flask import Flask, current_app, jsonify, make_response, redirect, render_template, request, url_for
from flask_limiter.errors import RateLimitExceeded
from flask_login import current_user
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, SecurityError

from ..errors import CSRFFailed, LimenError, NotSignedIn, RequestRefused, TooManyAttempts
from ..extensions import limiter, login_manager
from ..hypervisor import set_call_deadline
from . import (
    admin,
    api,
    api_hosts,  # noqa: F401  (its routes are the API blueprint's)
    auth,
    console,
    health,
    hosts,
    hub,
    limits,
    media,
    vms,
)
from .vms import is_htmx

log = logging.getLogger(__name__)

# The only endpoints anyone may reach without signing in. The console WebSockets authenticate
# with their tickets instead. Every other endpoint, present or future, needs a signed-in user.
PUBLIC = frozenset(
    {
        "auth.login",
        "health.healthz",
        "health.metrics",
        "static",
        "console.websocket",
        "console.serial_websocket",
        "api_docs.docs",
    }
)

# No inline script or style, nothing from elsewhere, never in a frame.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
# xterm.js (the serial console) sizes and colours its terminal with <style> elements and style
# attributes of its own: that page allows inline style, and still no inline script.
SERIAL_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def wants_json() -> bool:
    return request.path.startswith("/api/") or request.accept_mimetypes.best == "application/json"


UPLOADS = {"media.upload", "api.upload_medium"}  # their limit is the media pool's free space


def libvirt_deadline() -> None:
    """A page waits on libvirt at most LIBVIRT_TIMEOUT per call (then 503); an upload, which
    streams into libvirt for as long as the file takes, has its own deadlines."""
    set_call_deadline(None if request.endpoint in UPLOADS else float(current_app.config["LIBVIRT_TIMEOUT"]))


def body_limits() -> None:
    """MAX_CONTENT_LENGTH for every request but an upload (a file streamed into the media
    pool, which checks its length against the pool's free space itself). A form sent to the
    page's upload keeps MAX_CONTENT_LENGTH: the CSRF check would parse it (a multipart one into
    temporary files) before the sign-in is checked. The API's takes no CSRF token, and reads
    the body only once the token is."""
    form = request.mimetype in ("multipart/form-data", "application/x-www-form-urlencoded")
    if request.endpoint in UPLOADS and not (form and request.endpoint == "media.upload"):
        request.max_content_length = 2**63 - 1  # None would mean MAX_CONTENT_LENGTH again


# What LIMEN says for the refusals Werkzeug words for a developer.
_IN_OUR_WORDS = {
    404: "There is nothing at this address: the link may be old, or mistyped.",
    405: "This address does not take that kind of request.",
}


def register(app: Flask) -> None:
    app.register_blueprint(auth.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(vms.bp)
    app.register_blueprint(hub.bp)
    app.register_blueprint(console.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(hosts.bp)
    app.register_blueprint(media.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(api.docs_bp)

    app.before_request(libvirt_deadline)
    app.teardown_request(lambda _exc: set_call_deadline(None))  # the thread serves others next

    @app.before_request
    def require_sign_in():
        if request.blueprint == "api":
            return  # bearer tokens, checked by the API itself; no cookies there
        if request.endpoint is not None and request.endpoint not in PUBLIC and not current_user.is_authenticated:
            return login_manager.unauthorized()

    @app.after_request
    def security_headers(response):
        if request.endpoint == "console.serial_page":
            response.headers.setdefault("Content-Security-Policy", SERIAL_CSP)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        # What a signed-in user or a token sees is not for a shared cache, nor the browser's
        # back button after signing out; only the static files are cached.
        if request.endpoint != "static":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(SecurityError)
    def untrusted_host(err: SecurityError):
        """A Host LIMEN does not answer to (TRUSTED_HOSTS): refused before routing, in plain
        text, since no URL of this site can be built for that host."""
        log.warning("refused a request for host %r", request.headers.get("Host"))
        return "Bad Request: LIMEN does not answer to this host name.\n", 400, {"Content-Type": "text/plain"}

    @app.errorhandler(RateLimitExceeded)
    def too_many(err: RateLimitExceeded):
        limit = limiter.current_limit
        return _too_many(err.description, max(1, int(limit.reset_at - time.time())) if limit else 60)

    @app.errorhandler(limits.OverLimit)
    def over_address_limit(err: limits.OverLimit):
        return _too_many(err.limit, err.wait)

    def _too_many(description: str | None, wait: int):
        """429 with Retry-After. Logged, not audited: a flood of refusals must not grow the
        database (the attempts that were let through are in the audit log)."""
        log.warning(
            "%s %s from %s refused: more than %s", request.method, request.path, request.remote_addr, description
        )
        message = f"Too many attempts. Try again in {wait} s."
        if request.endpoint == "auth.login" and not wants_json():
            # The body is not read (the refusal comes before it): the username is not known here.
            return render_template("login.html", error=message), 429, {"Retry-After": str(wait)}
        response = make_response(limen_error(TooManyAttempts(message)))
        response.headers["Retry-After"] = str(wait)
        return response

    @app.errorhandler(LimenError)
    def limen_error(err: LimenError):
        log.info("%s %s -> %s", request.method, request.path, err)
        if is_htmx():
            # Errors go to the page's message area, whatever element asked, above the answers
            # about other VMs (limen.js takes away this VM's older one as the request leaves).
            # A read about no VM (a poll of the table) is about its path: its error replaces
            # that read's older one, and leaves the page's answers (a bulk summary) alone.
            about = (request.view_args or {}).get("vm_uuid") or (request.path if request.method == "GET" else "")
            return (
                render_template("_flash.html", error=err, about=about),
                err.status,
                {"HX-Retarget": "#flash", "HX-Reswap": "afterbegin"},
            )
        if wants_json():
            headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else {}
            return jsonify(error=err.to_dict()), err.status, headers
        return render_template("error.html", error=err), err.status

    @app.errorhandler(CSRFError)
    def csrf_error(err: CSRFError):
        return limen_error(CSRFFailed())

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException):
        said = _IN_OUR_WORDS.get(err.code or 500, err.description or err.name)
        return limen_error(RequestRefused(err.code or 500, said))

    @app.errorhandler(Exception)
    def unexpected(err: Exception):
        log.exception("%s %s failed", request.method, request.path)
        return limen_error(LimenError())

    @login_manager.unauthorized_handler
    def unauthorized():
        if is_htmx():  # a poll after the session ended: send the whole tab to the login page
            return "", 401, {"HX-Redirect": url_for("auth.login")}
        if request.accept_mimetypes.best == "application/json":
            return jsonify(error=NotSignedIn().to_dict()), 401
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
