"""Domain XML built with xml.etree, and the run-time choice of domain type (fast tier)."""
import xml.etree.ElementTree as ET

from dataclasses import replace

from limen.hypervisor.domain_xml import (DomainSpec, Resources, boot_order, build, guest_choice, resources,
                                        with_boot, with_boot_order, with_resources)

SPEC = DomainSpec(name="web-1", uuid="5b7c1e9e-6c53-4b43-9d1e-3b4f1e0e1a11", vcpus=2,
                  memory_mib=1024, domain_type="kvm", arch="x86_64",
                  disk_path="/var/lib/limen/images/5b7c1e9e-6c53-4b43-9d1e-3b4f1e0e1a11.qcow2",
                  network="user")


def test_domain_xml_has_the_spec_and_vnc_only_on_loopback():
    root = ET.fromstring(build(SPEC))
    assert root.get("type") == "kvm"
    assert root.findtext("name") == "web-1" and root.findtext("uuid") == SPEC.uuid
    assert root.findtext("vcpu") == "2"
    assert (root.find("memory").text, root.find("memory").get("unit")) == ("1024", "MiB")
    graphics = root.find("devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("autoport") == "yes"
    assert [l.get("address") for l in graphics.findall("listen")] == ["127.0.0.1"]
    disk = root.find("devices/disk")
    assert disk.get("type") == "file" and disk.find("source").get("file") == SPEC.disk_path
    assert disk.find("driver").get("type") == "qcow2"
    assert root.find("devices/interface").get("type") == "user"
    assert root.find("devices/interface/mac") is None  # libvirt chooses a MAC per VM
    assert root.find("cpu") is None  # QEMU's default model unless configured


def test_vcpus_and_memory_are_read_and_written_with_their_maximums():
    assert resources(build(SPEC)) == Resources(vcpus=2, max_vcpus=2, memory_mib=1024, max_memory_mib=1024)
    pluggable = build(replace(SPEC, max_vcpus=8))  # room for more vCPUs while it runs
    assert (ET.fromstring(pluggable).find("vcpu").get("current"), ET.fromstring(pluggable).findtext("vcpu")) == \
        ("2", "8")
    ballooned = with_resources(pluggable, Resources(3, 8, 512, 768))
    assert resources(ballooned) == Resources(3, 8, 512, 768)
    assert resources(with_resources(ballooned, Resources(8, 8, 768, 768))) == Resources(8, 8, 768, 768)
    assert ET.fromstring(with_resources(ballooned, Resources(8, 8, 768, 768))).find("vcpu").get("current") is None
    # What libvirt writes back: KiB, and no unit at all.
    assert resources("<domain><vcpu current='1'>4</vcpu><memory unit='KiB'>2097152</memory>"
                     "<currentMemory>1048576</currentMemory></domain>") == Resources(1, 4, 1024, 2048)


def test_the_boot_order_is_read_and_set_per_drive():
    xml = build(replace(SPEC, cdrom_path="/isos/x.iso", boot_cdrom=True))  # <os><boot dev=cdrom/><boot dev=hd/>
    assert boot_order(xml) == ["sda", "vda"]
    ordered = with_boot_order(xml, ["vda"])
    assert ET.fromstring(ordered).findall("./os/boot") == [] and boot_order(ordered) == ["vda"]
    # "Boot from it" and "boot from disk" keep a per-drive order, with the CD-ROM first or out.
    assert boot_order(with_boot(ordered, True)) == ["sda", "vda"]
    assert boot_order(with_boot(with_boot(ordered, True), False)) == ["vda"]
    assert boot_order(with_boot(with_boot_order(xml, ["sda"]), False)) == ["vda"]  # something still boots
    try:
        with_boot_order(xml, ["vdz"])
    except ValueError as e:
        assert "no drive vdz" in str(e)
    else:
        raise AssertionError("an unknown drive was taken")


def test_a_nic_that_boots_keeps_booting_after_the_drives():
    dom = ET.fromstring(build(SPEC))
    for boot in dom.findall("./os/boot"):
        dom.find("os").remove(boot)
    ET.SubElement(dom.find("./devices/interface"), "boot", order="1")  # network boot first, as virt-install can
    ET.SubElement(dom.find("./devices/disk[@device='disk']"), "boot", order="2")
    ordered = ET.fromstring(with_boot_order(ET.tostring(dom, encoding="unicode"), ["vda"]))
    assert ordered.find("./devices/disk/boot").get("order") == "1"
    assert ordered.find("./devices/interface/boot").get("order") == "2"


def test_every_vm_has_a_serial_line_and_seabios_writes_on_it():
    root = ET.fromstring(build(SPEC))
    assert root.find("devices/serial[@type='pty']/target").get("port") == "0"
    assert root.find("os/bios").get("useserial") == "yes"
    uefi = ET.fromstring(build(DomainSpec(**{**SPEC.__dict__, "firmware": "uefi"})))
    assert uefi.find("devices/serial[@type='pty']") is not None
    assert uefi.find("os/bios") is None  # OVMF is not SeaBIOS


def test_cpu_mode_is_configurable():
    root = ET.fromstring(build(DomainSpec(**{**SPEC.__dict__, "cpu_mode": "host-passthrough"})))
    assert root.find("cpu").get("mode") == "host-passthrough"


def test_network_choices():
    none = ET.fromstring(build(DomainSpec(**{**SPEC.__dict__, "network": "none"})))
    assert none.find("devices/interface") is None
    bridged = ET.fromstring(build(DomainSpec(**{**SPEC.__dict__, "network": "lan"})))
    assert bridged.find("devices/interface").get("type") == "network"
    assert bridged.find("devices/interface/source").get("network") == "lan"


def test_values_never_become_markup():
    hostile = DomainSpec(**{**SPEC.__dict__, "name": "x</name><on_crash>preserve</on_crash><name>"})
    root = ET.fromstring(build(hostile))
    assert root.findtext("name") == hostile.name
    assert root.findtext("on_crash") == "destroy"


def _caps(host_arch: str, guests: dict[str, list[str]]) -> str:
    caps = ET.Element("capabilities")
    ET.SubElement(ET.SubElement(ET.SubElement(caps, "host"), "cpu"), "arch").text = host_arch
    for arch, types in guests.items():
        guest = ET.SubElement(caps, "guest")
        ET.SubElement(guest, "os_type").text = "hvm"
        a = ET.SubElement(guest, "arch", name=arch)
        for t in types:
            ET.SubElement(a, "domain", type=t)
    return ET.tostring(caps, encoding="unicode")


def test_kvm_when_offered_else_qemu_else_what_the_driver_has():
    assert guest_choice(_caps("x86_64", {"i686": ["qemu", "kvm"], "x86_64": ["qemu", "kvm"]})) == ("kvm", "x86_64")
    assert guest_choice(_caps("x86_64", {"x86_64": ["qemu"]})) == ("qemu", "x86_64")
    assert guest_choice(_caps("i686", {"i686": ["test"]})) == ("test", "i686")
