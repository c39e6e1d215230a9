"""Logging set-up: secrets (console tickets) never reach a log line, not even the request lines
that the HTTP servers write."""

import logging
import re

_SECRET = re.compile(r"((?:ticket|token|password)=)[^&\s\"']+")


def redact(value):
    return _SECRET.sub(r"\1[redacted]", value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.msg)
        if isinstance(record.args, dict):
            record.args = {k: redact(v) for k, v in record.args.items()}
        elif record.args:
            record.args = tuple(redact(a) for a in record.args)
        return True


def configure() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
    logging.getLogger("alembic").setLevel(logging.WARNING)  # not two lines per start-up
    # Its INFO line names the rate-limit key: what someone typed as a username, which may be a
    # password typed into the wrong field. LIMEN logs refusals itself, without it.
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)
