"""Domain XML, built and read with xml.etree: a value never becomes markup by accident."""

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

USER, NONE = "user", "none"


@dataclass(frozen=True)
class DomainSpec:
    name: str
    uuid: str
    vcpus: int
    memory_mib: int
    domain_type: str  # kvm, qemu, or what the driver offers (test)
    arch: str
    disk_path: str  # the pool volume's path on the hypervisor's host
    network: str  # "user", "none", "network:NAME" or "bridge:NAME" (see parse)
    cpu_mode: str = ""  # "", host-model or host-passthrough
    # The OS profile (limen.profiles): machine type, buses and models, firmware.
    machine: str = ""  # "q35", "pc" or "" (the hypervisor's default)
    disk_bus: str = "virtio"  # virtio, sata or ide
    nic_model: str = "virtio"  # virtio, e1000e or e1000
    firmware: str = "bios"  # bios or uefi
    clock: str = "utc"  # utc, or localtime (Windows)
    # A CD-ROM drive (always, so that an ISO can be put in later), what is in it, and
    # whether the VM boots from it before its disk.
    cdrom_path: str | None = None
    boot_cdrom: bool = False
    cdrom_bus: str = "sata"  # scsi (virtio-scsi), sata or ide
    max_vcpus: int = 0  # up to which vCPUs can be plugged in while it runs (0: vcpus)
    vnc_listen: str | None = "127.0.0.1"  # None: where the host's qemu.conf says (vnc_listen)


@dataclass(frozen=True)
class Resources:
    """A domain's vCPUs and memory: what it has (or starts with), and up to which it can be
    given more while it runs (vCPUs plugged in, memory through the balloon)."""

    vcpus: int
    max_vcpus: int
    memory_mib: int
    max_memory_mib: int


def _sub(parent: ET.Element, tag: str, text: str | int | None = None, **attrs: object) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): str(v) for k, v in attrs.items()})
    if text is not None:
        el.text = str(text)
    return el


def _find(el: ET.Element, path: str) -> ET.Element:
    """The element at ``path``, which the XML must have: ValueError without it."""
    found = el.find(path)
    if found is None:
        raise ValueError(f"The XML has no {path} in its <{el.tag}> element")
    return found


def _attr(el: ET.Element, name: str) -> str:
    """The attribute ``name``, which the element must have: ValueError without it."""
    value = el.get(name)
    if value is None:
        raise ValueError(f"The XML's <{el.tag}> element has no {name} attribute")
    return value


def build(spec: DomainSpec) -> str:
    dom = ET.Element("domain", type=spec.domain_type)
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "memory", spec.memory_mib, unit="MiB")
    vcpu = _sub(dom, "vcpu", max(spec.vcpus, spec.max_vcpus))
    if spec.max_vcpus > spec.vcpus:
        vcpu.set("current", str(spec.vcpus))
    os_ = _sub(dom, "os")
    if spec.firmware == "uefi":
        # libvirt picks an OVMF build; one without Secure Boot, which needs enrolled keys.
        os_.set("firmware", "efi")
        firmware = _sub(os_, "firmware")
        _sub(firmware, "feature", enabled="no", name="secure-boot")
    os_type = _sub(os_, "type", "hvm", arch=spec.arch)
    if spec.machine:
        os_type.set("machine", spec.machine)
    _set_boot(os_, spec.boot_cdrom)
    if spec.firmware != "uefi":  # SeaBIOS says on the serial line too what it boots, or why not
        _sub(os_, "bios", useserial="yes")
    features = _sub(dom, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    if spec.cpu_mode:
        _sub(dom, "cpu", mode=spec.cpu_mode)
    _sub(dom, "clock", offset=spec.clock)
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    # A file disk, not type="volume": libvirt's AppArmor helper (Debian's default) does not
    # resolve pool volumes, and QEMU would be refused the file.
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(disk, "driver", name="qemu", type="qcow2")
    _sub(disk, "source", file=spec.disk_path)
    _sub(disk, "target", dev=_DISK_DEV[spec.disk_bus], bus=spec.disk_bus)
    if spec.cdrom_bus == "scsi":
        _sub(devices, "controller", type="scsi", index="0", model="virtio-scsi")
    devices.append(cdrom(spec.cdrom_path, cdrom_dev(spec.cdrom_bus, spec.disk_bus), spec.cdrom_bus))
    kind, name = parse_network(spec.network)
    if kind != NONE:
        nic = _sub(devices, "interface", type=kind)  # libvirt picks the MAC
        if kind != USER:
            _sub(nic, "source", **{kind: name})
        _sub(nic, "model", type=spec.nic_model)
    if "q35" in spec.machine:
        # PCI Express has no slot to plug a device into while the VM runs but an empty root port:
        # libvirt puts the devices above on some of these, and disks and NICs added later go on
        # the rest.
        _sub(devices, "controller", type="pci", index=0, model="pcie-root")
        for index in range(1, PCIE_ROOT_PORTS + 1):
            _sub(devices, "controller", type="pci", index=index, model="pcie-root-port")
    # VNC only on the loopback address (a TLS host's own qemu.conf says where its VNC servers,
    # speaking TLS, listen); a free port is chosen by libvirt when the VM starts.
    graphics = _sub(devices, "graphics", type="vnc", port="-1", autoport="yes")
    if spec.vnc_listen:
        _sub(graphics, "listen", type="address", address=spec.vnc_listen)
    else:
        _sub(graphics, "listen", type="address")
    video = _sub(devices, "video")
    _sub(video, "model", type="vga")
    _sub(devices, "input", type="tablet", bus="usb")
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "target", port="0")
    # The QEMU guest agent's channel: libvirt asks the agent for addresses and a clean
    # shutdown where the guest runs one (and the channel says whether it is connected).
    channel = _sub(devices, "channel", type="unix")
    _sub(channel, "target", type="virtio", name=GUEST_AGENT)
    # The balloon reports the guest's own memory use every few seconds, for the graphs.
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="5")
    return ET.tostring(dom, encoding="unicode")


GUEST_AGENT = "org.qemu.guest_agent.0"
PCIE_ROOT_PORTS = 16  # a q35 VM's: for its own devices, and those plugged in while it runs


def parse_network(choice: str) -> tuple[str, str]:
    """(kind, name) of a choice: "user", "none", "network:NAME", "bridge:NAME"; a bare name is
    a libvirt network (as LIMEN_NETWORK has always taken). ValueError for anything else."""
    if choice in (USER, NONE):
        return choice, ""
    kind, sep, name = choice.partition(":")
    if not sep:
        kind, name = "network", choice
    if kind not in ("network", "bridge") or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}", name or "-"):
        raise ValueError(f"not a network choice: {choice!r}")
    return kind, name


_DISK_DEV = {"virtio": "vda", "sata": "sda", "ide": "hda"}


def _cdrom_bus(machine: str) -> str:
    """SATA on q35 (it has no IDE: "q35" or libvirt's expanded "pc-q35-7.2"), IDE on the older
    PC machine."""
    return "sata" if "q35" in machine else "ide"


def cdrom_dev(bus: str, disk_bus: str) -> str:
    """The target dev of a new VM's CD-ROM drive on ``bus``, beside its disk on ``disk_bus``."""
    if bus in ("sata", "scsi"):
        return "sdb" if disk_bus == bus else "sda"
    return "hdc"


def cdrom(path: str | None, dev: str, bus: str) -> ET.Element:
    """A CD-ROM drive, with ``path`` in it or empty."""
    drive = ET.Element("disk", type="file", device="cdrom")
    _sub(drive, "driver", name="qemu", type="raw")
    if path:
        _sub(drive, "source", file=path)
    _sub(drive, "target", dev=dev, bus=bus)
    _sub(drive, "readonly")
    return drive


def _set_boot(os_: ET.Element, cdrom_first: bool) -> None:
    for boot in os_.findall("boot"):
        os_.remove(boot)
    if cdrom_first:
        _sub(os_, "boot", dev="cdrom")
    _sub(os_, "boot", dev="hd")


def find_cdrom(xml: str) -> tuple[str, str] | None:
    """(target dev, bus) of a domain's first CD-ROM drive; None when it has none."""
    drive = ET.fromstring(xml).find("./devices/disk[@device='cdrom']")
    if drive is None:
        return None
    target = _find(drive, "target")
    return _attr(target, "dev"), _attr(target, "bus")


def with_cdrom(xml: str, path: str | None) -> str:
    """The domain XML with ``path`` in its first CD-ROM drive, or the drive empty (None). A
    domain with no drive (VMs made before LIMEN gave every VM one) gets one: SATA on q35, IDE
    on the PC machine."""
    dom = ET.fromstring(xml)
    drive = dom.find("./devices/disk[@device='cdrom']")
    if drive is None:
        bus = _cdrom_bus(_find(dom, "./os/type").get("machine", ""))
        used = {t.get("dev") for t in dom.findall("./devices/disk/target")}
        names = [f"sd{c}" for c in "abcdef"] if bus == "sata" else ["hdc", "hdd", "hdb", "hda"]
        free = [n for n in names if n not in used]
        if not free:
            raise ValueError(f"No room for a CD-ROM drive: every {bus} drive name is taken")
        drive = cdrom(None, free[0], bus)
        devices = _find(dom, "devices")
        disks = devices.findall("disk")
        devices.insert(list(devices).index(disks[-1]) + 1 if disks else 0, drive)
    source = drive.find("source")
    if source is not None:
        drive.remove(source)
    if path:
        drive.set("type", "file")  # a drive another tool made may have been a block device
        drive.insert(1, ET.Element("source", file=path))
    return ET.tostring(dom, encoding="unicode")


def with_boot(xml: str, cdrom_first: bool) -> str:
    """The domain XML with its boot order set: the CD-ROM, then the disk; or the disk only. A
    domain that orders its devices one by one keeps its order, with the CD-ROM drive put first
    or taken out of it."""
    dom = ET.fromstring(xml)
    if dom.find("./devices/*/boot[@order]") is None:
        _set_boot(_find(dom, "os"), cdrom_first)
        return ET.tostring(dom, encoding="unicode")
    found = find_cdrom(xml)
    order = [dev for dev in boot_order(xml) if found is None or dev != found[0]]
    if cdrom_first and found is not None:
        order.insert(0, found[0])
    if not order:  # the CD-ROM drive was all it booted from: its first disk, then
        first = dom.find("./devices/disk[@device='disk']/target")
        order = [_attr(first, "dev")] if first is not None else []
    return with_boot_order(xml, order)


def _drives(dom: ET.Element) -> dict[str, ET.Element]:
    """The domain's disks and CD-ROM drives by their target dev."""
    return {
        _attr(_find(el, "target"), "dev"): el
        for el in dom.findall("./devices/disk")
        if el.get("device", "disk") in ("disk", "cdrom")
    }


def drives(xml: str) -> dict[str, str]:
    """dev -> "disk" or "cdrom": the drives a domain can boot from."""
    return {dev: el.get("device", "disk") for dev, el in _drives(ET.fromstring(xml)).items()}


def boot_order(xml: str) -> list[str]:
    """The drives (target devs) the domain boots from, in order: its per-device <boot order>,
    or its <os><boot dev> read as its first CD-ROM drive and its first disk."""
    dom = ET.fromstring(xml)
    drives = _drives(dom)
    ordered = sorted(
        (int(_attr(boot, "order")), dev) for dev, el in drives.items() if (boot := el.find("boot")) is not None
    )
    if ordered:
        return [dev for _, dev in ordered]
    firsts: dict[str, str] = {}
    for dev, el in drives.items():
        firsts.setdefault({"cdrom": "cdrom", "disk": "hd"}[el.get("device", "disk")], dev)
    return [firsts[b.get("dev", "")] for b in dom.findall("./os/boot") if b.get("dev") in firsts]


def with_boot_order(xml: str, devs: list[str]) -> str:
    """The domain XML booting from these drives (target devs), in this order, and from no other
    drive: per-device <boot order>, without <os><boot>. A NIC or host device that boots keeps
    doing so, after them. An unknown dev: ValueError."""
    dom = ET.fromstring(xml)
    drives = _drives(dom)
    unknown = [dev for dev in devs if dev not in drives]
    if unknown:
        raise ValueError(f"The VM has no drive {unknown[0]}")
    os_ = _find(dom, "os")
    for boot in os_.findall("boot"):
        os_.remove(boot)
    drive_els = set(drives.values())
    others = []  # a NIC or a host device that boots too: after the drives, in its own order
    for el in _find(dom, "devices"):
        for boot in el.findall("boot"):
            if el not in drive_els:
                others.append((int(boot.get("order", "0") or 0), el))
            el.remove(boot)
    for n, el in enumerate([drives[dev] for dev in devs] + [el for _, el in sorted(others, key=lambda o: o[0])], 1):
        el.append(ET.Element("boot", order=str(n)))
    return ET.tostring(dom, encoding="unicode")


def with_resources(xml: str, r: Resources) -> str:
    """The domain XML with these vCPUs and this memory (what it starts with, and the maximums)."""
    dom = ET.fromstring(xml)
    vcpu = _find(dom, "vcpu")
    vcpu.text = str(r.max_vcpus)
    if r.max_vcpus > r.vcpus:
        vcpu.set("current", str(r.vcpus))
    else:
        vcpu.attrib.pop("current", None)
    for tag, mib in (("memory", r.max_memory_mib), ("currentMemory", r.memory_mib)):
        el = dom.find(tag)
        if el is None:
            el = _sub(dom, tag)
        el.text, el.attrib = str(mib), {"unit": "MiB"}
    return ET.tostring(dom, encoding="unicode")


_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "KiB": 1, "k": 1, "MiB": 1024, "M": 1024, "GiB": 1024**2, "G": 1024**2}


def has_topology(xml: str) -> bool:
    """Whether the domain fixes its CPU topology (sockets, cores and threads, whose product is its vCPUs' maximum)."""
    return ET.fromstring(xml).find("./cpu/topology") is not None


def resources(xml: str) -> Resources:
    """A domain XML's vCPUs and memory."""
    dom = ET.fromstring(xml)

    def mib(el: ET.Element) -> int:
        return int(int(el.text or 0) * _KIB[el.get("unit", "KiB")]) // 1024

    vcpu, memory = _find(dom, "vcpu"), _find(dom, "memory")
    current = dom.find("currentMemory")
    most = int(vcpu.text or 1)
    return Resources(int(vcpu.get("current", most)), most, mib(current if current is not None else memory), mib(memory))


def disk_sources(xml: str) -> set[str]:
    """What a domain's disks and CD-ROMs use: each file's path, and "pool/volume" for disks
    given as a pool's volume."""
    found: set[str] = set()
    for src in ET.fromstring(xml).findall("./devices/disk/source"):
        if file := src.get("file"):
            found.add(file)
        if src.get("pool") and src.get("volume"):
            found.add(f"{src.get('pool')}/{src.get('volume')}")
    return found


def firmware_offered(domain_capabilities_xml: str) -> set[str]:
    """The firmware kinds libvirt can pick for a new domain ("efi" when OVMF is installed)."""
    caps = ET.fromstring(domain_capabilities_xml)
    return {v.text for v in caps.findall("./os/enum[@name='firmware']/value") if v.text is not None}


def with_vnc_listen(xml: str, listen: str | None) -> str:
    """The domain XML with its VNC server listening at ``listen`` (None: where the host's
    qemu.conf says): for a domain that moves to a host whose VNC servers listen otherwise."""
    root = ET.fromstring(xml)
    for graphics in root.findall("./devices/graphics[@type='vnc']"):
        graphics.attrib.pop("listen", None)
        for old in graphics.findall("listen"):
            graphics.remove(old)
        graphics.insert(0, ET.Element("listen", {"type": "address", **({"address": listen} if listen else {})}))
    return ET.tostring(root, encoding="unicode")


def vnc_listen(xml: str) -> str | None:
    """The address a domain definition's VNC server listens at (None: where qemu.conf says)."""
    graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
    return _listen(graphics) if graphics is not None else None


def _listen(graphics: ET.Element) -> str | None:
    listen = graphics.find("listen[@type='address']")
    return (listen.get("address") if listen is not None else None) or graphics.get("listen")


def vnc_address(xml: str, everywhere: str = "127.0.0.1") -> tuple[str, int] | None:
    """(address, port) of a running domain's VNC server, from its live XML; None without one.
    A server listening on every address is reached at ``everywhere`` (its host's name)."""
    graphics = ET.fromstring(xml).find("./devices/graphics[@type='vnc']")
    if graphics is None:
        return None
    port = int(graphics.get("port", "-1"))
    if port <= 0:
        return None
    address = _listen(graphics)
    if address in (None, "", "0.0.0.0", "::"):
        address = everywhere
    return address, port


def guest_choice(capabilities_xml: str) -> tuple[str, str]:
    """(domain type, arch) for new VMs: the host's arch when offered, KVM when usable, else
    QEMU (TCG), else whatever the driver offers (the test driver's "test")."""
    caps = ET.fromstring(capabilities_xml)
    host_arch = caps.findtext("./host/cpu/arch")
    offers: dict[str, list[str]] = {}
    for guest in caps.findall("guest"):
        if guest.findtext("os_type") != "hvm":
            continue
        arch_el = _find(guest, "arch")
        offers.setdefault(_attr(arch_el, "name"), []).extend(_attr(d, "type") for d in arch_el.findall("domain"))
    if not offers:
        raise ValueError("the hypervisor offers no hvm guests")
    arch = next((a for a in (host_arch, "x86_64") if a in offers), next(iter(offers)))
    types = offers[arch]
    domain_type = next((t for t in ("kvm", "qemu") if t in types), types[0])
    return domain_type, arch
