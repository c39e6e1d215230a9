"""A version token for "what the VM table shows", so that an unchanged poll costs one string
comparison.

The token is bumped after every commit that touched a VM or an Operation row (found by
SQLAlchemy session events, so no code path can forget it) and by the state sync. It carries a
random boot id, so a tab that was open across a restart never mistakes old data for current.
"""

import secrets
import threading

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session


class Changes:
    def __init__(self, app: Flask) -> None:
        app.extensions["limen.changes"] = self  # where the commit listener finds it
        self._boot = secrets.token_hex(4)
        self._n = 0
        self._lock = threading.Lock()

    @property
    def token(self) -> str:
        return f"{self._boot}-{self._n}"

    def bump(self) -> None:
        with self._lock:
            self._n += 1


_WATCHED: tuple[type, ...] = ()


def watch(*models: type) -> None:
    """Bump the app's Changes after any commit that adds, changes or deletes one of ``models``."""
    global _WATCHED
    _WATCHED = models


@event.listens_for(Session, "before_flush")
def _note_changes(session, _flush_context, _instances) -> None:
    if any(isinstance(obj, _WATCHED) for obj in (*session.new, *session.dirty, *session.deleted)):
        session.info["limen_changed"] = True


@event.listens_for(Session, "after_commit")
def _bump_after_commit(session) -> None:
    if session.info.pop("limen_changed", False):
        current_app.extensions["limen.changes"].bump()


@event.listens_for(Session, "after_rollback")
def _forget_on_rollback(session) -> None:
    session.info.pop("limen_changed", None)
