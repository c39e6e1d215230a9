"""A version token for "what the VM table shows", so that an unchanged poll costs one lookup.

The token is bumped after every commit that touched a VM or an Operation row (found by
SQLAlchemy session events, so no code path can forget it) and by the state sync. It carries a
random boot id, so a check made before a restart never vouches for what came after.

The token counts every tenant's changes, so it never leaves the server: a page carries only
what its own rows say, and the server remembers at which token it last found a page unchanged
(``checked``), so that a poll of it needs no query until anything changes. It remembers too
which rows a page drawn lately showed (``shown``), so that a poll can answer with the rows that
came and left rather than the whole page.
"""

import secrets
import threading
from collections import OrderedDict
from collections.abc import Hashable

from flask import Flask, current_app
from sqlalchemy import event
from sqlalchemy.orm import Session

KEPT = 4096  # pages remembered (the oldest are forgotten: their next poll asks more of the database)


class _Recent:
    """A bounded map that forgets what was least lately set or read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, object] = OrderedDict()

    def set(self, key: Hashable, value: object) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > KEPT:
                self._items.popitem(last=False)

    def get(self, key: Hashable) -> object | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)  # read lately too: a page that stays is kept
            return self._items.get(key)


class Changes:
    def __init__(self, app: Flask) -> None:
        app.extensions["limen.changes"] = self  # where the commit listener finds it
        self._boot = secrets.token_hex(4)
        self._n = 0
        self._lock = threading.Lock()
        self._checked = _Recent()
        self._shown = _Recent()

    @property
    def token(self) -> str:
        return f"{self._boot}-{self._n}"

    def bump(self) -> None:
        with self._lock:
            self._n += 1

    def check(self, page: Hashable, token: str) -> None:
        """``page`` (a user's view and what it shows) was read as it stood at ``token``."""
        self._checked.set(page, token)

    def checked(self, page: Hashable) -> bool:
        """Whether nothing has changed since ``page`` was last read."""
        return self._checked.get(page) == self.token

    def show(self, page: Hashable, what: object) -> None:
        """``page`` (whose, and its digest) showed ``what`` (its rows, and what else it drew)."""
        self._shown.set(page, what)

    def shown(self, page: Hashable) -> object | None:
        """What ``page`` showed, if it was drawn lately."""
        return self._shown.get(page)


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
