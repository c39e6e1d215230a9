"""The media library page: the ISOs and cloud images, uploads with a progress bar (the
browser sends the file as the raw request body; static/js/media.js), registering files
already on the host, and deleting what no VM uses."""

import socket
import threading
import time
from contextlib import contextmanager

from flask import Blueprint, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .. import media
from ..errors import UploadIncomplete, ValidationFailed
from ..profiles import KINDS

bp = Blueprint("media", __name__, url_prefix="/media")


def _page(status: int = 200, form=None, errors=None, problem=None):
    return render_template(
        "media/index.html",
        **media.library_page(current_user),
        os_kinds=KINDS,
        kinds=media.KIND_NAMES,
        form=form or {},
        errors=errors or {},
        problem=problem,
    ), status


@bp.get("/")
def index():
    return _page()


@bp.get("/library")
def library():
    """The library table alone (the upload script swaps it in when an upload is done)."""
    return render_template(
        "media/_library.html", **media.library_page(current_user), os_kinds=KINDS, kinds=media.KIND_NAMES
    )


def medium_json(m) -> dict:
    """A medium as the upload script and the API answer it."""
    return {
        "id": m.id,
        "name": m.name,
        "kind": m.kind,
        "os_kind": m.os_kind,
        "size_bytes": m.size_bytes,
        "virtual_bytes": m.virtual_bytes,
    }


class _Counted:
    """The request's body, counting what was read of it."""

    def __init__(self, stream):
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


@contextmanager
def upload_deadlines(body: _Counted):
    """While an upload streams, so that a slow one cannot hold its thread, volume and row for
    ever: a client that sends nothing for UPLOAD_IDLE_TIMEOUT seconds is given up on (its read
    raises TimeoutError), and so, once it has run that long, is one that averages less than
    UPLOAD_MIN_RATE bytes a second: a watcher then shuts the socket's reading side, which ends
    the read that waits for a trickle's next bytes. Yields whether the watcher did. The
    server's socket is gunicorn's, or Werkzeug's in tests."""
    cfg = current_app.config
    sock = request.environ.get("gunicorn.socket") or request.environ.get("werkzeug.socket")
    too_slow = threading.Event()
    if sock is None:
        yield too_slow
        return
    grace, rate, started, done = (
        float(cfg["UPLOAD_IDLE_TIMEOUT"]),
        cfg["UPLOAD_MIN_RATE"],
        time.monotonic(),
        threading.Event(),
    )

    def watch() -> None:
        while not done.wait(0.5):
            elapsed = time.monotonic() - started
            if elapsed > grace and body.count / elapsed < rate:
                too_slow.set()
                try:
                    sock.shutdown(socket.SHUT_RD)
                except OSError:
                    pass
                return

    before = sock.gettimeout()
    sock.settimeout(grace)
    watcher = threading.Thread(target=watch, name="limen-upload-rate", daemon=True)
    watcher.start()
    try:
        yield too_slow
    finally:
        done.set()
        watcher.join()
        sock.settimeout(before)


def upload_from_request(user):
    """The one upload both this page and the API take: the body is the file; what it is comes
    in the query string."""
    a, body = request.args, _Counted(request.stream)
    with upload_deadlines(body) as too_slow:
        try:
            return media.upload(
                user,
                kind=a.get("kind", ""),
                name=a.get("name", ""),
                os_kind=a.get("os_kind", ""),
                length=request.content_length,
                stream=body,
            )
        except UploadIncomplete:
            if not too_slow.is_set():
                raise
            rate = current_app.config["UPLOAD_MIN_RATE"]
            raise UploadIncomplete(
                f"The upload was too slow: {body.count} bytes arrived, less than the {rate / 1024:.0f} KiB/s "
                "on average LIMEN waits for; nothing was kept."
            ) from None


@bp.post("/upload")
def upload():
    """The file is the request body, in bounded memory all the way into libvirt; what it is
    comes in the query string. Answers JSON, for the script that shows the progress (which
    asks for JSON, so that a refusal is JSON too)."""
    return jsonify(medium_json(upload_from_request(current_user))), 201


@bp.post("/register")
def register():
    f = request.form
    try:
        media.register(current_user, f.get("file", ""), f.get("name", ""), f.get("os_kind", ""))
    except ValidationFailed as e:
        return _page(e.status, form=f, errors=e.fields, problem=e)
    return redirect(url_for("media.index"))


@bp.post("/<int(max=9223372036854775807):medium_id>/delete")
def delete(medium_id):
    media.delete(current_user, medium_id)
    return redirect(url_for("media.index"))
