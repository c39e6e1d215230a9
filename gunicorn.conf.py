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
accesslog = "-"
# The path without its query string: a console URL carries a ticket (limen.logs redacts it too).
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'


def post_worker_init(worker):
    from limen import runtime

    runtime.start(worker.wsgi)
