"""A version token for "what the VM table shows", so that an unchanged poll costs one lookup.

The token is bumped after every commit that touched a VM or an Operation row (found by
SQLAlchemy session events, so no code path can forget it) and by the state sync. It carries a
random boot id, so a check made before a restart never vouches for what came after.

The token counts every tenant's changes, so it never leaves the server: a page carries only
what its own rows say, and the server remembers at which token it last found a page unchanged
(``checked``), so that a poll of it needs no query until anything changes.
"""

import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

CHECKS_KEPT = 4096  # pages remembered as checked (the oldest are forgotten: their next poll queries)


class Changes:
    def __init__(self, app: Flask) -> None:
        app.extensions["limen.changes"] = self  # where the commit listener finds it
        self._boot = secrets.token_hex(4)
        self._n = 0
        self._lock = threading.Lock()
        self._checked: OrderedDict[Hashable, str] = OrderedDict()

    @property
    def token(self) -> str:
        return f"{self._boot}-{self._n}"

    def bump(self) -> None:
        with self._lock:
            self._n += 1

    def check(self, page: Hashable, token: str) -> None:
        """``page`` (a user's view and what it shows) was read as it stood at ``token``."""
        with self._lock:
            self._checked[page] = token
            self._checked.move_to_end(page)
            while len(self._checked) > CHECKS_KEPT:
                self._checked.popitem(last=False)

    def checked(self, page: Hashable) -> bool:
        """Whether nothing has changed since ``page`` was last read."""
        return self._checked.get(page) == self.token


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
