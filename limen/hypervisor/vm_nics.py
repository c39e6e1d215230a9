"""A domain's NICs after it is made: listed, added (libvirt chooses the MAC), removed, their
link set up or down, their model changed. Each is named by its MAC."""

import xml.etree.ElementTree as ET
from dataclasses import dataclass

import libvirt

from ..errors import InvalidState, NicNotFound
from . import domain_xml
from .connection import Connection, translated

MODELS = ("virtio", "e1000e", "e1000")


@dataclass(frozen=True)
class Interface:
    mac: str
    network: str  # "user", "network:NAME" or "bridge:NAME"
    model: str
    link_up: bool


def _interface(el: ET.Element) -> Interface:
    kind = el.get("type", "")
    source = el.find("source")
    name = source.get(kind) if source is not None and kind in ("network", "bridge") else None
    mac, model, link = el.find("mac"), el.find("model"), el.find("link")
    return Interface(
        mac=mac.get("address", "") if mac is not None else "",
        network=f"{kind}:{name}" if name else kind,
        model=model.get("type", "") if model is not None else "",
        link_up=link is None or link.get("state") != "down",
    )


class VMNics:
    def __init__(self, connection: Connection):
        self.connection = connection

    def _dom(self, uuid: str) -> libvirt.virDomain:
        return self.connection.get().lookupByUUIDString(uuid)

    @translated
    def of(self, uuid: str) -> list[Interface]:
        """The domain's NICs as it runs (or starts, shut off)."""
        return [_interface(el) for el in ET.fromstring(self._dom(uuid).XMLDesc(0)).findall("./devices/interface")]

    @translated
    def add(self, uuid: str, network: str, model: str) -> Interface:
        """A new NIC on ``network`` (as at create: domain_xml.parse_network), plugged in at once
        while the domain runs, and from its next start."""
        dom = self._dom(uuid)
        before = {n.mac for n in self._defined(dom)}
        kind, name = domain_xml.parse_network(network)
        el = ET.Element("interface", type=kind)
        if kind != domain_xml.USER:
            ET.SubElement(el, "source", {kind: name})
        ET.SubElement(el, "model", type=model)
        active = bool(dom.isActive())
        flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if active else 0)
        try:
            dom.attachDeviceFlags(ET.tostring(el, encoding="unicode"), flags)
        except libvirt.libvirtError as e:
            if active:
                raise InvalidState(
                    f"QEMU could not plug a NIC in while the VM runs ({e.get_error_message()}); "
                    "shut it off and add the NIC then."
                ) from None
            raise
        return next(n for n in self._defined(dom) if n.mac not in before)

    @translated
    def remove(self, uuid: str, mac: str) -> Interface:
        """Take a shut-off domain's NIC away."""
        dom = self._dom(uuid)
        if dom.isActive():
            raise InvalidState("Shut the VM off to take a NIC away: the guest may be using it.")
        el = _element(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), mac)
        dom.detachDeviceFlags(ET.tostring(el, encoding="unicode"), libvirt.VIR_DOMAIN_AFFECT_CONFIG)
        return _interface(el)

    @translated
    def set_link(self, uuid: str, mac: str, up: bool) -> None:
        """The NIC's link up or down: at once while the domain runs (the guest sees its carrier
        go), and from its next start."""
        dom = self._dom(uuid)
        changes = [(libvirt.VIR_DOMAIN_XML_INACTIVE, libvirt.VIR_DOMAIN_AFFECT_CONFIG)]
        if dom.isActive():
            changes.append((0, libvirt.VIR_DOMAIN_AFFECT_LIVE))
        for xml_flags, affect in changes:
            el = _element(dom.XMLDesc(xml_flags), mac)
            link = el.find("link")
            if link is None:
                link = ET.SubElement(el, "link")
            link.set("state", "up" if up else "down")
            dom.updateDeviceFlags(ET.tostring(el, encoding="unicode"), affect)

    @translated
    def set_model(self, uuid: str, mac: str, model: str) -> None:
        """A shut-off domain's NIC as another model (the guest needs a driver for it)."""
        dom = self._dom(uuid)
        if dom.isActive():
            raise InvalidState("Shut the VM off to change a NIC's model.")
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE))
        el = _element_in(root, mac)
        found = el.find("model")
        if found is None:
            found = ET.SubElement(el, "model")
        found.set("type", model)
        address = el.find("address")
        if address is not None:  # another model may sit on another bus: libvirt places it again
            el.remove(address)
        self.connection.get().defineXML(ET.tostring(root, encoding="unicode"))

    def _defined(self, dom: libvirt.virDomain) -> list[Interface]:
        root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        return [_interface(el) for el in root.findall("./devices/interface")]


def _element(xml: str, mac: str) -> ET.Element:
    return _element_in(ET.fromstring(xml), mac)


def _element_in(root: ET.Element, mac: str) -> ET.Element:
    for el in root.findall("./devices/interface"):
        found = el.find("mac")
        if found is not None and found.get("address", "").lower() == mac.lower():
            return el
    raise NicNotFound(f"The VM has no NIC {mac}.")
