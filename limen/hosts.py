"""The libvirt hosts LIMEN manages, as an admin sees them: list, try, add, disable, remove.

The local host (the configured LIBVIRT_URI) is the first and stays. Another is added in two
steps, as a person checks an SSH host's key: ``probe`` connects for the first time, and answers
what the host is and the key it showed; ``add`` keeps the host with that key, after connecting
once more with only that key accepted. From then on LIMEN refuses the host if it shows another
key (limen.remote). A TLS host comes with the CA that signed its certificate, and a client
certificate and key: ``probe`` checks and connects with them, and ``add`` keeps them (the page
passes the probe's staged copy on; the API may give them again). A host's VMs, its pinned key
and its certificates are never shown to non-admins.
"""

import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from . import audit, remote, runtime
from .access import Actor, authorize
from .errors import HostInUse, HostNotFound, LimenError, ValidationFailed
from .extensions import db
from .hypervisor.remote import HostFacts
from .hypervisor.remote import probe as probe_host
from .models import LOCAL_HOST, VM, ConsoleSession, Host, Operation, UnmanagedDomain

NAME_LENGTH = 63  # Host.name's column
GONE = "Those certificates are gone (they are kept for an hour): test the connection again."
PROBE_SECONDS = 15.0  # an SSH handshake and libvirt's first answers, on a slow link


@dataclass(frozen=True)
class HostStatus:
    host: Host
    vms: int
    problem: str | None  # why LIMEN cannot reach it now (None: it can, or it is disabled)
    fingerprint: str | None  # of its pinned SSH key
    ca: remote.CAFacts | None  # a TLS host's CA


@dataclass(frozen=True)
class Probe:
    name: str
    uri: str
    facts: HostFacts
    host_key: str | None  # what an SSH host showed at first contact: "ssh-ed25519 AAAA…"
    fingerprint: str | None
    ca: remote.CAFacts | None = None  # a TLS host's CA, and
    staged: str | None = None  # where its certificates wait for the add (``tls_staged``)


def listing(user: Actor, *, ask: bool = False) -> list[HostStatus]:
    """Every host, with why LIMEN cannot reach it as its sync last found (or, ``ask``, as each
    answers now: a process that runs no sync, such as the CLI, asks)."""
    authorize(user, "host.manage")
    counts = dict(db.session.execute(select(VM.host_id, func.count()).group_by(VM.host_id)).all())
    hosts = db.session.scalars(select(Host).order_by(Host.id)).all()
    rt = runtime.get()
    if ask:
        rt.refresh_hosts()
    problems = {i: _asked(h) if ask else h.sync.problem for i, h in list(rt.hosts.items())}
    return [
        HostStatus(
            h,
            counts.get(h.id, 0),
            problems.get(h.id),
            remote.fingerprint(h.host_key) if h.host_key else None,
            remote.ca_facts(remote.tls_dir(current_app.instance_path, h.id)) if remote.is_tls(h.uri or "") else None,
        )
        for h in hosts
    ]


def _asked(host: runtime.HostRuntime) -> str | None:
    try:
        host.hypervisor.host.free_memory_mib()
        return None
    except LimenError as e:
        return e.message


def status(user: Actor, host_id: int) -> HostStatus:
    """One host, as ``listing`` shows it (HOST_NOT_FOUND when there is none)."""
    found = [s for s in listing(user) if s.host.id == host_id]
    if not found:
        raise HostNotFound()
    return found[0]


def public_key(user: Actor) -> str:
    """The line for ``authorized_keys`` on each host (LIMEN's key pair is made at first need)."""
    authorize(user, "host.manage")
    return remote.public_key(current_app.instance_path)


def _validate(form: Mapping[str, Any]) -> tuple[str, str]:
    errors = {}
    name = str(form.get("name", "") or "").strip()
    uri = str(form.get("uri", "") or "").strip()
    if not name or len(name) > NAME_LENGTH or not name.isprintable():
        errors["name"] = f"Give the host a name of 1 to {NAME_LENGTH} characters."
    elif db.session.scalar(select(Host.id).where(func.lower(Host.name) == name.lower())):
        errors["name"] = f"A host is named {name} already."
    problem = remote.uri_problem(uri)
    if problem:
        errors["uri"] = problem
    elif db.session.scalar(select(Host.name).where(Host.uri == uri)):
        errors["uri"] = "LIMEN has a host at this URI already."
    if errors:
        raise ValidationFailed(errors)
    return name, uri


def _connect(uri: str, host_key: str | None, pki: Path | None = None) -> tuple[HostFacts, str | None]:
    """Open an SSH host with ``host_key`` the only key accepted, or (None) at first contact,
    or a TLS host with the certificates in ``pki``: what it is and the key it showed."""
    path = current_app.instance_path
    if pki is not None:
        facts, shown = probe_host(remote.tls_uri(uri, pki), PROBE_SECONDS), None
    else:
        known_hosts = remote.known_hosts_file(path, f"probe-{secrets.token_hex(8)}", uri, host_key)
        try:
            libvirt_uri = remote.libvirt_uri(uri, path, known_hosts, first_contact=host_key is None)
            facts = probe_host(libvirt_uri, PROBE_SECONDS)
            shown = remote.pinned_key(known_hosts)
        finally:
            known_hosts.unlink(missing_ok=True)
    if facts.uuid and (known := _known_as(facts.uuid)):
        already = "the local host" if known.id == LOCAL_HOST else f"the host {known.name}"
        raise ValidationFailed({"uri": f"That machine is {already} already, under another URI."})
    return facts, shown


def _known_as(host_uuid: str) -> runtime.HostRuntime | None:
    """The enabled host whose libvirt host UUID is ``host_uuid`` (one that cannot be reached
    now cannot be asked)."""
    rt = runtime.get()
    rt.refresh_hosts()  # as the table has them now (another process may have added one)
    for host in list(rt.hosts.values()):
        if host.sync.problem:
            continue
        try:
            if host.hypervisor.host.uuid() == host_uuid:
                return host
        except LimenError:
            continue
    return None


@audit.refusals("host.probe")
def probe(user: Actor, form: Mapping[str, Any]) -> Probe:
    """Connect to a host for the first time: what it is and the SSH key it shows, for the admin
    to check before adding it. Nothing is kept."""
    authorize(user, "host.manage")
    name, uri = _validate(form)
    if remote.is_tls(uri):
        pki = _certificates(form)
        try:
            facts, _ = _connect(uri, None, pki)
        except LimenError:
            shutil.rmtree(pki, ignore_errors=True)
            raise
        return Probe(name, uri, facts, None, None, remote.ca_facts(pki), pki.name.removeprefix("staged-"))
    facts, shown = _connect(uri, None)
    if shown is None:
        raise ValidationFailed({"uri": "The host showed no SSH key LIMEN could read."})
    return Probe(name, uri, facts, shown, remote.fingerprint(shown))


def _certificates(form: Mapping[str, Any]) -> Path:
    """A TLS host's certificates, staged: those a connection test staged (``tls_staged``), or
    those the form gives, checked."""
    staged = str(form.get("tls_staged", "") or "")
    if staged:
        pki = remote.staged_tls(current_app.instance_path, staged)
        if pki is None:
            raise ValidationFailed({"tls_staged": GONE})
        return pki
    pems = [str(form.get(field, "") or "").strip() for field in ("ca_cert", "client_cert", "client_key")]
    errors = remote.tls_problems(*pems)
    if errors:
        raise ValidationFailed(errors)
    return remote.stage_tls(current_app.instance_path, *pems)


@audit.refusals("host.add")
def add(user: Actor, form: Mapping[str, Any]) -> Host:
    """Keep a host, with the SSH key ``form["host_key"]`` (what ``probe`` showed) pinned: it is
    connected to once more with only that key accepted, so the key kept is the one checked."""
    authorize(user, "host.manage")
    name, uri = _validate(form)
    if remote.is_tls(uri):
        pki = _certificates(form)
        try:
            _connect(uri, None, pki)
            ca = remote.ca_facts(pki)
            return _keep(user, Host(name=name, uri=uri), f"{uri} CA {ca.fingerprint if ca else '?'}", pki)
        finally:
            shutil.rmtree(pki, ignore_errors=True)  # gone if kept
    host_key = str(form.get("host_key", "") or "").strip()
    fields = host_key.split()
    if len(fields) != 2 or len(host_key) > 1024:
        raise ValidationFailed({"host_key": 'Give the key the connection test showed ("ssh-ed25519 AAAA…").'})
    try:
        remote.fingerprint(host_key)
    except ValueError:
        raise ValidationFailed({"host_key": "That is not an SSH public key."}) from None
    _connect(uri, host_key)
    return _keep(user, Host(name=name, uri=uri, host_key=host_key), f"{uri} {remote.fingerprint(host_key)}")


def _keep(user: Actor, host: Host, detail: str, pki: Path | None = None) -> Host:
    """Write the host's row, audited, with (a TLS host's) certificates staged in ``pki`` made
    its own; the same name or URI added meanwhile is named, and nothing of it kept."""
    path = current_app.instance_path
    db.session.add(host)
    audit.record("host.add", actor=user, target=host.name, detail=detail)
    host_id = None
    try:
        db.session.flush()
        host_id = host.id
        if pki is not None:
            remote.keep_tls(pki, path, host_id)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        if host_id is not None:
            remote.forget(path, host_id)
        raise ValidationFailed({"name": f"A host is named {host.name}, or is at {host.uri}, already."}) from None
    except FileNotFoundError:  # the same staged certificates, kept by an add just before
        db.session.rollback()
        raise ValidationFailed({"tls_staged": GONE}) from None
    runtime.get().refresh_hosts()
    return host


def _host(host_id: int) -> Host:
    host = db.session.get(Host, host_id)
    if host is None:
        raise HostNotFound()
    return host


@audit.refusals("host.enable")
def set_enabled(user: Actor, host_id: int, enabled: bool) -> Host:
    """Disable a host (LIMEN lets go of its connection, and places no VM there; its VMs show
    that it is disabled) or enable it again. The local host stays enabled."""
    authorize(user, "host.manage")
    host = _host(host_id)
    if host.local and not enabled:
        raise ValidationFailed({"enabled": "The local host is where LIMEN runs: it stays enabled."})
    if not enabled and (busy := _in_use(host.id)):
        raise HostInUse(f"{busy} on {host.name}: let them end first (disabling it closes its connection).")
    if host.enabled != enabled:
        host.enabled = enabled
        audit.record("host.enable" if enabled else "host.disable", actor=user, target=host.name)
        db.session.commit()
        runtime.get().refresh_hosts()
        runtime.get().changes.bump()  # its VMs' rows say so at the next poll
    return host


def _in_use(host_id: int) -> str | None:
    """What uses the host's connection now: operations under way on its VMs (or moving a VM to
    it) and open consoles of its VMs, named ("2 operations and 1 console"); None for nothing."""
    active = db.session.execute(
        select(Operation.kind, Operation.params, VM.host_id)
        .join(VM, VM.uuid == Operation.vm_uuid, isouter=True)
        .where(Operation.state.in_(Operation.ACTIVE))
    ).all()
    operations = sum(
        1 for kind, params, on in active if on == host_id or (kind == "migrate" and (params or {}).get("to") == host_id)
    )
    consoles = db.session.scalar(
        select(func.count())
        .select_from(ConsoleSession)
        .join(VM, VM.uuid == ConsoleSession.vm_uuid)
        .where(VM.host_id == host_id, ConsoleSession.ended_at.is_(None))
    )
    found = [
        f"{n} {what}{'s' if n != 1 else ''}" for n, what in ((operations, "operation"), (consoles, "console")) if n
    ]
    return " and ".join(found) or None


@audit.refusals("host.remove")
def remove(user: Actor, host_id: int) -> None:
    """Forget a host that has no VM left in LIMEN (HOST_IN_USE otherwise). Nothing on the host
    changes; its pinned key is forgotten with it."""
    authorize(user, "host.manage")
    host = _host(host_id)
    if host.id == LOCAL_HOST:
        raise ValidationFailed({"host": "The local host is where LIMEN runs: it stays."})
    count = db.session.scalar(select(func.count()).where(VM.host_id == host.id))
    if count:
        raise HostInUse(f"{count} VM{'s' if count != 1 else ''} live on {host.name}: move or delete them first.")
    name = host.name
    db.session.execute(delete(UnmanagedDomain).where(UnmanagedDomain.host_id == host.id))
    db.session.delete(host)
    audit.record("host.remove", actor=user, target=name)
    db.session.commit()
    runtime.get().refresh_hosts()
    remote.forget(current_app.instance_path, host_id)
