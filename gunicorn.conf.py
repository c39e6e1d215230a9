"""gunicorn settings for ``make run``.

One worker process: background operations and the libvirt event thread live in it, and only one
process may serve a database. Threads serve requests concurrently (and, later, WebSockets).
"""
import os

bind = os.environ.get("LIMEN_BIND", "127.0.0.1:8080")
workers = 1
worker_class = "gthread"
threads = int(os.environ.get("LIMEN_THREADS", "32"))
accesslog = "-"


def post_worker_init(worker):
    from limen import services

    services.start(worker.wsgi)
