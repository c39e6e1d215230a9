"""What guests tell about themselves, kept on their VM rows.

A thread asks each running VM's guest (limen.hypervisor.guest) every GUEST_POLL_INTERVAL
seconds and writes what changed: the address the table shows, and the agent, hostname, OS and
NICs the Details page and the API show. Pages read the row, so none of them waits on a guest
agent. A VM that is no longer running keeps its NICs and loses its addresses at the next round.
"""

import logging
import time

from flask import Flask
from sqlalchemy import select, update

from .changes import Changes
from .errors import HypervisorUnavailable, LimenError
from .extensions import cut, db
from .hypervisor import GuestInfo, Hypervisor
from .models import CREATING, DELETING, ERROR, LOCAL_HOST, MIGRATING, MISSING, VM, address_key
from .periodic import Periodic

log = logging.getLogger(__name__)


# What a guest reports is kept within bounds: a guest is not trusted to be brief.
MAX_TEXT, MAX_NICS, MAX_ADDRESSES = 255, 16, 16
SLOW = 1.0  # seconds: a guest that took longer (a hung agent) is asked again only after a pause


def _cut(text: str | None, size: int = MAX_TEXT) -> str | None:
    """A JSON value is not cut by the models' hook: the same cut (and mark) by hand."""
    return None if text is None else cut(text, size)


def record(info: GuestInfo) -> dict:
    """The row's ``guest`` value for ``info``."""
    return {
        "agent": info.agent,
        "hostname": _cut(info.hostname),
        "os": _cut(info.os),
        "source": info.source,
        "interfaces": [
            {
                "mac": _cut(n.mac, 32),
                "model": _cut(n.model, 32),
                "network": _cut(n.network, 80),
                "addresses": [_cut(a, 64) for a in n.addresses[:MAX_ADDRESSES]],
            }
            for n in info.nics[:MAX_NICS]
        ],
    }


def _stale(guest: dict | None) -> bool:
    """A stored answer that a VM which is not running should not keep showing."""
    return guest is None or guest.get("agent") == "connected" or any(n["addresses"] for n in guest["interfaces"])


class GuestWatch(Periodic):
    name = "limen-guests"

    def __init__(
        self, app: Flask, hypervisor: Hypervisor, changes: Changes, interval: float, host_id: int = LOCAL_HOST
    ):
        super().__init__(interval)
        self.app, self.hypervisor, self.changes, self.host_id = app, hypervisor, changes, host_id
        self._later: dict[str, float] = {}  # slow guests' UUIDs → when to ask them again

    def round(self) -> None:
        try:
            with self.app.app_context():
                self.poll()
        except HypervisorUnavailable:
            pass  # the sync says so; the next round tries again

    def poll(self) -> None:
        """One round: ask every running guest, and every stopped VM whose row still shows a
        guest's answer (or none yet); write the rows that changed."""
        rows = db.session.execute(
            select(VM.uuid, VM.state, VM.address, VM.guest).where(
                VM.host_id == self.host_id, VM.state.not_in((CREATING, DELETING, MIGRATING, MISSING, ERROR))
            )
        ).all()
        db.session.commit()  # no database connection held while guests answer
        changed = False
        for uuid, state, address, guest in rows:
            if self.stopping:
                break
            if (state != "running" and not _stale(guest)) or self._later.get(uuid, 0) > time.monotonic():
                continue
            asked = time.monotonic()
            try:
                info = self.hypervisor.guests.info(uuid)
            except HypervisorUnavailable:
                raise
            except LimenError as e:  # gone, or it answered with an error: the next round asks again
                log.debug("vm %s: no guest information: %s", uuid, e)
                continue
            finally:
                took = time.monotonic() - asked
                if took > SLOW:  # one hung agent must not hold up every other guest's answer
                    log.warning("vm %s: its guest took %.1f s to answer; asking it again later", uuid, took)
                    self._later[uuid] = time.monotonic() + 10 * self.interval
            info_address = _cut(info.address, 64)
            if info_address == address and record(info) == guest:
                continue
            # The state it was read in: a VM that changed meanwhile is read again next round.
            db.session.execute(
                update(VM)
                .where(VM.uuid == uuid, VM.state == state)
                .values(address=info_address, address_key=address_key(info_address), guest=record(info))
            )
            changed = True
        db.session.commit()
        if changed:
            self.changes.bump()
