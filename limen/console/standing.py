"""A console lasts only while its user may still have it: enabled, allowed the VM (an admin
made a user keeps only their own VMs' consoles), and still under a live sign-in or API token.

Those change in the database, from any process (the admin pages, the API, ``flask users
disable`` on the host), so every open console is checked against the database: all of a
process's consoles in one round of queries, every CONSOLE_RECHECK_INTERVAL seconds, by one
thread that runs only while a console is open.
"""

import logging
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask
from sqlalchemy import select

from ..accounts import live_sign_in
from ..errors import AccountDisabled, ConsoleLimit, LimenError, NotAllowed, SignInEnded, TokenInvalid
from ..extensions import db
from ..models import VM, ApiToken, LoginSession, User, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Standing:
    """What a console was opened under."""

    user_id: int
    vm_uuid: str
    login_session_id: int | None = None
    api_token_id: int | None = None


def revoked(standings: list[Standing]) -> list[LimenError | None]:
    """For each, why it no longer holds (the error to close its console with), or None."""
    user_ids = {s.user_id for s in standings}
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(user_ids)))}
    owners = {
        uuid: owner
        for uuid, owner in db.session.execute(
            select(VM.uuid, VM.owner_id).where(VM.uuid.in_({s.vm_uuid for s in standings}))
        )
    }
    live_logins = set(
        db.session.scalars(
            select(LoginSession.id).where(LoginSession.id.in_({s.login_session_id for s in standings}), live_sign_in())
        )
    )
    tokens = {
        t.id: t
        for t in db.session.scalars(select(ApiToken).where(ApiToken.id.in_({s.api_token_id for s in standings})))
    }
    now = utcnow()
    answers: list[LimenError | None] = []
    for s in standings:
        user, token = users.get(s.user_id), tokens.get(s.api_token_id or -1)
        if user is None or user.disabled:
            answers.append(AccountDisabled())
        elif s.login_session_id is not None and s.login_session_id not in live_logins:
            answers.append(SignInEnded())
        elif s.api_token_id is not None and (
            token is None or token.revoked_at is not None or (token.expires_at is not None and token.expires_at <= now)
        ):
            answers.append(TokenInvalid("The API token this console was opened with was revoked or has expired."))
        elif s.vm_uuid in owners and owners[s.vm_uuid] != user.id and not user.is_admin:
            answers.append(NotAllowed("You may no longer use this VM's console."))
        else:
            answers.append(None)  # a VM whose row is gone ends its console by its display closing
    return answers


class Watch:
    """The open consoles of this process, each with its app, standing and how to end it."""

    def __init__(self) -> None:
        self._open: dict[object, tuple[Flask, Standing, Callable[[LimenError], None]]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def add(self, key: object, app: Flask, standing: Standing, end: Callable[[LimenError], None]) -> None:
        with self._lock:
            self._open[key] = (app, standing, end)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="limen-console-standing", daemon=True)
                self._thread.start()

    def remove(self, key: object) -> None:
        with self._lock:
            self._open.pop(key, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._open:
                    self._thread = None
                    return
                by_app: dict[Flask, list[tuple[object, Standing, Callable[[LimenError], None]]]] = {}
                for key, (app, standing, end) in self._open.items():
                    by_app.setdefault(app, []).append((key, standing, end))
            for app, entries in by_app.items():
                self._check(app, entries)
            self._wake.wait(min(float(app.config["CONSOLE_RECHECK_INTERVAL"]) for app in by_app))

    def _check(self, app: Flask, entries: list[tuple[object, Standing, Callable[[LimenError], None]]]) -> None:
        try:
            with app.app_context():
                answers = revoked([standing for _key, standing, _end in entries])
                db.session.remove()
        except Exception:  # the database is busy or gone: check again next round
            log.exception("console standing check failed")
            return
        for (key, standing, end), err in zip(entries, answers, strict=True):
            if err is not None:
                log.info("console of user %s on vm %s ends: %s", standing.user_id, standing.vm_uuid, err)
                self.remove(key)
                end(err)


watch = Watch()


class Slots:
    """The consoles open in this process, per user and in all: each holds request threads
    until it ends, so there are at most ``total`` (gunicorn has that many threads more than
    pages need) and ``per_user`` of one user's."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[int] = Counter()

    def take(self, user_id: int, per_user: int, total: int) -> None:
        """One slot for the user's console, or ConsoleLimit naming the limit reached."""
        with self._lock:
            if self._held.total() >= total:
                raise ConsoleLimit(f"at most {total} on this LIMEN")
            if self._held[user_id] >= per_user:
                raise ConsoleLimit(f"at most {per_user} per user")
            self._held[user_id] += 1

    def give_back(self, user_id: int) -> None:
        with self._lock:
            self._held[user_id] -= 1

    def open(self) -> int:
        with self._lock:
            return self._held.total()


slots = Slots()
