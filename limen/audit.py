"""The audit log: every state change and every refusal of one, with who, what, which VM or
user, the result, the source address and the time.

``record`` adds the event to the caller's database session, so it commits (or rolls back)
with the change it describes. ``refusals`` wraps a use case so that a refusal is recorded
too, after the refused work is rolled back. Only names and codes go in: never a password,
a token or a ticket.
"""

import functools
import inspect
from datetime import datetime

from flask import has_request_context, request
from flask_login import current_user
from sqlalchemy import Select, select

from .access import authorize
from .errors import LimenError
from .extensions import db
from .models import VM, AuditEvent

PAGE_SIZE = 100
CURRENT = object()  # the actor by default: the signed-in user of the request, if any


def source_ip() -> str | None:
    return request.remote_addr if has_request_context() else None


def record(
    action: str,
    result: str = "ok",
    *,
    actor=CURRENT,
    vm: VM | None = None,
    vm_uuid: str | None = None,
    target: str | None = None,
    detail: str | None = None,
    operation_id: int | None = None,
    ip: str | None = None,
) -> AuditEvent:
    if actor is CURRENT:
        actor = current_user if has_request_context() and current_user.is_authenticated else None
    event = AuditEvent(
        actor_id=getattr(actor, "id", None),
        actor=getattr(actor, "username", None),
        action=action,
        result=result,
        target=target,
        operation_id=operation_id,
        vm_uuid=vm.uuid if vm is not None else vm_uuid,
        vm_name=vm.name if vm is not None else None,
        detail=detail or None,
        ip=ip or source_ip(),
    )
    db.session.add(event)
    return event


def refusals(action: str, subject: str | None = None):
    """Record a LimenError raised by the wrapped use case as a refused ``action`` (formatted
    with the use case's arguments: "vm.{action}"). The use case takes the acting user first;
    its argument named ``subject`` (a VM's UUID for ``vm.*`` actions, a username otherwise)
    says what it was refused on."""

    def decorate(fn):
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except LimenError as err:
                db.session.rollback()
                arguments = signature.bind_partial(*args, **kwargs).arguments
                actor = next(iter(arguments.values()))
                about = str(arguments.get(subject)) if subject in arguments else None
                on_vm = action.startswith("vm.")
                fields = getattr(err, "fields", None)
                detail = "; ".join(fields.values()) if isinstance(fields, dict) else err.message
                record(
                    action.format(**arguments),
                    err.code,
                    actor=actor,
                    vm_uuid=about if on_vm else None,
                    target=None if on_vm else about,
                    detail=detail,
                )
                db.session.commit()
                raise

        return wrapper

    return decorate


def search(
    viewer,
    *,
    actor: str = "",
    vm: str = "",
    action: str = "",
    result: str = "",
    since: datetime | None = None,
    until: datetime | None = None,
) -> Select:
    """The events matching every filter given, newest first. ``vm`` matches a name or a UUID;
    ``result`` is "ok", "refused" (any error code) or a code."""
    authorize(viewer, "audit.view")
    query = select(AuditEvent).order_by(AuditEvent.id.desc())
    if actor:
        query = query.where(AuditEvent.actor == actor)
    if vm:
        query = query.where((AuditEvent.vm_uuid == vm) | (AuditEvent.vm_name == vm))
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    if result == "refused":
        query = query.where(AuditEvent.result.not_in(("ok", "accepted")))
    elif result:
        query = query.where(AuditEvent.result == result)
    if since:
        query = query.where(AuditEvent.at >= since)
    if until:
        query = query.where(AuditEvent.at < until)
    return query
