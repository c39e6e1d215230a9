"""The way to a VNC server on another host. QEMU listens on that host's 127.0.0.1 only, and
libvirt cannot hand a socket over its SSH transport (``openGraphicsFD`` needs a local UNIX
socket): LIMEN opens an SSH channel ("direct-tcpip") to the port instead, over one SSH
connection per host, kept open and made again when it drops (paramiko: no ``ssh`` command is
spawned). It signs in with LIMEN's key, and verifies the host against the key pinned for it,
as libvirt's own connection does (limen.remote)."""

import logging
import threading
from dataclasses import dataclass

import paramiko

log = logging.getLogger(__name__)
Channel = paramiko.Channel  # reads and writes as a socket does


@dataclass(frozen=True)
class SSHTarget:
    host: str
    port: int
    user: str
    key_file: str
    known_hosts: str


class Tunnel:
    def __init__(self, target: SSHTarget):
        self.target = target
        self._lock = threading.Lock()
        self._client: paramiko.SSHClient | None = None

    def _transport(self, timeout: float) -> paramiko.Transport:
        with self._lock:
            client = self._client
            transport = client.get_transport() if client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if client is not None:
                client.close()
            t = self.target
            client = paramiko.SSHClient()
            client.load_host_keys(t.known_hosts)  # the pinned key alone; any other is refused
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(
                t.host,
                t.port,
                t.user,
                key_filename=t.key_file,
                look_for_keys=False,
                allow_agent=False,
                timeout=timeout,
                banner_timeout=timeout,
                auth_timeout=timeout,
            )
            transport = client.get_transport()
            assert transport is not None, "a connected client has its transport"
            transport.set_keepalive(15)
            self._client = client
            log.info("SSH connection to %s:%d for consoles", t.host, t.port)
            return transport

    def open(self, address: tuple[str, int], timeout: float) -> paramiko.Channel:
        """A channel to ``address`` as the host sees it. OSError when it cannot be opened (the
        caller may try again while QEMU opens its port)."""
        try:
            channel = self._transport(timeout).open_channel("direct-tcpip", address, ("127.0.0.1", 0), timeout=timeout)
        except (paramiko.SSHException, EOFError) as e:
            raise OSError(f"through SSH to {self.target.host}: {e}") from None
        channel.settimeout(None)
        return channel

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
