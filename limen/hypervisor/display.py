"""A running domain's screen: a connected socket to its VNC server."""

import socket
import time

import libvirt

from ..errors import VNCUnreachable
from . import domain_xml
from .connection import Connection, is_error, translated


class Display:
    def __init__(self, connection: Connection):
        self.connection = connection

    @translated
    def open(self, uuid: str, timeout: float) -> socket.socket:
        """A connected socket to the running domain's VNC server.

        On a local connection libvirt hands over a socket of its own (openGraphicsFD), so no
        TCP port is involved; elsewhere LIMEN connects to the listen address and live port from
        the domain XML, retrying briefly while QEMU opens it."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        try:
            fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
            return socket.socket(fileno=fd)
        except libvirt.libvirtError as e:
            if not is_error(
                e,
                libvirt.VIR_ERR_NO_SUPPORT,
                libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
                libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
            ):  # remote: no fd passing
                raise VNCUnreachable(e.get_error_message()) from None
        target = domain_xml.vnc_address(dom.XMLDesc(0))
        if target is None:
            raise VNCUnreachable("the VM has no VNC display")
        deadline = time.monotonic() + timeout
        while True:
            seen = self.connection.events
            remaining = deadline - time.monotonic()
            try:
                sock = socket.create_connection(target, timeout=max(remaining, 0.1))
            except OSError as e:
                if remaining <= 0:
                    raise VNCUnreachable(f"cannot connect to {target[0]}:{target[1]}: {e.strerror or e}") from None
                # A lifecycle event may explain it; else try again soon.
                self.connection.wait_for_event(seen, min(0.1, remaining))
                continue
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return sock
