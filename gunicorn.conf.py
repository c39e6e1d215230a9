"""gunicorn settings for ``make run``, from LIMEN's configuration (BIND, THREADS, CONSOLES_MAX).

One worker process: background operations and the libvirt event thread live in it, and only one
process may serve a database. Threads serve requests concurrently. Clients never reach gunicorn
itself: nginx, started and stopped with it, listens on BIND and hands it whole requests
(limen/front.py), so a slow client holds none of its threads.
"""

import signal
from pathlib import Path

from limen import front
from limen.config import for_server

_config = for_server()
_instance = _config.root_path
Path(_instance).mkdir(mode=0o700, parents=True, exist_ok=True)  # gunicorn's socket is in it
bind = f"unix:{front.upstream(_instance)}"
umask = 0o077  # the socket, and any file LIMEN writes, is its user's alone
workers = 1
worker_class = "gthread"
# Pages have THREADS, whatever the consoles take: each open console holds one thread, and
# there are at most CONSOLES_MAX of them.
threads = int(_config["THREADS"]) + int(_config["CONSOLES_MAX"])
worker_connections = threads + 64
# gunicorn's control socket is this instance's own (the default, ~/.gunicorn/gunicorn.ctl, is
# shared by every gunicorn of the user), in the instance folder (0700), itself 0600.
control_socket = f"{_instance}/gunicorn.ctl"
control_socket_mode = 0o600
# X-Forwarded-* come from nginx, which sets them (limen/front.py); the app's ProxyFix reads them.
forwarded_allow_ips = ""
# gunicorn believes a unix socket's peer whatever forwarded_allow_ips says: it is not to read a
# scheme from headers (nginx passes the client's X-Forwarded-Ssl on); the app's ProxyFix does.
secure_scheme_headers: dict[str, str] = {}
raw_env = ["LIMEN_FRONT=nginx"]  # tells the app so: one more proxy to trust
accesslog = "-"
# The client's address (from nginx), and the path without its query string: a console URL
# carries a ticket (limen.logs redacts it too).
access_log_format = '%({x-forwarded-for}i)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
_front = None


def when_ready(server):
    global _front
    _front = front.Front(_config, _instance, server.log)
    _front.start()


def on_exit(server):
    if _front is not None:
        _front.stop()


def post_worker_init(worker):
    from limen import console, runtime

    runtime.start(worker.wsgi)
    # A graceful stop (SIGTERM) tells the open consoles first (1001 LIMEN_STOPPING), then lets
    # gunicorn wait for the requests under way, the consoles' ends among them.
    graceful = signal.getsignal(signal.SIGTERM)

    def stopping(signum, frame):
        console.stop_all()  # quick: a thread per console sends its close frame
        graceful(signum, frame)

    signal.signal(signal.SIGTERM, stopping)


def worker_int(worker):
    """A quick stop (SIGINT, SIGQUIT: gunicorn's worker exits a moment later): the consoles are
    told, as far as there is time."""
    from limen import console

    console.stop_all()
