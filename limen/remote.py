"""How LIMEN reaches a libvirt host other than its own: over SSH, with a key pair of its own
and the host's key pinned.

LIMEN makes one ed25519 key pair for all its hosts, at its first need, in the instance folder
(``ssh/id_ed25519``, 0600); an admin puts its public half in root's ``authorized_keys`` on each
host. A host's own key is seen at first contact (the connection test before it is saved), shown
to the admin and kept in its row. Every connection after that verifies against a known_hosts
file holding that key alone, written from the row: libvirt refuses a host that shows another.

LIMEN speaks libvirt's ``libssh2`` transport, in process (no ``ssh`` command is spawned): an
admin may write ``qemu+ssh://``, ``qemu+libssh://`` or ``qemu+libssh2://``, and each is reached
that way. (libvirt 9.0's ``libssh`` transport crashed the process when a call was made on a
connection while a migration ran on it; ``libssh2`` did not.) The query
string is LIMEN's own (the key, the known_hosts file), so a URI an admin gives has none.

A host may instead be reached over TLS (``qemu+tls://host/system``, libvirtd's port 16514): the
admin gives the CA that signed the host's certificate, and a client certificate and key that
host accepts. They are kept in the instance folder (``tls/<host id>/``, the names libvirt's
``pkipath`` reads; the key 0600), and libvirt checks the host's certificate against that CA and
its name. The same three reach that host's VNC servers (QEMU's ``vnc_tls``, limen.hypervisor.vnc_tls).
"""

import base64
import binascii
import hashlib
import ipaddress
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SSH_SCHEMES = ("qemu+ssh", "qemu+libssh", "qemu+libssh2")
TLS_SCHEME = "qemu+tls"
SCHEMES = (*SSH_SCHEMES, TLS_SCHEME)
PEM_LENGTH = 16384  # each of the CA, certificate and key an admin pastes
CA, CERT, KEY = "cacert.pem", "clientcert.pem", "clientkey.pem"  # the names libvirt's pkipath reads
STAGED_FOR = 3600.0  # seconds a connection test's certificates are kept for the add that follows
URI_LENGTH = 255  # Host.uri's column
_USER = re.compile(r"[a-z_][a-z0-9_.-]{0,31}")
_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _host_name_ok(name: str) -> bool:
    """An IP address, or a DNS name of letters, digits and hyphens."""
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return 0 < len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def uri_problem(uri: str) -> str | None:
    """What is wrong with a host's libvirt URI as an admin typed it, or None."""
    if not uri:
        return "Give the host's libvirt URI, such as qemu+ssh://root@host.example/system."
    if len(uri) > URI_LENGTH:
        return f"At most {URI_LENGTH} characters."
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        return "Not a URI LIBVIRT can use: check the port."
    if parts.scheme not in SCHEMES:
        return (
            "LIMEN reaches other hosts over SSH or TLS: the URI starts qemu+ssh:// (or qemu+libssh://) or qemu+tls://."
        )
    host = parts.hostname or ""
    if not _host_name_ok(host):
        return "Name the host, such as qemu+ssh://root@host.example/system."
    if parts.username is not None and not _USER.fullmatch(parts.username):
        return "The user name before @ is not one a host can have."
    if parts.password is not None:
        return "No password in the URI: LIMEN signs in with its own key."
    if parts.username is not None and parts.scheme == TLS_SCHEME:
        return "No user@ in a qemu+tls:// URI: the client certificate is who LIMEN is."
    if parts.path != "/system":
        return "LIMEN manages a host's system libvirt: the URI ends with /system."
    if parts.query or parts.fragment:
        return "No ?… part: LIMEN adds what it needs (its key and the host's, or its certificates)."
    if port is not None and not 0 < port < 65536:
        return "The port must be between 1 and 65535."
    return None


def _ssh_dir(instance_path: str) -> Path:
    path = Path(instance_path) / "ssh"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def key_file(instance_path: str) -> Path:
    """LIMEN's private key, made at the first need (0600, readable by LIMEN's user only)."""
    path = _ssh_dir(instance_path) / "id_ed25519"
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        fd = os.open(f"{path}.new", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(private)
        Path(f"{path}.pub").write_bytes(public + b" limen\n")
        os.replace(f"{path}.new", path)  # two first needs at once: each whole, one wins
    return path


def public_key(instance_path: str) -> str:
    """The line to put in a host's ``authorized_keys``."""
    private = key_file(instance_path)
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return f"{public.decode()} limen"


def _known_hosts_name(uri: str) -> str:
    """How a known_hosts line names the host of ``uri``: ``name``, or ``[name]:port``."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    return f"[{host}]:{parts.port}" if parts.port not in (None, 22) else host


def known_hosts_file(instance_path: str, host_id: int | str, uri: str, host_key: str | None) -> Path:
    """The known_hosts file of one host: its pinned key alone (empty when none is pinned yet)."""
    path = _ssh_dir(instance_path) / f"known_hosts.{host_id}"
    line = f"{_known_hosts_name(uri)} {host_key}\n" if host_key else ""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(line)
    return path


def forget(instance_path: str, host_id: int) -> None:
    """Remove a host's known_hosts file or certificates (the host is no longer LIMEN's)."""
    (_ssh_dir(instance_path) / f"known_hosts.{host_id}").unlink(missing_ok=True)
    shutil.rmtree(tls_dir(instance_path, host_id), ignore_errors=True)


def pinned_key(known_hosts: Path) -> str | None:
    """The key ("ssh-ed25519 AAAA…") a known_hosts file holds, as libvirt wrote it at first contact."""
    try:
        for line in known_hosts.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and not line.startswith("#"):
                return f"{fields[1]} {fields[2]}"
    except FileNotFoundError:
        pass
    return None


def fingerprint(host_key: str) -> str:
    """The key's SHA256 fingerprint, as ``ssh-keygen -l`` and ``ssh`` show it. ValueError for
    what is not an SSH public key ("type base64", whose blob starts with its type)."""
    kind, _, encoded = host_key.partition(" ")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    size = int.from_bytes(blob[:4], "big")
    if blob[4 : 4 + size] != kind.encode() or len(blob) <= 4 + size:
        raise ValueError("not an SSH public key of its type")
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def is_tls(uri: str) -> bool:
    return urlsplit(uri).scheme == TLS_SCHEME


def libvirt_uri(uri: str, instance_path: str, known_hosts: Path, *, first_contact: bool = False) -> str:
    """The URI libvirt opens for an SSH host: libssh2, LIMEN's key, and the host's known_hosts
    file. At ``first_contact`` an unknown host key is written into that file (and a known one
    that differs is still refused); otherwise only the pinned key is accepted."""
    parts = urlsplit(uri)
    verify = "auto" if first_contact else "normal"
    netloc = parts.netloc if parts.username else f"root@{parts.netloc}"
    query = (
        f"keyfile={quote(str(key_file(instance_path)))}&sshauth=privkey"
        f"&known_hosts={quote(str(known_hosts))}&known_hosts_verify={verify}"
    )
    return f"qemu+libssh2://{netloc}{parts.path}?{query}"


def host_name(uri: str) -> str:
    """The host a URI names (of a TLS host: what its certificates name)."""
    return urlsplit(uri).hostname or ""


def ssh_endpoint(uri: str) -> tuple[str, int, str]:
    """(host, port, user) of the SSH server a host's URI names: LIMEN's consoles reach the
    host's VNC servers through it (limen.hypervisor.tunnel)."""
    parts = urlsplit(uri)
    return host_name(uri), parts.port or 22, parts.username or "root"


def tls_uri(uri: str, pki: Path) -> str:
    """The URI libvirt opens for a TLS host: its certificates from ``pki`` (tls_dir)."""
    return f"{uri}?pkipath={quote(str(pki))}"


def _pem_problem(field: str, text: str) -> tuple[str, object | None]:
    what = {"ca_cert": "the CA's certificate", "client_cert": "the client certificate", "client_key": "the key"}[field]
    if not text:
        return f"Paste {what} (PEM: -----BEGIN …).", None
    if len(text) > PEM_LENGTH:
        return f"{what.capitalize()} is longer than {PEM_LENGTH} characters.", None
    try:
        if field == "client_key":
            return "", serialization.load_pem_private_key(text.encode(), password=None)
        return "", x509.load_pem_x509_certificate(text.encode())
    except (ValueError, TypeError):
        kind = "an unencrypted private key" if field == "client_key" else "a certificate"
        return f"That is not {kind} in PEM form.", None


def tls_problems(ca_cert: str, client_cert: str, client_key: str) -> dict[str, str]:
    """What is wrong with the certificates an admin gave for a TLS host, by field: each must be
    PEM, the key must be the client certificate's, and the CA must have signed that certificate."""
    errors, parsed = {}, {}
    for field, text in (("ca_cert", ca_cert), ("client_cert", client_cert), ("client_key", client_key)):
        problem, parsed[field] = _pem_problem(field, text)
        if problem:
            errors[field] = problem
    ca, cert, key = parsed["ca_cert"], parsed["client_cert"], parsed["client_key"]
    if isinstance(cert, x509.Certificate) and key is not None:
        mine = key.public_key().public_bytes(  # type: ignore[attr-defined]
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        theirs = cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if mine != theirs:
            errors["client_key"] = "This key is not the client certificate's."
    if isinstance(cert, x509.Certificate) and isinstance(ca, x509.Certificate):
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            errors["client_cert"] = "This CA did not sign the client certificate."
    return errors


def _tls_root(instance_path: str) -> Path:
    path = Path(instance_path) / "tls"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def tls_dir(instance_path: str, host_id: int | str) -> Path:
    """A TLS host's certificates: cacert.pem, clientcert.pem, clientkey.pem."""
    return _tls_root(instance_path) / str(host_id)


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:  # removed meanwhile
        return float("inf")


def sweep_staged(instance_path: str) -> None:
    """Remove the certificates of connection tests no add followed within STAGED_FOR."""
    for old in _tls_root(instance_path).glob("staged-*"):
        if _age(old) > STAGED_FOR:
            shutil.rmtree(old, ignore_errors=True)


def staged_tls(instance_path: str, token: str) -> Path | None:
    """The certificates a connection test staged as ``token``, or None when there are none
    (any more)."""
    if not re.fullmatch(r"[0-9a-f]{16}", token):
        return None
    path = _tls_root(instance_path) / f"staged-{token}"
    return path if _age(path) <= STAGED_FOR else None


def stage_tls(instance_path: str, ca_cert: str, client_cert: str, client_key: str) -> Path:
    """Write checked certificates where a connection test reads them (``keep_tls`` makes them
    a host's once it is added)."""
    sweep_staged(instance_path)
    path = _tls_root(instance_path) / f"staged-{secrets.token_hex(8)}"
    path.mkdir(mode=0o700)
    for name, text in ((CA, ca_cert), (CERT, client_cert), (KEY, client_key)):
        fd = os.open(path / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if name == KEY else 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text.strip() + "\n")
    return path


def keep_tls(staged: Path, instance_path: str, host_id: int) -> None:
    """The staged certificates become the host's."""
    target = tls_dir(instance_path, host_id)
    shutil.rmtree(target, ignore_errors=True)  # a host of this id removed before, whose files stayed
    os.replace(staged, target)


@dataclass(frozen=True)
class CAFacts:
    subject: str
    fingerprint: str  # SHA256 of the certificate, as ``openssl x509 -fingerprint -sha256`` shows it


def ca_facts(pki: Path) -> CAFacts | None:
    """What a TLS host's CA is, for the admin to check; None when its files are gone."""
    try:
        ca = x509.load_pem_x509_certificate((pki / CA).read_bytes())
    except (OSError, ValueError):
        return None
    digest = ca.fingerprint(hashes.SHA256()).hex().upper()
    return CAFacts(ca.subject.rfc4514_string(), ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)))
