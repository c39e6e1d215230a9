"""Retention: how long LIMEN keeps what only grows. A background thread deletes, once at start
and then every PRUNE_INTERVAL seconds, what is older than its RETAIN_*_DAYS (None: kept for
good): audit rows, ended sign-ins, used or expired console tickets, ended console sessions and
finished operations. Nothing still in use is touched: a live sign-in, an open console, an
operation under way, or a sign-in that a kept ticket or session still names. /metrics counts
what was deleted (limen_pruned_rows_total, by kind).
"""

import logging
from collections import Counter
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import ColumnElement, delete, exists, select

from .extensions import db, rows_changed
from .models import AuditEvent, ConsoleSession, ConsoleTicket, LoginSession, Operation, utcnow
from .periodic import Periodic

log = logging.getLogger(__name__)
BATCH = 1000  # rows per transaction: the database is never locked for long


class Pruner(Periodic):
    name = "limen-prune"
    at_start = True

    def __init__(self, app: Flask, interval: float):
        super().__init__(interval)
        self.app = app
        self.pruned: Counter[str] = Counter()  # kind → rows deleted by this process
        self.rounds = 0  # rounds the thread has finished

    def round(self) -> None:
        try:
            with self.app.app_context():
                self.prune()
        finally:
            self.rounds += 1

    def prune(self) -> Counter[str]:
        """One round: each kind's old rows, in batches. Returns what this round deleted."""
        now, cfg = utcnow(), self.app.config

        def older(key: str) -> datetime | None:
            days = cfg[key]
            return None if days is None else now - timedelta(days=float(days))

        lifetime = timedelta(hours=float(cfg["SIGN_IN_LIFETIME_HOURS"]))
        wheres: dict[str, tuple[type, ColumnElement[bool]]] = {}
        if (cut := older("RETAIN_AUDIT_DAYS")) is not None:
            wheres["audit"] = (AuditEvent, AuditEvent.at < cut)
        if (cut := older("RETAIN_TICKETS_DAYS")) is not None:
            wheres["console_tickets"] = (
                ConsoleTicket,
                (ConsoleTicket.used_at < cut) | (ConsoleTicket.used_at.is_(None) & (ConsoleTicket.expires_at < cut)),
            )
        if (cut := older("RETAIN_CONSOLE_SESSIONS_DAYS")) is not None:
            wheres["console_sessions"] = (ConsoleSession, ConsoleSession.ended_at < cut)
        if (cut := older("RETAIN_OPERATIONS_DAYS")) is not None:
            wheres["operations"] = (
                Operation,
                Operation.state.not_in(Operation.ACTIVE) & (Operation.finished_at < cut),
            )
        if (cut := older("RETAIN_SIGN_INS_DAYS")) is not None:  # after the tickets and sessions naming them
            ended = (LoginSession.ended_at < cut) | (
                LoginSession.ended_at.is_(None) & (LoginSession.created_at < cut - lifetime)
            )
            named = exists().where(ConsoleTicket.login_session_id == LoginSession.id) | exists().where(
                ConsoleSession.login_session_id == LoginSession.id
            )
            wheres["sign_ins"] = (LoginSession, ended & ~named)
        done: Counter[str] = Counter()
        for kind, (model, where) in wheres.items():
            while not self._stop.is_set():
                ids = select(model.id).where(where).limit(BATCH).scalar_subquery()  # type: ignore[attr-defined]
                n = rows_changed(delete(model).where(model.id.in_(ids)))  # type: ignore[attr-defined]
                db.session.commit()
                done[kind] += n
                if n < BATCH:
                    break
        if done.total():
            log.info("pruned %s", ", ".join(f"{n} {kind}" for kind, n in done.items() if n))
        self.pruned.update(done)
        return +done  # the kinds that lost rows
