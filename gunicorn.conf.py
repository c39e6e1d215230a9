"""gunicorn settings for ``make run``, from LIMEN's configuration (BIND, THREADS).

One worker process: background operations and the libvirt event thread live in it, and only one
process may serve a database. Threads serve requests concurrently.
"""

from limen.config import for_server

_config = for_server()
bind = _config["BIND"]
workers = 1
worker_class = "gthread"
threads = int(_config["THREADS"])
# gunicorn's control socket is this instance's own (the default, ~/.gunicorn/gunicorn.ctl, is
# shared by every gunicorn of the user), in the instance folder (0700), itself 0600.
control_socket = f"{_config.root_path}/gunicorn.ctl"
control_socket_mode = 0o600
# X-Forwarded-* are believed only from proxies LIMEN is told of (LIMEN_TRUSTED_PROXIES, which
# the app's ProxyFix follows too); by default, from nobody, not even 127.0.0.1.
forwarded_allow_ips = "127.0.0.1,::1" if int(_config["TRUSTED_PROXIES"]) else ""
accesslog = "-"
# The path without its query string: a console URL carries a ticket (limen.logs redacts it too).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'


def post_worker_init(worker):
    from limen import runtime

    runtime.start(worker.wsgi)
