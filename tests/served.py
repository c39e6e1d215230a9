"""LIMEN served by gunicorn as `make run` serves it, on the real libvirtd, for the fault tests
(real processes, real signals). Each test gets its own instance folder and storage pool,
removed afterwards with every domain it made. Tests import the ``limen`` fixture from here."""
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import CSRF_RE, find_row, remove_test_leftovers, unique_name, wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A form post answers 302 on success: report that, rather than follow it."""

    def redirect_request(self, *args, **kwargs):
        return None


class Limen:
    """One LIMEN instance folder, served by gunicorn processes started and killed at will."""

    def __init__(self, tmp_path: Path, tag: str):
        self.instance = tmp_path / "instance"
        self.pool = f"limen-test-{tag}"
        self.pool_dir = f"/var/lib/limen/test-{tag}"
        self.media_pool, self.media_dir = f"limen-test-media-{tag}", f"/var/lib/limen/test-media-{tag}"
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = tmp_path / "gunicorn.log"
        self.opener = None

    def start(self, **config) -> None:
        """Serve, with LIMEN_* settings from ``config``; wait until it answers."""
        env = {**os.environ, "LIMEN_INSTANCE_PATH": str(self.instance), "LIMEN_BIND": f"127.0.0.1:{self.port}",
               "LIMEN_LIBVIRT_URI": "qemu:///system", "LIMEN_STORAGE_POOL": self.pool,
               "LIMEN_STORAGE_DIR": self.pool_dir, "LIMEN_MEDIA_POOL": self.media_pool,
               "LIMEN_MEDIA_DIR": self.media_dir, "LIMEN_NETWORK": "none", "LIMEN_SHUTDOWN_TIMEOUT": "3",
               **{f"LIMEN_{k}": str(v) for k, v in config.items()}}
        log = open(self.log, "a")
        # A session of its own: KILL_AFTER_STEP kills the whole process group, not pytest.
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                     cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        wait_until(lambda: self._answers(), 60, "gunicorn to answer /healthz")
        self.opener = None

    def _answers(self) -> bool:
        try:
            return urllib.request.urlopen(f"{self.base}/healthz", timeout=2).status in (200, 503)
        except urllib.error.HTTPError as e:
            return e.code == 503  # serving; libvirt unreachable is a health answer too
        except OSError:  # not listening yet, or busy recovering
            assert self.proc.poll() is None, self.log.read_text()
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=60)

    def wait_killed(self, timeout: float = 60) -> None:
        """Wait for the process group to have been killed by KILL_AFTER_STEP."""
        assert self.proc.wait(timeout=timeout) == -signal.SIGKILL, self.log.read_text()

    # -- HTTP, as a browser would --
    def sign_in(self) -> None:
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()),
                                                  _NoRedirects())
        page = self.opener.open(f"{self.base}/login").read().decode()
        password = (self.instance / "initial-admin-password").read_text().strip()
        self.post("/login", {"username": "admin", "password": password}, token=CSRF_RE.search(page).group(1))
        self.csrf = CSRF_RE.search(self.opener.open(f"{self.base}/").read().decode()).group(1)

    def post(self, path: str, form: dict | None = None, token: str | None = None) -> int:
        data = urlencode({**(form or {}), "csrf_token": token or self.csrf}).encode()
        try:
            return self.opener.open(f"{self.base}{path}", data=data, timeout=30).status
        except urllib.error.HTTPError as e:
            return e.code

    def create(self, name: str) -> int:
        """Ask for a small VM, as the page's form does."""
        return self.post("/vms", {"name": name, "vcpus": "1", "memory_mib": "128", "disk_gib": "1"})

    def get(self, path: str) -> tuple[int, str]:
        try:
            response = (self.opener or urllib.request).open(f"{self.base}{path}", timeout=30)
            return response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def row_state(self, name: str) -> str | None:
        """The state the table shows for ``name`` (None: no row)."""
        _, rows = self.get("/vms/rows")
        row = find_row(rows, name)
        return row.attrs["data-state"] if row else None

    def settled(self) -> bool:
        """No Operation is under way."""
        return not self.db("SELECT id FROM operation WHERE state IN ('pending', 'running')")

    # -- the database, read as an observer --
    def db(self, sql: str, *args) -> list[tuple]:
        with sqlite3.connect(self.instance / "limen.sqlite") as conn:
            return conn.execute(sql, args).fetchall()


@pytest.fixture
def limen(tmp_path, qemu_host):
    lm = Limen(tmp_path, unique_name("f").split("-")[1])
    yield lm
    lm.stop()
    uuids = set()
    if (lm.instance / "limen.sqlite").exists():
        uuids = {u for (u,) in lm.db("SELECT uuid FROM vm")}
    remove_test_leftovers(qemu_host, lambda dom: dom.UUIDString() in uuids or dom.name().startswith("f-"),
                          lm.pool)
    remove_test_leftovers(qemu_host, lambda dom: False, lm.media_pool)
