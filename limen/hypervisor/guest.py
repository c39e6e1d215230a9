"""What a running guest tells about itself: whether its agent is connected, its hostname and
OS, and its NICs with their addresses.

Addresses come from the first source that has any: the QEMU guest agent (where its channel
says connected), then the DHCP leases of libvirt's networks, then the host's ARP table. The
answer names the source, because each sees a different truth (a lease may be stale; ARP knows
only IPv4 neighbours that spoke lately).
"""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from .connection import Connection, is_error, translated
from .domain_xml import GUEST_AGENT

AGENT, LEASE, ARP = "agent", "lease", "arp"
_SOURCES = (
    (AGENT, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT),
    (LEASE, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE),
    (ARP, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP),
)
# What a source that cannot answer for this domain raises (no agent, no network, no support).
_UNANSWERED = (
    libvirt.VIR_ERR_AGENT_UNRESPONSIVE,
    libvirt.VIR_ERR_AGENT_UNSYNCED,
    libvirt.VIR_ERR_OPERATION_UNSUPPORTED,
    libvirt.VIR_ERR_OPERATION_INVALID,
    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
    libvirt.VIR_ERR_NO_SUPPORT,
    libvirt.VIR_ERR_INTERNAL_ERROR,
    libvirt.VIR_ERR_OPERATION_FAILED,
    libvirt.VIR_ERR_NO_NETWORK,
)
CONNECTED, DISCONNECTED, NO_CHANNEL = "connected", "disconnected", "none"


@dataclass(frozen=True)
class Nic:
    mac: str
    model: str
    network: str  # what it is attached to, as the create form names it: user, network:X, bridge:X
    addresses: tuple[str, ...] = ()  # "10.0.2.15/24", IPv4 first


@dataclass(frozen=True)
class GuestInfo:
    agent: str  # CONNECTED, DISCONNECTED, or NO_CHANNEL (the domain has no agent channel)
    nics: tuple[Nic, ...]
    source: str | None = None  # AGENT, LEASE or ARP: where the addresses came from
    hostname: str | None = None
    os: str | None = None  # "Debian GNU/Linux 12 (bookworm)"

    @property
    def address(self) -> str | None:
        """The address a person would reach it on: the first IPv4 one, else the first IPv6
        one that is not link-local; without its prefix."""
        found = [a.split("/")[0] for nic in self.nics for a in nic.addresses]
        return next((a for a in found if ":" not in a), None) or next(
            (a for a in found if not a.lower().startswith("fe80:")), None
        )


class Guests:
    def __init__(self, connection: Connection):
        self.connection = connection

    @translated
    def info(self, uuid: str) -> GuestInfo:
        """Ask a running domain about its guest; the agent only when its channel is connected,
        so a guest without one costs no timeout."""
        dom = self.connection.get().lookupByUUIDString(uuid)
        xml = dom.XMLDesc(0)
        agent = _agent_state(xml)
        nics = _nics(xml)
        for source, flag in _SOURCES:
            if source == AGENT and agent != CONNECTED:
                continue
            found = _addresses(dom, flag)
            if any(found.get(nic.mac) for nic in nics):
                nics = tuple(Nic(n.mac, n.model, n.network, found.get(n.mac, ())) for n in nics)
                break
        else:
            source = None
        hostname = os_name = None
        if agent == CONNECTED:
            hostname, os_name = _about(dom)
        return GuestInfo(agent, nics, source, hostname, os_name)


def _addresses(dom: libvirt.virDomain, flag: int) -> dict[str, tuple[str, ...]]:
    """MAC → its addresses ("addr/prefix", IPv4 first), from one source; {} when that source
    cannot answer."""
    try:
        answer = dom.interfaceAddresses(flag) or {}
    except libvirt.libvirtError as e:
        if is_error(e, *_UNANSWERED):
            return {}
        raise
    found: dict[str, tuple[str, ...]] = {}
    for iface in answer.values():
        mac = (iface.get("hwaddr") or "").lower()
        addrs = sorted(iface.get("addrs") or [], key=lambda a: a["type"] != libvirt.VIR_IP_ADDR_TYPE_IPV4)
        if mac:
            found[mac] = found.get(mac, ()) + tuple(f"{a['addr']}/{a['prefix']}" for a in addrs)
    return found


def _about(dom: libvirt.virDomain) -> tuple[str | None, str | None]:
    """The guest's hostname and OS name, as its agent reports them."""
    try:
        info = dom.guestInfo(libvirt.VIR_DOMAIN_GUEST_INFO_OS | libvirt.VIR_DOMAIN_GUEST_INFO_HOSTNAME)
    except libvirt.libvirtError as e:
        if is_error(e, *_UNANSWERED):
            return None, None
        raise
    os_name = info.get("os.pretty-name") or " ".join(filter(None, (info.get("os.name"), info.get("os.version"))))
    return info.get("hostname") or None, os_name or None


def _agent_state(xml: str) -> str:
    target = ET.fromstring(xml).find(f"./devices/channel/target[@name='{GUEST_AGENT}']")
    if target is None:
        return NO_CHANNEL
    return CONNECTED if target.get("state") == CONNECTED else DISCONNECTED


def _nics(xml: str) -> tuple[Nic, ...]:
    found = []
    for iface in ET.fromstring(xml).findall("./devices/interface"):
        kind = iface.get("type", "")
        source = iface.find("source")
        name = "" if source is None else source.get("network") or source.get("bridge") or ""
        mac, model = iface.find("mac"), iface.find("model")
        found.append(
            Nic(
                mac="" if mac is None else mac.get("address", "").lower(),
                model="" if model is None else model.get("type", ""),
                network=f"{kind}:{name}" if name else kind,
            )
        )
    return tuple(found)
