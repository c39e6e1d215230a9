"""Domain XML, built and read with xml.etree: a value never becomes markup by accident."""
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    domain_type: str  # kvm, qemu, or what the driver offers (test)
    arch: str
    disk_path: str  # the pool volume's path on the hypervisor's host
    network: str  # a libvirt network name, "user" or "none"
    cpu_mode: str = ""  # "", host-model or host-passthrough


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def build(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "memory", spec.memory_mib, unit="MiB")
    _sub(dom, "vcpu", spec.vcpus)
    os_ = _sub(dom, "os")
    _sub(os_, "type", "hvm", arch=spec.arch)
    _sub(os_, "boot", dev="hd")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.cpu_mode:
        _sub(dom, "cpu", mode=spec.cpu_mode)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    # A file disk, not type="volume": libvirt's AppArmor helper (Debian's default) does not
    # resolve pool volumes, and QEMU would be refused the file.
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev="vda", bus="virtio")
    if spec.network == "user":
        nic = _sub(devices, "interface", type="user")
        _sub(nic, "model", type="virtio")
    elif spec.network != "none":
        nic = _sub(devices, "interface", type="network")  # libvirt picks the MAC
        _sub(nic, "source", network=spec.network)
        _sub(nic, "model", type="virtio")
    # VNC only on the loopback address; a free port is chosen by libvirt when the VM starts.
    graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
    _sub(graphics, "listen", type="address", address="127.0.0.1")
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    _sub(devices, "input", type="tablet", bus="usb")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    return ET.tostring(dom, encoding="unicode")


def vnc_address(xml: str) -> tuple[str, int] | None:
    """(address, port) of a running domain's VNC server, from its live XML; None without one.
    A server listening on every address is reached on the loopback address."""
    graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
    if graphics is None or int(graphics.get("port", "-1")) <= 0:
        return None
    listen = graphics.find("listen[@type='address']")
    address = (listen.get("address") if listen is not None else None) or graphics.get("listen")
    if address in (None, "", "0.0.0.0", "::"):
        address = "127.0.0.1"
    return address, int(graphics.get("port"))


def guest_choice(capabilities_xml: str) -> tuple[str, str]:
    """(domain type, arch) for new VMs: the host's arch when offered, KVM when usable, else
    QEMU (TCG), else whatever the driver offers (the test driver's "test")."""
    caps = ET.fromstring(capabilities_xml)
    host_arch = caps.findtext("./host/cpu/arch")
    offers: dict[str, list[str]] = {}
    for guest in caps.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        arch = guest.find("arch")
        offers.setdefault(arch.get("name"), []).extend(d.get("type") for d in arch.findall("domain"))
    if not offers:
        raise ValueError("the hypervisor offers no hvm guests")
    arch = next((a for a in (host_arch, "x86_64") if a in offers), next(iter(offers)))
    types = offers[arch]
    domain_type = next((t for t in ("kvm", "qemu") if t in types), types[0])
    return domain_type, arch
