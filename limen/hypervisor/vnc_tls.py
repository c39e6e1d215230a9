"""The way to a VNC server on a host LIMEN reaches over TLS: QEMU's own TLS (``vnc_tls = 1`` in
that host's qemu.conf, with ``vnc_tls_x509_verify = 1``), which RFB calls VeNCrypt with X.509.

LIMEN opens the server's port, chooses VeNCrypt's ``X509None``, and makes the TLS handshake with
the host's CA and the client certificate it was given for libvirt, checking the server's name as
libvirt does. The browser's noVNC knows no TLS inside RFB, so LIMEN then speaks to it as a
server with no authentication of its own (the console ticket already stood for that), and copies
the rest of the session through the TLS stream unchanged.

The TLS state lives in an ``ssl.SSLObject`` over memory buffers, under a lock: the console's two
pumps read and write at once, which one OpenSSL connection must not be asked to do. What TLS
has to send leaves outside that lock, in the order TLS made it: a pump that waits for the
server to take its bytes never keeps the other from reading.
"""

import ipaddress
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

VENCRYPT = 19  # RFB security type
X509_NONE = 260  # VeNCrypt subtype: TLS with X.509 certificates, no further authentication
# What the browser is told: RFB 3.8, one security type (None), and that it passed.
PREFACE = b"RFB 003.008\n" + b"\x01\x01" + b"\x00\x00\x00\x00"
CLIENT_PREFACE = 12 + 1  # its answer: its version, and its choice of None


@dataclass(frozen=True)
class VNCTLS:
    """A TLS host's name (as its URI gives it, and its certificate names it) and the files of
    LIMEN's certificates for it: the CA's, the client certificate and its key."""

    host: str
    ca: Path
    cert: Path
    key: Path

    def context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        return ctx


def is_loopback(address: str) -> bool:
    """Is ``address`` (a name or an IP address) this machine's own?"""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address == "localhost"
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


class VeNCryptRefused(OSError):
    """The VNC server would not, or could not, speak VeNCrypt X509None with LIMEN."""


def _exact(read: Callable[[int], bytes], size: int) -> bytes:
    """``size`` bytes of the handshake, from ``read`` (a socket's recv, or the TLS stream's)."""
    data = b""
    while len(data) < size:
        chunk = read(size - len(data))
        if not chunk:
            raise VeNCryptRefused("the VNC server closed the connection during its handshake")
        data += chunk
    return data


class TLSStream:
    """A VNC session through TLS that reads and writes like the socket the console bridge
    expects, starting with the browser's side of a handshake with no authentication."""

    def __init__(self, sock: socket.socket, tls: ssl.SSLObject, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO):
        self.sock, self._tls, self._in, self._out = sock, tls, incoming, outgoing
        self._lock = threading.Lock()  # the TLS state
        self._turns = threading.Condition()  # sends, in the order TLS made their bytes
        self._made = self._sent = 0
        self._preface = PREFACE
        self._swallow = CLIENT_PREFACE

    def _take(self) -> tuple[int, bytes]:
        """What TLS has to send, and its turn (called under the lock)."""
        self._made += 1
        return self._made, self._out.read()

    def _send(self, turn: int, data: bytes) -> None:
        """Send ``data`` once every earlier turn's bytes are out (called outside the lock)."""
        with self._turns:
            self._turns.wait_for(lambda: self._sent == turn - 1)
            try:
                if data:
                    self.sock.sendall(data)
            finally:
                self._sent = turn
                self._turns.notify_all()

    def _read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the session; b"" when the server ended it."""
        while True:
            with self._lock:
                try:
                    data = self._tls.read(size)
                except ssl.SSLWantReadError:
                    data = None
                except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                    return b""
                turn, pending = self._take()
            self._send(turn, pending)
            if data is not None:
                return data
            raw = self.sock.recv(65536)
            if not raw:
                return b""
            with self._lock:
                self._in.write(raw)

    def handshake(self) -> None:
        while True:
            with self._lock:
                try:
                    self._tls.do_handshake()
                    done = True
                except ssl.SSLWantReadError:
                    done = False
                turn, pending = self._take()
            self._send(turn, pending)
            if done:
                return
            raw = self.sock.recv(65536)
            if not raw:
                raise VeNCryptRefused("the VNC server closed the connection during the TLS handshake")
            with self._lock:
                self._in.write(raw)

    def recv(self, size: int, /) -> bytes:
        if self._preface:
            data, self._preface = self._preface, b""
            return data
        return self._read(size)

    def sendall(self, data: bytes, /) -> None:
        if self._swallow:  # the browser's version and choice: the server heard LIMEN's
            cut = min(self._swallow, len(data))
            data, self._swallow = data[cut:], self._swallow - cut
            if not data:
                return
        with self._lock:
            self._tls.write(data)
            turn, pending = self._take()
        self._send(turn, pending)

    def shutdown(self, how: int, /) -> None:
        self.sock.shutdown(how)

    def close(self) -> None:
        self.sock.close()


def negotiate(sock: socket.socket, tls: VNCTLS) -> TLSStream:
    """VeNCrypt X509None with the VNC server on ``sock``, up to its security result; the TLS
    stream of the session after it. VeNCryptRefused (an OSError) names what went wrong."""
    version = _exact(sock.recv, 12)
    if not version.startswith(b"RFB 003."):
        raise VeNCryptRefused(f"not a VNC server (it said {version!r})")
    sock.sendall(b"RFB 003.008\n")
    count = _exact(sock.recv, 1)[0]
    if count == 0:
        (size,) = struct.unpack(">I", _exact(sock.recv, 4))
        raise VeNCryptRefused(f"the VNC server refused: {_exact(sock.recv, size).decode(errors='replace')}")
    if VENCRYPT not in _exact(sock.recv, count):
        raise VeNCryptRefused(
            "the host's VNC servers do not speak TLS: set vnc_tls = 1 (and vnc_tls_x509_verify = 1) in its qemu.conf"
        )
    sock.sendall(bytes([VENCRYPT]))
    if _exact(sock.recv, 2) != b"\x00\x02":
        raise VeNCryptRefused("the VNC server speaks another VeNCrypt version than 0.2")
    sock.sendall(b"\x00\x02")
    if _exact(sock.recv, 1) != b"\x00":
        raise VeNCryptRefused("the VNC server refused VeNCrypt 0.2")
    count = _exact(sock.recv, 1)[0]
    subtypes = struct.unpack(f">{count}I", _exact(sock.recv, 4 * count))
    if X509_NONE not in subtypes:
        raise VeNCryptRefused(f"the VNC server offers no X.509 TLS without a password (it offers {list(subtypes)})")
    sock.sendall(struct.pack(">I", X509_NONE))
    if _exact(sock.recv, 1) != b"\x01":
        raise VeNCryptRefused("the VNC server refused X.509 TLS")
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls.context().wrap_bio(incoming, outgoing, server_hostname=tls.host)
    stream = TLSStream(sock, obj, incoming, outgoing)
    try:
        stream.handshake()
    except ssl.SSLError as e:
        raise VeNCryptRefused(f"TLS with the VNC server failed: {e.reason or e}") from None
    (result,) = struct.unpack(">I", _exact(stream._read, 4))
    if result != 0:
        raise VeNCryptRefused("the VNC server did not accept LIMEN's certificate")
    return stream
