"""What a VM's NIC can be attached to, and the host ports forwarded into user-mode guests.

A NIC is on one of: ``user`` (QEMU's user-mode network: no bridge or root needed, and no
inbound path but the forwards below), ``network:NAME`` (a libvirt network), ``bridge:NAME``
(a host bridge), or ``none``.

User-mode forwards: QEMU's slirp listens on a host port and passes each connection to a port
of the guest. libvirt 9.0 has no declarative forward for this network (it refuses passt's
``<portForward>``), so they are set through QEMU's monitor (HMP ``hostfwd_add`` and
``hostfwd_remove``), and are applied again whenever QEMU starts anew.
"""

import re
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt
import libvirt_qemu

from ..errors import InvalidState, PortInUse
from .connection import Connection, is_error, read_each, translated
from .domain_xml import USER


@dataclass(frozen=True)
class Attachment:
    """Something a NIC can be attached to: ``kind`` is user, network, bridge or none."""

    kind: str
    name: str = ""
    mode: str = ""  # a libvirt network's forward mode (nat, route, bridge, open …; "" isolated)
    active: bool = True

    @property
    def choice(self) -> str:
        """The value a form or the API names it by."""
        return f"{self.kind}:{self.name}" if self.name else self.kind


@dataclass(frozen=True)
class Forward:
    protocol: str  # tcp
    host_address: str
    host_port: int
    guest_port: int


# One row of HMP "info usernet": "  TCP[HOST_FORWARD]  15  127.0.0.1 22555  10.0.2.15  22 …"
_USERNET_ROW = re.compile(r"^\s*(TCP|UDP)\[HOST_FORWARD\]\s+\S+\s+(\S+)\s+(\d+)\s+\S+\s+(\d+)", re.M)


class Networks:
    def __init__(self, connection: Connection):
        self.connection = connection
        self._forwarding = threading.Lock()  # one change of a guest's forwards at a time

    @translated
    def attachments(self) -> list[Attachment]:
        """User mode, then libvirt's networks, then the host's bridges (as libvirt's interface
        API lists them; a host without it lists none)."""
        conn = self.connection.get()

        def network(net: libvirt.virNetwork) -> Attachment:
            forward = ET.fromstring(net.XMLDesc(0)).find("forward")
            mode = "" if forward is None else forward.get("mode", "nat")
            return Attachment("network", net.name(), mode, bool(net.isActive()))

        def bridge(iface: libvirt.virInterface) -> Attachment | None:
            if ET.fromstring(iface.XMLDesc(0)).get("type") != "bridge":
                return None
            return Attachment("bridge", iface.name(), "bridge", bool(iface.isActive()))

        networks = sorted(conn.listAllNetworks(), key=lambda n: n.name())
        found = [Attachment(USER), *read_each(networks, network, libvirt.VIR_ERR_NO_NETWORK)]
        try:
            interfaces = conn.listAllInterfaces()
        except libvirt.libvirtError as e:
            if not is_error(e, libvirt.VIR_ERR_NO_SUPPORT):
                raise
            interfaces = []
        return found + read_each(sorted(interfaces, key=lambda i: i.name()), bridge, libvirt.VIR_ERR_NO_INTERFACE)

    @translated
    def apply_forwards(self, uuid: str, wanted: list[Forward]) -> None:
        """Make a running domain's user-mode forwards exactly ``wanted``. A host port QEMU
        cannot listen on raises PortInUse, and the forwards added by this call are removed
        again. Drivers without a QEMU monitor (the test driver runs no guest) have nothing to
        forward to."""
        if not self.connection.is_qemu:
            return
        conn = self.connection.get()
        dom = conn.lookupByUUIDString(uuid)
        netdev = _user_netdev(dom.XMLDesc(0))
        if netdev is None:
            if wanted:
                raise InvalidState("This VM has no user-mode NIC to forward ports to.")
            return
        with self._forwarding:
            present = _parse_usernet(_hmp(dom, "info usernet"))
            for fwd in present - set(wanted):
                _hmp(dom, f"hostfwd_remove {netdev} {fwd.protocol}:{fwd.host_address}:{fwd.host_port}")
            added: list[Forward] = []
            for fwd in wanted:
                if fwd in present:
                    continue
                rule = f"{fwd.protocol}:{fwd.host_address}:{fwd.host_port}-:{fwd.guest_port}"
                answer = _hmp(dom, f"hostfwd_add {netdev} {rule}")
                if answer.strip():  # QEMU says nothing when it listens
                    for undo in added:
                        _hmp(dom, f"hostfwd_remove {netdev} {undo.protocol}:{undo.host_address}:{undo.host_port}")
                    raise PortInUse(
                        f"Host port {fwd.host_address}:{fwd.host_port} (to the guest's port {fwd.guest_port}) "
                        f"could not be opened; another program may use it. QEMU said: {answer.strip()}",
                        port=fwd.host_port,
                    )
                added.append(fwd)


def _hmp(dom: libvirt.virDomain, command: str) -> str:
    return libvirt_qemu.qemuMonitorCommand(dom, command, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)


def _user_netdev(live_xml: str) -> str | None:
    """QEMU's id of the first user-mode NIC's netdev: "host" and libvirt's alias ("hostnet0")."""
    alias = ET.fromstring(live_xml).find("./devices/interface[@type='user']/alias")
    return f"host{alias.get('name')}" if alias is not None and alias.get("name") else None


def _parse_usernet(text: str) -> set[Forward]:
    return {
        Forward(proto.lower(), address, int(host_port), int(guest_port))
        for proto, address, host_port, guest_port in _USERNET_ROW.findall(text)
    }
