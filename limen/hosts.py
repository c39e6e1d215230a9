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

import re
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
from .models import LOCAL_HOST, VM, Host, Operation, UnmanagedDomain

NAME_LENGTH = 63  # Host.name's column
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


def listing(user: Actor) -> list[HostStatus]:
    authorize(user, "host.manage")
    counts = dict(db.session.execute(select(VM.host_id, func.count()).group_by(VM.host_id)).all())
    hosts = db.session.scalars(select(Host).order_by(Host.id)).all()
    running = runtime.get().hosts
    return [
        HostStatus(
            h,
            counts.get(h.id, 0),
            running[h.id].sync.problem if h.id in running else None,
            remote.fingerprint(h.host_key) if h.host_key else None,
            remote.ca_facts(remote.tls_dir(current_app.instance_path, h.id)) if remote.is_tls(h.uri or "") else None,
        )
        for h in hosts
    ]


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
    for host in list(runtime.get().hosts.values()):
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
        pki = remote.tls_dir(current_app.instance_path, f"staged-{staged}")
        if not re.fullmatch(r"[0-9a-f]{16}", staged) or not pki.is_dir():
            raise ValidationFailed({"tls_staged": "Those certificates are gone: test the connection again."})
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
        return _add_tls(user, name, uri, _certificates(form))
    host_key = str(form.get("host_key", "") or "").strip()
    fields = host_key.split()
    if len(fields) != 2 or len(host_key) > 1024:
        raise ValidationFailed({"host_key": 'Give the key the connection test showed ("ssh-ed25519 AAAA…").'})
    try:
        remote.fingerprint(host_key)
    except ValueError:
        raise ValidationFailed({"host_key": "That is not an SSH public key."}) from None
    _connect(uri, host_key)
    host = Host(name=name, uri=uri, host_key=host_key)
    db.session.add(host)
    audit.record("host.add", actor=user, target=name, detail=f"{uri} {remote.fingerprint(host_key)}")
    try:
        db.session.commit()
    except IntegrityError:  # the same name or URI, added meanwhile
        db.session.rollback()
        raise ValidationFailed({"name": f"A host is named {name}, or is at {uri}, already."}) from None
    runtime.get().refresh_hosts()
    return host


def _add_tls(user: Actor, name: str, uri: str, pki: Path) -> Host:
    """Keep a TLS host, once it answered with the certificates staged in ``pki``, which become its."""
    try:
        _connect(uri, None, pki)
        host = Host(name=name, uri=uri)
        db.session.add(host)
        db.session.flush()
        host_id = host.id
        ca = remote.ca_facts(pki)
        audit.record("host.add", actor=user, target=name, detail=f"{uri} CA {ca.fingerprint if ca else '?'}")
        remote.keep_tls(pki, current_app.instance_path, host_id)
        try:
            db.session.commit()
        except IntegrityError:  # the same name or URI, added meanwhile
            db.session.rollback()
            remote.forget(current_app.instance_path, host_id)
            raise ValidationFailed({"name": f"A host is named {name}, or is at {uri}, already."}) from None
    finally:
        shutil.rmtree(pki, ignore_errors=True)  # gone if kept
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
    if not enabled and (busy := _operations_on(host.id)):
        raise HostInUse(f"{busy} operation{'s' if busy != 1 else ''} on {host.name} are under way: let them end first.")
    if host.enabled != enabled:
        host.enabled = enabled
        audit.record("host.enable" if enabled else "host.disable", actor=user, target=host.name)
        db.session.commit()
        runtime.get().refresh_hosts()
        runtime.get().changes.bump()  # its VMs' rows say so at the next poll
    return host


def _operations_on(host_id: int) -> int:
    """How many operations under way act on the host: on its VMs, or moving a VM to it."""
    active = db.session.execute(
        select(Operation.kind, Operation.params, VM.host_id)
        .join(VM, VM.uuid == Operation.vm_uuid, isouter=True)
        .where(Operation.state.in_(Operation.ACTIVE))
    ).all()
    return sum(
        1 for kind, params, on in active if on == host_id or (kind == "migrate" and (params or {}).get("to") == host_id)
    )


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
