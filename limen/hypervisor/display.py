"""A running domain's screen: a connected socket to its VNC server, and a picture of it now."""

import socket
import struct
import time
import zlib

import libvirt

from ..errors import HypervisorError, VMNotRunning, VNCUnreachable
from . import domain_xml
from .connection import Connection, is_error, translated
from .tunnel import Channel, Tunnel
from .vnc_tls import VNCTLS, TLSStream, is_loopback, negotiate


class Display:
    def __init__(self, connection: Connection, tunnel: Tunnel | None = None, tls: VNCTLS | None = None):
        self.connection = connection
        self.tunnel = tunnel  # an SSH host's: its VNC servers are reached through SSH
        self.tls = tls  # a TLS host's: its VNC servers speak TLS (limen.hypervisor.vnc_tls)

    def _connect(self, target: tuple[str, int], timeout: float) -> socket.socket | Channel | TLSStream:
        if self.tunnel is not None:
            return self.tunnel.open(target, timeout)
        sock = socket.create_connection(target, timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls is not None:
            try:
                stream = negotiate(sock, self.tls)  # within the connect's timeout
            except OSError as e:
                sock.close()
                raise VNCUnreachable(f"{target[0]}:{target[1]}: {e}") from None
            sock.settimeout(None)
            return stream
        sock.settimeout(None)
        return sock

    @translated
    def open(self, uuid: str, timeout: float) -> socket.socket | Channel | TLSStream:
        """A connected socket to the running domain's VNC server.

        On a local connection libvirt hands over a socket of its own (openGraphicsFD), so no
        TCP port is involved; elsewhere LIMEN connects to the listen address and live port from
        the domain XML (on an SSH host: through an SSH channel; on a TLS host: through QEMU's
        TLS), retrying briefly while QEMU opens it."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        if self.connection.is_local:  # elsewhere, asking would end libvirt's connection
            try:
                fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
                return socket.socket(fileno=fd)
            except libvirt.libvirtError as e:
                if not is_error(
                    e,
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                ):  # a driver with no fd passing (the test driver)
                    raise VNCUnreachable(e.get_error_message()) from None
        target = domain_xml.vnc_address(dom.XMLDesc(0), self.tls.host if self.tls else "127.0.0.1")
        if target is None:
            raise VNCUnreachable("the VM has no VNC display")
        if self.tls is not None and is_loopback(target[0]) and not is_loopback(self.tls.host):
            raise VNCUnreachable(
                f"its VNC server listens on {self.tls.host}'s loopback address only: set vnc_listen "
                "(and vnc_tls) in that host's qemu.conf"
            )
        deadline = time.monotonic() + timeout
        while True:
            seen = self.connection.events
            remaining = deadline - time.monotonic()
            try:
                return self._connect(target, max(remaining, 0.1))
            except OSError as e:
                if remaining <= 0:
                    raise VNCUnreachable(f"cannot connect to {target[0]}:{target[1]}: {e.strerror or e}") from None
                # A lifecycle event may explain it; else try again soon.
                self.connection.wait_for_event(seen, min(0.1, remaining))

    @translated
    def screenshot(self, uuid: str) -> bytes:
        """The running domain's screen now, as a PNG (QEMU answers with a PPM image, which is
        converted; a driver that answers with a PNG is passed through). VMNotRunning when it
        does not run."""
        conn = self.connection.get()
        dom = conn.lookupByUUIDString(uuid)
        if not dom.isActive():
            raise VMNotRunning("The VM is not running: it has no screen to show.")
        stream = conn.newStream(0)
        try:
            mime = dom.screenshot(stream, 0, 0)
            chunks = []
            while chunk := stream.recv(256 * 1024):
                chunks.append(chunk)
            stream.finish()
        except libvirt.libvirtError:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass
            raise
        image = b"".join(chunks)
        if mime == "image/png":
            return image
        try:
            return png_from_ppm(image)
        except ValueError as e:
            raise HypervisorError(f"the screenshot ({mime}) could not be read: {e}") from None


def png_from_ppm(ppm: bytes) -> bytes:
    """A binary PPM (P6, 8 bits a channel) as a PNG: rows unfiltered, deflated fast."""
    fields: list[int] = []
    at = 2
    if not ppm.startswith(b"P6"):
        raise ValueError("not a binary PPM image")
    while len(fields) < 3:  # width, height, maximum, separated by white space and # comments
        while ppm[at : at + 1].isspace():
            at += 1
        if ppm[at : at + 1] == b"#":
            at = ppm.find(b"\n", at) + 1 or len(ppm)
            continue
        end = at
        while ppm[end : end + 1].isdigit():
            end += 1
        if end == at:
            raise ValueError("a PPM header without its width, height and maximum")
        fields.append(int(ppm[at:end]))
        at = end
    width, height, maximum = fields
    if maximum != 255:
        raise ValueError(f"a PPM image of {maximum + 1} levels a channel")
    pixels = memoryview(ppm)[at + 1 :]
    row = width * 3
    if len(pixels) < row * height:
        raise ValueError(f"a PPM image of {width} x {height} with {len(pixels)} bytes of pixels")
    raw = b"".join(b"\x00" + pixels[y * row : (y + 1) * row] for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b"")
