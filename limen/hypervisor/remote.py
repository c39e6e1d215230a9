"""A first look at a libvirt host before LIMEN keeps it: open its URI, read what it is, close.

An admin adds a host only once this answered: the address, the SSH server, LIMEN's key in
``authorized_keys`` and libvirtd all work, and the host's key is the one now pinned.
"""

import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import HostKeyMismatch, HostUnreachable
from .connection import ensure_event_loop
from .host import _version


@dataclass(frozen=True)
class HostFacts:
    hostname: str
    uuid: str  # libvirt's host UUID: the same machine under two names has one
    libvirt_version: str
    cpus: int
    memory_mib: int


def unreachable(message: str) -> HostUnreachable | HostKeyMismatch:
    """The error for libvirt's message about a host it could not open."""
    if "HOST KEY VERIFICATION FAILED" in message.upper():
        return HostKeyMismatch(f"{HostKeyMismatch.sentence} libvirt said: {message}")
    return HostUnreachable(f"{HostUnreachable.sentence} libvirt said: {message}")


def _facts(uri: str) -> HostFacts:
    conn = libvirt.open(uri)
    try:
        _model, memory_mib, cpus, *_ = conn.getInfo()
        uuid = ET.fromstring(conn.getCapabilities()).findtext("./host/uuid") or ""
        return HostFacts(conn.getHostname(), uuid, _version(conn.getLibVersion()), cpus, memory_mib)
    finally:
        conn.close()


def probe(uri: str, seconds: float) -> HostFacts:
    """What the host at ``uri`` is, asked within ``seconds`` (HOST_UNREACHABLE after them, or
    on any failure to open it; HOST_KEY_MISMATCH when its key is not the pinned one). The SSH
    transports need libvirt's event loop running."""
    ensure_event_loop()
    found: list[HostFacts] = []
    failed: list[str] = []

    def run() -> None:
        try:
            found.append(_facts(uri))
        except libvirt.libvirtError as e:
            failed.append(e.get_error_message() or str(e))

    thread = threading.Thread(target=run, name="limen-host-probe", daemon=True)
    thread.start()
    thread.join(seconds)
    if found:
        return found[0]
    raise unreachable(failed[0] if failed else f"no answer within {seconds:g} s")
