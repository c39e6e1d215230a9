"""Who may open a console: a ticket (32 random bytes, stored only as its SHA-256, bound to one
user, one VM and one kind of console, valid for a minute, usable once), or, from a client that is not a browser,
an API token. Either way the console remembers the sign-in or the token it came under, and
lasts no longer than that does (``standing``)."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import select, update

from .. import hashing, vms
from ..accounts import tokens
from ..errors import AccountDisabled, ForbiddenOrigin, NotAllowed, TicketInvalid, TokenInvalid, ValidationFailed
from ..extensions import db, rows_changed
from ..models import ConsoleTicket, User, utcnow

TICKET_LIFETIME = timedelta(seconds=60)
SCREEN, SERIAL = "screen", "serial"  # what a console shows: the VM's VNC screen or its serial line
KINDS = (SCREEN, SERIAL)


@dataclass(frozen=True)
class Ticket:
    ticket: str
    expires_at: datetime


@dataclass(frozen=True)
class Admission:
    """A user let in, and the sign-in or API token they came under."""

    user: User
    login_session_id: int | None
    api_token_id: int | None


def issue(user: User, vm_uuid: str, kind: str = SCREEN) -> Ticket:
    """A ticket for ``user``'s console (screen or serial) on the VM, under the sign-in or token
    of the request."""
    vm = vms.get_vm(user, vm_uuid, "vm.console")
    if kind not in KINDS:
        raise ValidationFailed({"kind": f"A console is one of: {', '.join(KINDS)}."})
    ticket = hashing.new_token()
    row = ConsoleTicket(
        token_hash=hashing.digest(ticket),
        user_id=user.id,
        vm_uuid=vm.uuid,
        kind=kind,
        expires_at=utcnow() + TICKET_LIFETIME,
        login_session_id=user.login_session.id if user.login_session else None,
        api_token_id=user.api_token.id if user.api_token else None,
    )
    db.session.add(row)
    db.session.commit()
    return Ticket(ticket, row.expires_at)


def check_origin(origin: str | None, own_origin: str) -> None:
    """A browser always sends Origin with a WebSocket; a page of another site must not get a
    console (cross-site WebSocket hijacking). Clients that are not browsers send none."""
    if origin is None:
        return
    extra = current_app.config["ALLOWED_ORIGINS"]
    if isinstance(extra, str):  # LIMEN_ALLOWED_ORIGINS=https://a.example,https://b.example
        extra = extra.split(",")
    allowed = {o.strip().rstrip("/").lower() for o in (own_origin, *extra) if o.strip()}
    if origin.rstrip("/").lower() not in allowed:
        raise ForbiddenOrigin(f"Origin {origin} is not this site.")


def admit_bearer(authorization: str, vm_uuid: str) -> Admission:
    """A client that is not a browser may present its API token instead of a ticket."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenInvalid("The Authorization header is not 'Bearer <token>'.")
    user = tokens.authenticate(token.strip())
    vms.get_vm(user, vm_uuid, "vm.console")
    return Admission(user, None, user.api_token.id if user.api_token else None)


def redeem(ticket: str | None, vm_uuid: str, session_user_id: int | None, kind: str = SCREEN) -> Admission:
    """Use the ticket up; its user, still enabled and still allowed this VM, is let in to the
    console the ticket was issued for."""
    if not ticket:
        raise TicketInvalid("The console link carries no ticket. Open the console from the VM list.")
    row = db.session.scalar(select(ConsoleTicket).where(ConsoleTicket.token_hash == hashing.digest(ticket)))
    if row is None or row.vm_uuid != vm_uuid:
        raise TicketInvalid()
    if row.kind != kind:
        raise TicketInvalid(f"This ticket opens the VM's {row.kind} console, not its {kind} console.")
    if session_user_id is not None and session_user_id != row.user_id:
        raise NotAllowed("This console ticket was issued to another user.")
    now = utcnow()
    claimed = rows_changed(
        update(ConsoleTicket)
        .where(ConsoleTicket.id == row.id, ConsoleTicket.used_at.is_(None), ConsoleTicket.expires_at > now)
        .values(used_at=now)
    )
    db.session.commit()
    if not claimed:
        db.session.refresh(row)
        used = row.used_at is not None and row.used_at <= now
        raise TicketInvalid(
            ("This console ticket was already used." if used else "This console ticket has expired.")
            + " Press Reconnect for a new one."
        )
    user = db.session.get(User, row.user_id)
    if user is None or not user.is_active:
        raise AccountDisabled()
    vms.get_vm(user, vm_uuid, "vm.console")  # still theirs (VM_NOT_FOUND otherwise)
    return Admission(user, row.login_session_id, row.api_token_id)
