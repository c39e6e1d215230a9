"""LIMEN's front server: nginx, started and stopped by gunicorn's master (gunicorn.conf.py).

gunicorn's threads read requests themselves, so a client that sends its request slowly holds a
thread for as long as it likes: a few hundred such connections and no page answers. nginx reads
every request whole, headers and body, with deadlines, before gunicorn sees it; thousands of
slow connections cost it a little memory each and no thread of LIMEN's. It also refuses an
over-long body from its Content-Length (413) before reading any of it.

nginx listens on LIMEN's BIND; gunicorn on a socket in the instance folder (0700), which no other
user can reach, so the X-Forwarded-* headers nginx sets there are the only ones that can be. Its
workers run as LIMEN's user for the same reason: that socket is LIMEN's own.
"""

import ctypes
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

NGINX = "nginx"
# What a client has to send a request's headers in, and the longest pause in its body.
HEADER_TIMEOUT = 10
BODY_TIMEOUT = 10
# The routes whose body is a file streamed into the media pool: not buffered (LIMEN checks the
# length against the pool's free space from the headers and reads it with deadlines of its own).
UPLOAD_PATHS = ("/media/upload", "/api/v1/media")
WEBSOCKET_PATH = r"^/vms/[^/]+/(console|serial)/ws$"  # a console may stay open, and quiet, for days


def upstream(instance: str | os.PathLike) -> Path:
    """The socket gunicorn listens on, for nginx only."""
    return Path(instance) / "gunicorn.sock"


# What may go into nginx.conf from the configuration: nothing that could end a directive.
_BIND = re.compile(r"(unix:/[\w./-]+|\[[0-9A-Fa-f:.]+\]:\d+|[\w.-]*:\d+|\d+)")
_PATH = re.compile(r"/[\w./+@-]*")


def _checked(pattern: re.Pattern, value: str, what: str) -> str:
    if not pattern.fullmatch(value):
        raise SystemExit(f"LIMEN cannot serve with {what} {value!r}: it is not one nginx can be told safely")
    return value


def config(cfg: Mapping[str, Any], instance: str | os.PathLike) -> str:
    """nginx.conf for this LIMEN: listen on BIND, hand whole requests to gunicorn."""
    front = Path(_checked(_PATH, str(Path(instance).resolve()), "the instance folder")) / "front"
    instance = front.parent
    proxies = int(cfg["TRUSTED_PROXIES"])
    if proxies:  # append to what LIMEN's own proxies said (ProxyFix trusts one hop more)
        forwarded = {
            "X-Forwarded-For": "$proxy_add_x_forwarded_for",
            "X-Forwarded-Proto": '"$http_x_forwarded_proto, $scheme"',
            "X-Forwarded-Host": '"$http_x_forwarded_host, $http_host"',
            "X-Forwarded-Port": '"$http_x_forwarded_port, $server_port"',
        }
    else:  # nobody is in front: whatever a client sent in these headers is replaced
        forwarded = {
            "X-Forwarded-For": "$remote_addr",
            "X-Forwarded-Proto": "$scheme",
            "X-Forwarded-Host": "$http_host",
            "X-Forwarded-Port": "$server_port",
        }
    headers = "\n".join(f"        proxy_set_header {k} {v};" for k, v in forwarded.items())
    proxy = f"""        proxy_pass http://limen;
        proxy_http_version 1.1;
        proxy_set_header Host $http_host;
{headers}
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;"""
    uploads = "|".join(p.replace("/", r"\/") for p in UPLOAD_PATHS)
    temp = "\n".join(
        f"    {kind}_temp_path {front / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root root;\n" if os.geteuid() == 0 else ""
    body = int(cfg["MAX_CONTENT_LENGTH"])
    return f"""# Written by LIMEN (limen/front.py) at every start: edit that, not this.
daemon off;
{user}worker_processes 1;
worker_rlimit_nofile 16384;
pid {front / "nginx.pid"};
error_log stderr warn;
events {{
    worker_connections 8192;
}}
http {{
    access_log off;  # gunicorn logs every request it answers
    server_tokens off;
{temp}
    client_header_timeout {HEADER_TIMEOUT}s;
    client_body_timeout {BODY_TIMEOUT}s;
    send_timeout 30s;
    keepalive_timeout 30s;
    client_max_body_size {body};
    client_body_buffer_size {body};  # a whole body fits in memory: no temporary file
    large_client_header_buffers 4 16k;
    map $http_upgrade $connection_upgrade {{
        default upgrade;
        "" close;
    }}
    upstream limen {{
        server unix:{upstream(instance)};
    }}
    server {{
        listen {_checked(_BIND, str(cfg["BIND"]), "LIMEN_BIND")};
        location / {{
{proxy}
        }}
        location ~ ^({uploads})$ {{
{proxy}
            client_max_body_size 0;
            client_body_timeout {int(cfg["UPLOAD_IDLE_TIMEOUT"])}s;  # LIMEN's own deadlines apply
            proxy_request_buffering off;
            proxy_read_timeout 1h;
        }}
        location ~ {WEBSOCKET_PATH} {{
{proxy}
            proxy_read_timeout 7d;
            proxy_send_timeout 7d;
        }}
    }}
}}
"""


class Front:
    """nginx as gunicorn's master's child: started when gunicorn is ready, stopped with it, and
    if it dies, LIMEN stops too (a supervisor then restarts both), rather than serve nothing."""

    def __init__(self, cfg: Mapping[str, Any], instance: str | os.PathLike, log: Any):
        self.cfg, self.instance, self.log = cfg, Path(instance), log
        self.proc: subprocess.Popen | None = None
        self.stopping = False

    def start(self, timeout: float = 10) -> None:
        front = self.instance / "front"
        front.mkdir(mode=0o700, exist_ok=True)
        conf = front / "nginx.conf"
        conf.write_text(config(self.cfg, self.instance))
        (front / "nginx.pid").unlink(missing_ok=True)  # a killed nginx's
        try:
            self.proc = subprocess.Popen(
                [NGINX, "-e", "stderr", "-p", str(front), "-c", str(conf)],
                preexec_fn=_die_with_parent,
                # Not in gunicorn's process group: a Ctrl-C or a signal to the group stops
                # gunicorn, which tells the consoles and then stops nginx (or the kernel does,
                # if gunicorn's master dies).
                start_new_session=True,
            )
        except FileNotFoundError:
            raise SystemExit(f"LIMEN is served behind nginx, and there is no {NGINX}: run scripts/host-setup") from None
        deadline = time.monotonic() + timeout
        # nginx writes its pid file once it has bound its sockets (it retries a busy port for
        # a few seconds, then exits): this nginx's pid there means it listens.
        while not _pid_file_says(front / "nginx.pid", self.proc.pid):
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"nginx did not listen on {self.cfg['BIND']} within {timeout:g} s")
            try:  # its exit is the other answer: waited for, a moment at a time
                self.proc.wait(0.05)
            except subprocess.TimeoutExpired:
                continue
            raise SystemExit(
                f"nginx exited with {self.proc.returncode} (its error is above): is {self.cfg['BIND']} free?"
            )
        self.log.info(
            "nginx (pid %s) listens on %s for gunicorn on %s", self.proc.pid, self.cfg["BIND"], upstream(self.instance)
        )
        threading.Thread(target=self._watch, name="limen-front-watch", daemon=True).start()

    def stop(self) -> None:
        self.stopping = True
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # nginx's fast stop: its connections end now
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def _watch(self) -> None:
        assert self.proc is not None
        self.proc.wait()
        if not self.stopping:
            self.log.error("nginx exited (%s): LIMEN stops, since nobody can reach it", self.proc.returncode)
            os.kill(os.getpid(), signal.SIGTERM)


def _pid_file_says(path: Path, pid: int) -> bool:
    try:
        return path.read_text().strip() == str(pid)
    except OSError:
        return False


def _die_with_parent() -> None:
    """In nginx's process before exec: the kernel sends it SIGTERM if gunicorn's master dies,
    however it dies, so no orphan keeps LIMEN's port."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
