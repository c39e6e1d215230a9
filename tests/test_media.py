"""Install media and OS profiles on libvirt's test driver (fast tier).

The test driver has storage pools but no volume upload, so uploads that get as far as libvirt
are in test_media_qemu.py; here: what is refused before any volume exists, VMs made from a
library ISO, the drive and boot order, profiles, and the cloud-init seed itself."""
import io
import json
import subprocess
import xml.etree.ElementTree as ET

import libvirt
import pycdlib
import pytest
from sqlalchemy import func, select

from helpers import add_user, signed_in, uuid_of
from limen import cloudinit
from limen import runtime
from limen.extensions import db
from limen.models import VM, AuditEvent, Medium

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 alice@laptop"


def seed_file(seed: bytes, name: str) -> str:
    """A file of a seed image by its Rock Ridge name (what the guest sees)."""
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(seed))
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
    iso.close()
    return out.getvalue().decode()


def iso_bytes(size: int = 64 * 1024) -> bytes:
    """A real (empty) ISO 9660 image, made with pycdlib, padded to ``size``."""
    iso = pycdlib.PyCdlib()
    iso.new(vol_ident="TEST")
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    data = out.getvalue()
    return data + b"\0" * max(0, size - len(data))


def qcow2_bytes(tmp_path, virtual: str = "1G", backing: str | None = None) -> bytes:
    path = tmp_path / "image.qcow2"
    command = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        command += ["-b", backing, "-F", "raw"]
    subprocess.run([*command, str(path), virtual], check=True)
    return path.read_bytes()


def upload(b, data: bytes, kind: str = "iso", name: str = "disc", os_kind: str = "linux", **headers):
    return b.client.post(f"/media/upload?kind={kind}&name={name}&os_kind={os_kind}", data=data,
                         headers={"X-CSRFToken": b.csrf, "Content-Type": "application/octet-stream",
                                  "Accept": "application/json", **headers})


def nothing_kept(app, libvirt_conn) -> bool:
    with app.app_context():
        rows = db.session.scalar(select(func.count()).select_from(Medium))
    pools = {p.name(): p for p in libvirt_conn.listAllStoragePools()}
    pool = pools.get(app.config["MEDIA_POOL"])
    return rows == 0 and (pool is None or pool.listVolumes() == [])


def library_iso(app, libvirt_conn, name: str = "installer", os_kind: str = "linux", kind: str = "iso") -> int:
    """A medium in the library as a registered file is (the test driver cannot upload): a
    volume in the media pool and its row."""
    runtime.get(app).hypervisor.media.files()  # defines the media pool
    pool = libvirt_conn.storagePoolLookupByName(app.config["MEDIA_POOL"])
    volume = f"{name}.{kind}"
    pool.createXML(f"<volume><name>{volume}</name><capacity unit='MiB'>1</capacity></volume>", 0)
    with app.app_context():
        medium = Medium(kind=kind, name=name, volume=volume, os_kind=os_kind, size_bytes=2 ** 20,
                        virtual_bytes=2 ** 30 if kind == "image" else None, state="ready")
        db.session.add(medium)
        db.session.commit()
        return medium.id


def domain_xml(libvirt_conn, app, name: str, inactive: bool = True) -> ET.Element:
    import libvirt

    dom = libvirt_conn.lookupByUUIDString(uuid_of(app, name))
    return ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0))


# -- uploads refused before anything is written -------------------------------------------
def test_a_file_that_is_not_an_iso_is_refused_by_its_header(app, admin, libvirt_conn, tmp_path):
    response = upload(admin, b"MZ" + b"\0" * 100_000)
    assert response.status_code == 422
    assert "neither an ISO image" in response.json["error"]["details"]["fields"]["file"]
    # A qcow2 image offered as an ISO is named for what it is.
    response = upload(admin, qcow2_bytes(tmp_path), kind="iso")
    assert response.status_code == 422
    assert response.json["error"]["details"]["fields"]["file"] == "This is a cloud image (qcow2), not a ISO image."
    assert nothing_kept(app, libvirt_conn)
    with app.app_context():
        assert db.session.scalar(select(AuditEvent.result).where(AuditEvent.action == "media.upload")) == "VALIDATION_FAILED"


def test_a_qcow2_image_that_would_read_host_files_is_refused(app, admin, libvirt_conn, tmp_path):
    """A backing file inside an uploaded image would make QEMU read any file of the host."""
    response = upload(admin, qcow2_bytes(tmp_path, backing="/etc/shadow"), kind="image")
    assert response.status_code == 422
    assert "backing file of its own" in response.json["error"]["details"]["fields"]["file"]
    assert nothing_kept(app, libvirt_conn)


def test_a_qcow2_image_with_an_external_data_file_is_refused(app, admin, libvirt_conn, tmp_path):
    path = tmp_path / "split.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}",
                    str(path), "16M"], check=True)
    response = upload(admin, path.read_bytes(), kind="image")
    assert response.status_code == 422
    assert "external file" in response.json["error"]["details"]["fields"]["file"]
    assert nothing_kept(app, libvirt_conn)


def test_an_upload_larger_than_the_pool_is_refused_before_it_is_read(app, admin, libvirt_conn):
    free = runtime.get(app).hypervisor.media.free_bytes()
    response = admin.client.post("/media/upload?kind=iso&name=huge&os_kind=linux", data=iso_bytes(),
                                 headers={"X-CSRFToken": admin.csrf, "Accept": "application/json"},
                                 environ_overrides={"CONTENT_LENGTH": str(free + 1)})
    assert response.status_code == 413
    assert response.json["error"]["code"] == "MEDIUM_TOO_LARGE"
    assert "GiB free" in response.json["error"]["message"]
    assert nothing_kept(app, libvirt_conn)


def test_an_upload_needs_a_name_an_os_and_a_size(app, admin, libvirt_conn):
    response = upload(admin, iso_bytes(), name="", os_kind="beos")
    assert response.status_code == 422
    assert set(response.json["error"]["details"]["fields"]) == {"name", "os_kind"}
    response = admin.client.post("/media/upload?kind=iso&name=x&os_kind=linux",
                                 headers={"X-CSRFToken": admin.csrf, "Accept": "application/json"})
    assert response.status_code == 411
    assert nothing_kept(app, libvirt_conn)


def test_only_admins_manage_media_and_everyone_sees_the_library(app, admin, libvirt_conn):
    medium_id = library_iso(app, libvirt_conn, "debian-12")
    add_user(app, "alice", "alice-password-1")
    alice = signed_in(app, "alice", "alice-password-1")
    assert upload(alice, iso_bytes()).status_code == 403
    page = alice.client.get("/media/")
    assert page.status_code == 200 and "debian-12" in page.text and "Upload" not in page.text
    # In use by an admin's VM: alice learns that, not the VM's name.
    assert admin.create(name="admins-secret", source=f"iso:{medium_id}").status_code == 201
    row = alice.client.get("/media/").text.split('data-medium="debian-12"')[1].split("</tr>")[0]
    assert "in use" in row and "admins-secret" not in row
    assert "admins-secret" in admin.client.get("/media/").text
    assert 'id="upload"' in admin.client.get("/media/").text


# -- VMs from the library --------------------------------------------------------------------
def test_a_medium_whose_file_was_deleted_behind_limens_back_says_so_and_is_not_offered(app, admin, libvirt_conn):
    iso = library_iso(app, libvirt_conn, "vanishing")
    library_iso(app, libvirt_conn, "staying")
    libvirt_conn.storagePoolLookupByName(app.config["MEDIA_POOL"]).storageVolLookupByName("vanishing.iso").delete(0)
    page = admin.client.get("/media/").text
    assert 'vanishing <span class="badge s-missing" title="Its file was deleted outside LIMEN">file missing</span>' in page
    assert "staying</td>" in page
    table = admin.client.get("/").text
    assert f'value="iso:{iso}"' not in table and ">staying</option>" in table  # not offered for a new VM
    deleted = admin.client.post(f"/media/{iso}/delete", data={"csrf_token": admin.csrf})
    assert deleted.status_code == 302 and "vanishing" not in admin.client.get("/media/").text


def test_a_vm_installed_from_an_iso_has_it_in_its_drive_and_boots_it_first(app, admin, libvirt_conn):
    iso = library_iso(app, libvirt_conn, "debian-12")
    assert admin.create(name="install-me", source=f"iso:{iso}").status_code == 201
    admin.wait_state("install-me", "running")
    xml = domain_xml(libvirt_conn, app, "install-me")
    path = libvirt_conn.storagePoolLookupByName(app.config["MEDIA_POOL"]).storageVolLookupByName("debian-12.iso").path()
    drive = xml.find("./devices/disk[@device='cdrom']")
    assert drive.find("source").get("file") == path and drive.find("readonly") is not None
    assert [b.get("dev") for b in xml.findall("./os/boot")] == ["cdrom", "hd"]
    assert xml.find("./os/type").get("machine") == "q35"
    assert xml.find("./devices/disk[@device='disk']/target").get("bus") == "virtio"

    vm_uuid = uuid_of(app, "install-me")
    detail = admin.client.get(f"/vms/{vm_uuid}").text
    assert "Linux: q35 machine, virtio disk, virtio network, BIOS" in detail
    assert '<td class="cdrom">debian-12</td>' in detail and "CD-ROM, then disk" in detail

    # In use: it cannot be deleted, and the library says by whom.
    refused = admin.client.post(f"/media/{iso}/delete", data={"csrf_token": admin.csrf})
    assert refused.status_code == 409 and "MEDIUM_IN_USE" in refused.text and "install-me" in refused.text
    assert "install-me" in admin.client.get("/media/").text

    # Finishing the install (stopped VM here; the test driver cannot change a running one's
    # drive): the drive is emptied and the VM boots from its disk.
    assert admin.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
    admin.wait_state("install-me", "shutoff")
    done = admin.client.post(f"/vms/{vm_uuid}/eject", data={"csrf_token": admin.csrf, "boot_from_disk": "1"})
    assert done.status_code == 302
    xml = domain_xml(libvirt_conn, app, "install-me")
    assert xml.find("./devices/disk[@device='cdrom']/source") is None
    assert [b.get("dev") for b in xml.findall("./os/boot")] == ["hd"]
    detail = admin.client.get(f"/vms/{vm_uuid}").text
    assert '<td class="cdrom">empty</td>' in detail and '<td class="boot">disk</td>' in detail

    assert admin.client.post(f"/media/{iso}/delete", data={"csrf_token": admin.csrf}).status_code == 302
    assert nothing_kept(app, libvirt_conn)


def test_an_iso_goes_into_a_stopped_vms_drive(app, admin, libvirt_conn):
    iso = library_iso(app, libvirt_conn, "rescue")
    vm_uuid = admin.create_stopped(app, "needs-rescue")
    assert domain_xml(libvirt_conn, app, "needs-rescue").find("./devices/disk[@device='cdrom']/source") is None
    response = admin.client.post(f"/vms/{vm_uuid}/cdrom", data={"csrf_token": admin.csrf, "medium": str(iso), "boot": "on"})
    assert response.status_code == 302
    xml = domain_xml(libvirt_conn, app, "needs-rescue")
    assert xml.find("./devices/disk[@device='cdrom']/source").get("file").endswith("/rescue.iso")
    assert [b.get("dev") for b in xml.findall("./os/boot")] == ["cdrom", "hd"]
    with app.app_context():
        assert db.session.scalar(select(AuditEvent.detail).where(AuditEvent.action == "vm.insert-iso")) == "rescue, boot from it"


def test_another_users_vm_drive_is_not_theirs_to_change(app, admin, libvirt_conn):
    iso = library_iso(app, libvirt_conn, "rescue")
    vm_uuid = admin.create_stopped(app, "admins-own")
    add_user(app, "mallory", "mallory-password-1")
    mallory = signed_in(app, "mallory", "mallory-password-1")
    before = ET.tostring(domain_xml(libvirt_conn, app, "admins-own"))
    assert mallory.client.post(f"/vms/{vm_uuid}/cdrom", data={"csrf_token": mallory.csrf, "medium": str(iso)}).status_code == 404
    assert ET.tostring(domain_xml(libvirt_conn, app, "admins-own")) == before


@pytest.mark.parametrize("os_kind, virtio, machine, disk_bus, nic, clock, cdrom_bus", [
    # Linux: the CD-ROM (a cloud image's seed) on virtio-scsi; cloud kernels carry no AHCI.
    ("linux", "", "q35", "virtio", "virtio", "utc", "scsi"),
    ("windows", "", "q35", "sata", "e1000e", "localtime", "sata"),
    ("windows", "on", "q35", "virtio", "virtio", "localtime", "sata"),
    ("other", "", "pc", "ide", "e1000", "utc", "ide"),
])
def test_os_profiles_choose_the_devices(make_app, node_xml, os_kind, virtio, machine, disk_bus, nic, clock, cdrom_bus):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", NETWORK="user")
    from helpers import Browserless, admin_password

    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    libvirt_conn = runtime.get(app).hypervisor.connection.get()
    assert admin.create(name="guest", os_kind=os_kind, virtio=virtio).status_code == 201
    admin.wait_state("guest", "running")
    xml = domain_xml(libvirt_conn, app, "guest")
    assert xml.find("./os/type").get("machine") == machine
    assert xml.find("./devices/disk[@device='disk']/target").get("bus") == disk_bus
    assert xml.find("./devices/interface/model").get("type") == nic
    assert xml.find("clock").get("offset") == clock
    assert xml.find("./devices/disk[@device='cdrom']/target").get("bus") == cdrom_bus
    scsi = xml.findall("./devices/controller[@type='scsi']")
    assert [c.get("model") for c in scsi] == (["virtio-scsi"] if cdrom_bus == "scsi" else [])
    # Every VM has the guest agent's channel, for addresses and a clean shutdown.
    assert xml.find("./devices/channel/target[@name='org.qemu.guest_agent.0']").get("type") == "virtio"
    with app.app_context():
        vm = db.session.scalar(select(VM).where(VM.name == "guest"))
        assert (vm.os_kind, vm.machine, vm.disk_bus, vm.nic_model) == (os_kind, machine, disk_bus, nic)


def test_create_refuses_what_the_host_or_library_cannot_give(app, admin, libvirt_conn):
    image = library_iso(app, libvirt_conn, "cloud", kind="image")  # a 1 GiB disk
    cases = [
        ({"source": "iso:999"}, "source", "Choose an ISO or image from the library"),
        ({"source": f"iso:{image}"}, "source", "Choose an ISO or image"),  # an image is no ISO
        ({"os_kind": "beos"}, "os_kind", "Choose one of: linux, windows, other."),
        ({"firmware": "uefi"}, "firmware", "UEFI firmware (OVMF) is not installed"),  # the test driver has none
        ({"source": f"image:{image}"}, "ci_ssh_key", "Give an SSH public key or a password"),
        ({"source": f"image:{image}", "ci_ssh_key": "not a key"}, "ci_ssh_key", "Paste one OpenSSH public key"),
        ({"source": f"image:{image}", "ci_ssh_key": KEY, "ci_user": "Root!"}, "ci_user", "lower-case"),
        ({"source": f"image:{image}", "ci_password": "short"}, "ci_password", "8 to 256"),
        # openssl passwd -stdin would hash each line apart, and cloud-init refuse the result.
        ({"source": f"image:{image}", "ci_password": "first-line\nsecond-line"}, "ci_password", "no control characters"),
        ({"source": f"image:{image}", "ci_ssh_key": KEY + " with\x1bescape"}, "ci_ssh_key", "Paste one OpenSSH public key"),
    ]
    for fields, field, message in cases:
        response = admin.create(name="refused", **fields)
        assert response.status_code == 422, fields
        assert message in response.text, (fields, response.text)
        assert f'id="err-{field}"' in response.text, fields
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(VM)) == 0
    assert libvirt_conn.listAllDomains() == []


# -- the cloud-init seed ---------------------------------------------------------------------
def test_the_seed_carries_the_account_and_no_password_in_clear():
    import yaml

    hashed = cloudinit.hash_password("correct horse battery")
    assert hashed.startswith("$6$") and "correct horse" not in hashed
    hostile = 'alice" - evil: yes 😀 ünïcode'  # what the key check lets through: any printable text
    seed = cloudinit.seed_iso(cloudinit.user_data("web-1", "alice", f"{KEY} {hostile}", hashed),
                              cloudinit.meta_data("1234", "web-1"))
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(seed))
    assert iso.pvd.volume_identifier.decode().strip() == "cidata"  # what NoCloud looks for
    iso.close()
    user_data = seed_file(seed, "user-data")
    assert user_data.startswith("#cloud-config\n")
    # cloud-init reads it with PyYAML (its C loader where built): the typed text stays one value.
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    config = yaml.load(user_data, Loader=loader)
    assert config == json.loads(user_data.split("\n", 1)[1])
    assert config["hostname"] == "web-1"
    [account] = config["users"]
    assert account["name"] == "alice" and account["passwd"] == hashed
    assert account["ssh_authorized_keys"] == [f"{KEY} {hostile}"]
    assert json.loads(seed_file(seed, "meta-data")) == {"instance-id": "1234", "local-hostname": "web-1"}


def test_a_vm_without_a_drive_gets_one_while_it_is_shut_off(app, admin, libvirt_conn):
    """VMs made before every VM had a CD-ROM drive (or by another tool, then adopted)."""
    iso = library_iso(app, libvirt_conn, "rescue")
    vm_uuid = admin.create_stopped(app, "older")
    dom = libvirt_conn.lookupByUUIDString(vm_uuid)
    import libvirt

    xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    devices = xml.find("devices")
    devices.remove(devices.find("disk[@device='cdrom']"))
    libvirt_conn.defineXML(ET.tostring(xml, encoding="unicode"))
    assert domain_xml(libvirt_conn, app, "older").find("./devices/disk[@device='cdrom']") is None

    assert admin.client.post(f"/vms/{vm_uuid}/cdrom", data={"csrf_token": admin.csrf, "medium": str(iso)}).status_code == 302
    drive = domain_xml(libvirt_conn, app, "older").find("./devices/disk[@device='cdrom']")
    assert drive.find("source").get("file").endswith("/rescue.iso")
    assert drive.find("target").get("dev") not in {t.get("dev") for t in
                                                  domain_xml(libvirt_conn, app, "older").findall("./devices/disk[@device='disk']/target")}


def test_a_vm_that_orders_its_boot_devices_itself_keeps_its_order_with_the_cdrom_first_or_out(app, admin,
                                                                                                libvirt_conn):
    """Domains from virt-install order boot devices one by one (<os><boot> cannot join them):
    "boot from it" puts the CD-ROM drive first in that order, "boot from disk" takes it out."""
    import libvirt

    iso = library_iso(app, libvirt_conn, "rescue")
    vm_uuid = admin.create_stopped(app, "ordered")
    dom = libvirt_conn.lookupByUUIDString(vm_uuid)
    xml = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    for boot in xml.findall("./os/boot"):
        xml.find("os").remove(boot)
    ET.SubElement(xml.find("./devices/disk[@device='disk']"), "boot", order="1")
    libvirt_conn.defineXML(ET.tostring(xml, encoding="unicode"))

    def order() -> dict[str, str]:
        after = domain_xml(libvirt_conn, app, "ordered")
        assert after.findall("./os/boot") == []
        return {d.get("device"): d.find("boot").get("order") for d in after.findall("./devices/disk")
                if d.find("boot") is not None}

    response = admin.client.post(f"/vms/{vm_uuid}/cdrom", data={"csrf_token": admin.csrf, "medium": str(iso),
                                                                "boot": "on"})
    assert response.status_code == 302
    assert order() == {"cdrom": "1", "disk": "2"}
    response = admin.client.post(f"/vms/{vm_uuid}/eject", data={"csrf_token": admin.csrf, "boot_from_disk": "1"})
    assert response.status_code == 302
    assert order() == {"disk": "1"}


def test_deleting_a_medium_while_vms_are_made_from_it_never_leaves_one_without_it(app, admin, libvirt_conn):
    """Creates and a delete, at once, again and again: either the medium stays (and every VM
    made from it has it) or it is gone (and no VM claims it). Never a 500."""
    import threading

    for round_ in range(6):
        iso = library_iso(app, libvirt_conn, f"racy-{round_}")
        answers = {}
        barrier = threading.Barrier(3)

        def create(i, b):
            barrier.wait()
            answers[f"create-{i}"] = b.create(name=f"racy-{round_}-{i}", source=f"iso:{iso}").status_code

        def delete(b):
            barrier.wait()
            answers["delete"] = b.client.post(f"/media/{iso}/delete", data={"csrf_token": b.csrf}).status_code

        from helpers import Browserless, admin_password

        def client():
            b = Browserless(app.test_client())
            b.login("admin", admin_password(app))
            return b

        threads = [threading.Thread(target=create, args=(i, client())) for i in range(2)]
        threads.append(threading.Thread(target=delete, args=(client(),)))
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert all(code < 500 for code in answers.values()), answers
        with app.app_context():
            medium = db.session.get(Medium, iso)
            users = db.session.scalars(select(VM.name).where(VM.iso_id == iso)).all()
        if answers["delete"] == 302:
            assert medium is None and users == [], answers
        else:
            assert answers["delete"] == 409 and medium is not None and medium.state == "ready", answers
            assert len(users) == sum(code == 201 for k, code in answers.items() if k != "delete") > 0


def test_a_form_sent_to_the_upload_keeps_the_body_limit(app, anon):
    """The page's upload takes the file as the body. A multipart form there would be parsed
    (into temporary files) by the CSRF check before the sign-in is checked: it is refused from
    its length instead, signed in or not."""
    form = {"file": (io.BytesIO(b"x" * (2 * 1024 * 1024)), "big.iso")}
    response = anon.client.post("/media/upload?kind=iso&name=f&os_kind=linux", data=form,
                                content_type="multipart/form-data")
    assert response.status_code == 413


def test_who_uses_a_medium_skips_a_domain_or_disk_gone_while_it_is_asked(app, monkeypatch):
    """Other VMs come and go while a medium's delete asks who uses it: one that vanished
    between libvirt's listing and its reading uses nothing, and is no error (it was a 404 that
    undid the delete)."""
    hv = runtime.get(app).hypervisor
    with app.app_context():
        hv.disks.create_volume("gone.qcow2", 1)
        hv.domains.define(uuid="6d3a1f0e-0000-4000-8000-000000000001", name="gone", vcpus=1, memory_mib=64,
                          volume="gone.qcow2")
    conn = hv.connection.get()
    dom = conn.lookupByName("gone")
    vol = conn.storagePoolLookupByName(app.config["STORAGE_POOL"]).storageVolLookupByName("gone.qcow2")
    dom.undefine()
    vol.delete(0)
    listed_domains, listed_volumes = conn.listAllDomains, libvirt.virStoragePool.listAllVolumes
    monkeypatch.setattr(conn, "listAllDomains", lambda flags=0: [dom, *listed_domains(flags)])
    monkeypatch.setattr(libvirt.virStoragePool, "listAllVolumes", lambda pool, flags=0: [vol, *listed_volumes(pool, flags)])
    assert hv.domains.using({"/nowhere.iso"}) == []
    assert hv.disks.backed_by("/nowhere.qcow2") == []


def test_listings_skip_what_goes_while_they_are_read(app, monkeypatch):
    """A volume, pool or network deleted between libvirt's listing and its reading is not
    listed, and is no error: the media library, the host overview and the network choices
    read on while others come and go (tests on one libvirtd, or admins on one host)."""
    hv = runtime.get(app).hypervisor
    conn = hv.connection.get()
    with app.app_context():
        hv.disks.create_volume("gone.qcow2", 1)
    vol = conn.storagePoolLookupByName(app.config["STORAGE_POOL"]).storageVolLookupByName("gone.qcow2")
    vol.delete(0)
    pool = conn.storagePoolDefineXML("<pool type='dir'><name>gone</name><target><path>/gone</path></target></pool>")
    pool.undefine()
    net = conn.networkDefineXML("<network><name>gone</name><bridge name='gone0'/></network>")
    net.undefine()
    volumes, pools, networks = libvirt.virStoragePool.listAllVolumes, conn.listAllStoragePools, conn.listAllNetworks
    monkeypatch.setattr(libvirt.virStoragePool, "listAllVolumes", lambda p, flags=0: [vol, *volumes(p, flags)])
    monkeypatch.setattr(conn, "listAllStoragePools", lambda flags=0: [pool, *pools(flags)])
    monkeypatch.setattr(conn, "listAllNetworks", lambda flags=0: [net, *networks(flags)])
    assert "gone.qcow2" not in hv.disks.files()
    assert "gone" not in [p.name for p in hv.host.overview().pools]
    assert app.config["STORAGE_POOL"] in [p.name for p in hv.host.overview().pools]
    assert "gone" not in [a.name for a in hv.networks.attachments()]
