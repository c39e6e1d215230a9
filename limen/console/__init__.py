"""The browser console: ``tickets`` (who may open one), ``serve`` (the WebSocket from the
Origin check to the end), ``bridge`` (the bytes both ways), ``frames`` (RFC 6455 framing)
and ``standing`` (a console ends when its user loses the right to it, from any process)."""

from .serve import end_stale_sessions, serve, stop_all
from .tickets import Ticket, issue

__all__ = ["Ticket", "end_stale_sessions", "issue", "serve", "stop_all"]
