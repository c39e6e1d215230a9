"""Install media on the real libvirtd and QEMU (qemu tier): uploads streamed through libvirt,
a VM that boots an ISO the test builds itself, cloud images with their overlay and seed."""
import json
import os
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import libvirt
import pytest
from sqlalchemy import func, select

from helpers import uuid_of, wait_until
from limen import runtime
from limen.extensions import db
from limen.errors import StorageFailed
from limen.models import AuditEvent, Medium
from test_media import KEY, iso_bytes, seed_file, upload

pytestmark = pytest.mark.qemu
BOOT_MESSAGE = "LIMEN-TEST-ISO-BOOTED"


def bootable_iso(tmp_path) -> bytes:
    """An ISO that boots ISOLINUX, which shows a message of the test's own and waits at its
    prompt (Debian's xorriso and isolinux)."""
    root = tmp_path / "iso"
    (root / "isolinux").mkdir(parents=True)
    shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", root / "isolinux")
    shutil.copy("/usr/lib/syslinux/modules/bios/ldlinux.c32", root / "isolinux")
    (root / "isolinux" / "isolinux.cfg").write_text(f"SAY {BOOT_MESSAGE}\nPROMPT 1\nTIMEOUT 0\n")
    out = tmp_path / "boot.iso"
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-o", str(out), "-b", "isolinux/isolinux.bin",
                    "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                    str(root)], check=True, capture_output=True)
    return out.read_bytes()


def screen_text(dom) -> str:
    """The text on the VM's screen: the VGA text buffer at 0xB8000 (80x25, character and
    attribute bytes), what the console shows while the BIOS and ISOLINUX are in text mode."""
    cells = dom.memoryPeek(0xB8000, 80 * 25 * 2, libvirt.VIR_MEMORY_PHYSICAL)
    return cells[::2].decode("latin-1")


def media_volumes(host, app) -> list[str]:
    pool = host.storagePoolLookupByName(app.config["MEDIA_POOL"])
    pool.refresh(0)
    return sorted(pool.listVolumes())


def medium_id(app, name: str) -> int:
    with app.app_context():
        return db.session.scalar(select(Medium.id).where(Medium.name == name))


def test_an_uploaded_iso_boots_and_eject_finishes_the_install(qemu_admin, qemu_host, tmp_path):
    # Emulated (TCG): ISOLINUX needs real-mode emulation that some nested KVM hosts lack.
    app, admin = qemu_admin(DOMAIN_TYPE="qemu")
    data = bootable_iso(tmp_path)
    response = upload(admin, data, name="test-installer", os_kind="linux")  # q35, a virtio-scsi CD-ROM
    assert response.status_code == 201, response.text
    assert response.json["size_bytes"] == len(data)
    [volume] = media_volumes(qemu_host, app)
    path = qemu_host.storagePoolLookupByName(app.config["MEDIA_POOL"]).storageVolLookupByName(volume).path()
    assert open(path, "rb").read() == data  # every byte, through libvirt's stream
    assert "test-installer" in admin.client.get("/media/").text
    iso = medium_id(app, "test-installer")

    assert admin.create(name="from-iso", memory_mib="128", source=f"iso:{iso}").status_code == 201
    admin.wait_state("from-iso", "running", 60)
    dom = qemu_host.lookupByUUIDString(uuid_of(app, "from-iso"))
    text = wait_until(lambda: next((t for t in [screen_text(dom)] if BOOT_MESSAGE in t), None), 60,
                      "the ISO's boot message on the VM's screen")
    assert "Booting from DVD/CD" in text and "No bootable device" not in text

    assert admin.client.post(f"/media/{iso}/delete", data={"csrf_token": admin.csrf}).status_code == 409

    # The installer is done: eject, and boot from the disk. The running VM's drive is empty
    # at once; its next start boots the disk.
    vm_uuid = uuid_of(app, "from-iso")
    assert admin.client.post(f"/vms/{vm_uuid}/eject", data={"csrf_token": admin.csrf,
                                                            "boot_from_disk": "1"}).status_code == 302
    live = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk[@device='cdrom']/source")
    assert live is None or live.get("file") is None  # an open tray: a source with no file
    persistent = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    assert [b.get("dev") for b in persistent.findall("./os/boot")] == ["hd"]
    assert admin.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
    admin.wait_state("from-iso", "shutoff", 30)
    assert admin.htmx_post(f"/vms/{vm_uuid}/start").status_code == 202
    admin.wait_state("from-iso", "running", 60)
    wait_until(lambda: "No bootable device" in screen_text(dom) or "not a bootable disk" in screen_text(dom), 60,
               "the empty disk's boot failure on the screen")
    assert BOOT_MESSAGE not in screen_text(dom)

    # Nothing uses the ISO now: it can go.
    assert admin.client.post(f"/media/{iso}/delete", data={"csrf_token": admin.csrf}).status_code == 302
    assert media_volumes(qemu_host, app) == []


def test_an_iso_goes_into_a_running_vm_at_once(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    assert upload(admin, iso_bytes(), name="tools").status_code == 201
    assert admin.create(name="running-one", memory_mib="128").status_code == 201
    admin.wait_state("running-one", "running", 60)
    vm_uuid = uuid_of(app, "running-one")
    response = admin.client.post(f"/vms/{vm_uuid}/cdrom", data={"csrf_token": admin.csrf,
                                                                "medium": str(medium_id(app, "tools"))})
    assert response.status_code == 302
    dom = qemu_host.lookupByUUIDString(vm_uuid)
    for flags in (0, libvirt.VIR_DOMAIN_XML_INACTIVE):  # in the drive now, and after a restart
        source = ET.fromstring(dom.XMLDesc(flags)).find("./devices/disk[@device='cdrom']/source")
        assert source is not None and source.get("file").startswith(app.config["MEDIA_DIR"]), flags
    row = admin.client.get("/media/").text.split('data-medium="tools"')[1].split("</tr>")[0]
    assert "running-one" in row and "Delete" not in row  # in use, so not deletable


def test_a_cut_off_upload_leaves_nothing(qemu_app, qemu_host, live_server):
    """The client promises a megabyte, sends a valid ISO header and some more, and hangs up."""
    from helpers import Browserless, admin_password

    app = qemu_app()
    base = live_server(app)
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    cookie = admin.client.get_cookie("session").value
    host, port = urlsplit(base).hostname, urlsplit(base).port
    body = iso_bytes(300 * 1024)
    with socket.create_connection((host, port)) as sock:
        sock.sendall((f"POST /media/upload?kind=iso&name=cut-off&os_kind=linux HTTP/1.1\r\n"
                      f"Host: {host}:{port}\r\nCookie: session={cookie}\r\nX-CSRFToken: {admin.csrf}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {1024 * 1024}\r\n\r\n").encode())
        sock.sendall(body)
        wait_until(lambda: medium_id(app, "cut-off"), 10, "the upload to begin")  # its row, while it streams
    with app.app_context():
        def refused():
            db.session.rollback()
            return db.session.scalar(select(AuditEvent.detail).where(
                AuditEvent.action == "media.upload", AuditEvent.result == "UPLOAD_INCOMPLETE"))
        detail = wait_until(refused, 20, "the cut-off upload to be refused")
    assert f"of {1024 * 1024} bytes" in detail
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Medium)) == 0
    assert media_volumes(qemu_host, app) == []


def test_a_stalled_upload_is_given_up_and_leaves_nothing(qemu_app, qemu_host, live_server):
    """The client sends a valid ISO header, then nothing, and keeps the connection open."""
    from helpers import Browserless, admin_password

    app = qemu_app(UPLOAD_IDLE_TIMEOUT=1)
    base = live_server(app)
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    host, port = urlsplit(base).hostname, urlsplit(base).port
    with socket.create_connection((host, port)) as sock:
        sock.sendall((f"POST /media/upload?kind=iso&name=stalled&os_kind=linux HTTP/1.1\r\n"
                      f"Host: {host}:{port}\r\nCookie: session={admin.client.get_cookie('session').value}\r\n"
                      f"X-CSRFToken: {admin.csrf}\r\nAccept: application/json\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {1024 * 1024}\r\n\r\n").encode())
        sock.sendall(iso_bytes(200 * 1024))
        sock.settimeout(30)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)  # the server answers while the client still holds on
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"UPLOAD_INCOMPLETE" in answer and b"sent nothing for 1 s" in answer
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Medium)) == 0
    assert media_volumes(qemu_host, app) == []


def test_a_trickling_upload_is_given_up_and_leaves_nothing(qemu_app, qemu_host, live_server):
    """The client never pauses long enough to be idle, but sends far below the minimum rate."""
    import selectors
    from helpers import Browserless, admin_password

    app = qemu_app(UPLOAD_IDLE_TIMEOUT=1, UPLOAD_MIN_RATE=10 * 1024 * 1024)
    base = live_server(app)
    admin = Browserless(app.test_client())
    admin.login("admin", admin_password(app))
    host, port = urlsplit(base).hostname, urlsplit(base).port
    body = iso_bytes(4 * 1024 * 1024)
    with socket.create_connection((host, port)) as sock:
        sock.sendall((f"POST /media/upload?kind=iso&name=trickled&os_kind=linux HTTP/1.1\r\n"
                      f"Host: {host}:{port}\r\nCookie: session={admin.client.get_cookie('session').value}\r\n"
                      f"X-CSRFToken: {admin.csrf}\r\nAccept: application/json\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {len(body)}\r\n\r\n").encode())
        sent, answer = 0, b""
        # 200 KiB at once (the ISO's header: the upload begins), then 100 bytes every 50 ms:
        # never idle, and a read of 64 KiB would wait half a minute for its bytes.
        sock.sendall(body[:200 * 1024])
        sent = 200 * 1024
        answered = selectors.DefaultSelector()  # epoll: the suite has more than 1024 fds open
        answered.register(sock, selectors.EVENT_READ)
        while sent < len(body):
            sock.sendall(body[sent:sent + 100])
            sent += 100
            if answered.select(0.05):
                break
        answered.close()
        sock.settimeout(30)
        while not answer.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    assert sent < len(body), "LIMEN let the trickle run to its end"
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"UPLOAD_INCOMPLETE" in answer and b"The upload was too slow" in answer
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Medium)) == 0
    assert media_volumes(qemu_host, app) == []


def test_a_file_copied_into_the_media_directory_can_be_registered(qemu_admin, qemu_host, tmp_path):
    app, admin = qemu_admin()
    assert admin.client.get("/media/").status_code == 200  # the media pool exists from here
    (tmp_path / "copied.iso").write_bytes(iso_bytes())
    shutil.copy(tmp_path / "copied.iso", f"{app.config['MEDIA_DIR']}/copied.iso")
    page = admin.client.get("/media/").text
    assert 'data-file="copied.iso"' in page
    response = admin.client.post("/media/register", data={"csrf_token": admin.csrf, "file": "copied.iso",
                                                          "name": "copied by hand", "os_kind": "windows"})
    assert response.status_code == 302
    page = admin.client.get("/media/").text
    assert 'data-file="copied.iso"' not in page and 'data-medium="copied by hand"' in page
    with app.app_context():
        medium = db.session.scalar(select(Medium).where(Medium.name == "copied by hand"))
        assert (medium.kind, medium.os_kind, medium.volume) == ("iso", "windows", "copied.iso")


def test_a_symbolic_link_in_the_media_directory_is_neither_listed_nor_registered(qemu_admin, qemu_host, tmp_path):
    """A link could point anywhere (/etc/shadow): LIMEN lists no link, registers none, and has
    libvirt read nothing through one."""
    app, admin = qemu_admin()
    assert admin.client.get("/media/").status_code == 200  # the media pool exists from here
    (tmp_path / "secret.iso").write_bytes(iso_bytes())
    os.symlink(tmp_path / "secret.iso", f"{app.config['MEDIA_DIR']}/linked.iso")
    assert 'data-file="linked.iso"' not in admin.client.get("/media/").text
    response = admin.client.post("/media/register", data={"csrf_token": admin.csrf, "file": "linked.iso",
                                                          "name": "through a link", "os_kind": "linux"})
    assert response.status_code == 422
    assert "linked.iso is a symbolic link: LIMEN takes only files in the media directory itself" in response.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Medium)) == 0
    with pytest.raises(StorageFailed, match="symbolic link"), app.app_context():
        runtime.get(app).hypervisor.media.head("linked.iso", 64)


def test_the_command_line_uploads_a_file_and_registers_one(qemu_admin, qemu_host, tmp_path):
    """What make demo-image does with the guest image, on a small ISO; and a file copied into
    the media directory by hand, registered."""
    app, admin = qemu_admin()
    (tmp_path / "built.iso").write_bytes(iso_bytes())
    upload_ = ["media", "upload", str(tmp_path / "built.iso"), "--kind", "iso", "--name", "Debian 12 LIMEN demo (1a2b)"]
    result = app.test_cli_runner().invoke(args=upload_)
    assert result.exit_code == 0 and "uploaded iso Debian 12 LIMEN demo (1a2b)" in result.output, result.output
    assert 'data-medium="Debian 12 LIMEN demo (1a2b)"' in admin.client.get("/media/").text
    [volume] = media_volumes(qemu_host, app)
    assert open(f"{app.config['MEDIA_DIR']}/{volume}", "rb").read() == (tmp_path / "built.iso").read_bytes()
    again = app.test_cli_runner().invoke(args=upload_)
    assert again.exit_code != 0 and "The library has a medium named Debian 12 LIMEN demo (1a2b) already." in again.output
    result = app.test_cli_runner().invoke(args=[*upload_, "--exist-ok"])
    assert result.exit_code == 0 and "in the library already" in result.output
    wrong = app.test_cli_runner().invoke(args=["media", "upload", str(tmp_path / "built.iso"), "--kind", "image",
                                               "--name", "not an image"])
    assert wrong.exit_code != 0 and "not a" in wrong.output
    assert media_volumes(qemu_host, app) == [volume]  # the refused one left nothing

    shutil.copy(tmp_path / "built.iso", f"{app.config['MEDIA_DIR']}/copied.iso")
    result = app.test_cli_runner().invoke(args=["media", "register", "copied.iso", "--name", "copied"])
    assert result.exit_code == 0 and "registered iso copied" in result.output, result.output
    missing = app.test_cli_runner().invoke(args=["media", "register", "nothing.iso", "--name", "none"])
    assert missing.exit_code != 0 and "The media pool has no file nothing.iso." in missing.output
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Medium)) == 2
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.actor == "cli")).all()
        assert [(e.action, e.target, e.result) for e in events if e.result != "VALIDATION_FAILED"] == [
            ("media.upload", "Debian 12 LIMEN demo (1a2b)", "ok"), ("media.register", "copied", "ok")]


def test_a_vm_from_a_cloud_image_is_an_overlay_with_a_seed(qemu_admin, qemu_host, tmp_path):
    app, admin = qemu_admin()
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "1G"], check=True)
    response = upload(admin, base.read_bytes(), kind="image", name="tiny-cloud")
    assert response.status_code == 201, response.text
    image = medium_id(app, "tiny-cloud")
    media_pool = qemu_host.storagePoolLookupByName(app.config["MEDIA_POOL"])
    [base_volume] = media_volumes(qemu_host, app)
    base_path = media_pool.storageVolLookupByName(base_volume).path()

    assert admin.create(name="cloudy", memory_mib="128", disk_gib="3", source=f"image:{image}",
                        ci_user="alice", ci_ssh_key=KEY, ci_password="a-long-password").status_code == 201
    admin.wait_state("cloudy", "running", 60)
    vm_uuid = uuid_of(app, "cloudy")
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    disk = pool.storageVolLookupByName(f"{vm_uuid}.qcow2")
    disk_xml = ET.fromstring(disk.XMLDesc(0))
    assert disk_xml.findtext("./backingStore/path") == base_path
    assert disk_xml.find("./backingStore/format").get("type") == "qcow2"
    assert disk.info()[1] == 3 * 2 ** 30  # resized to what was asked
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", "-U", disk.path()],
                                     check=True, capture_output=True, text=True).stdout)
    assert info["backing-filename"] == base_path and info["virtual-size"] == 3 * 2 ** 30

    seed = pool.storageVolLookupByName(f"{vm_uuid}-seed.iso")
    dom = qemu_host.lookupByUUIDString(vm_uuid)
    drive = ET.fromstring(dom.XMLDesc(0)).find("./devices/disk[@device='cdrom']/source")
    assert drive.get("file") == seed.path()
    user_data = seed_file(open(seed.path(), "rb").read(), "user-data")
    assert user_data.startswith("#cloud-config\n")
    config = json.loads(user_data.split("\n", 1)[1])
    assert config["hostname"] == "cloudy"
    [account] = config["users"]
    assert account["name"] == "alice" and account["ssh_authorized_keys"] == [KEY]
    assert account["passwd"].startswith("$6$") and "a-long-password" not in user_data
    with app.app_context():  # the hash went into the seed; the database keeps no copy
        from limen.models import VM

        kept = db.session.scalar(select(VM.cloud_init).where(VM.uuid == vm_uuid))
        assert "password_hash" not in kept and kept["password"] is True and kept["user"] == "alice"
    assert "a password" in admin.client.get(f"/vms/{vm_uuid}").text
    meta = json.loads(seed_file(open(seed.path(), "rb").read(), "meta-data"))
    assert meta == {"instance-id": vm_uuid, "local-hostname": "cloudy"}

    # The base is in use by the overlay: it stays until the VM is deleted.
    refused = admin.client.post(f"/media/{image}/delete", data={"csrf_token": admin.csrf})
    assert refused.status_code == 409 and "cloudy" in refused.text
    assert admin.htmx_post(f"/vms/{vm_uuid}/delete").status_code == 202
    admin.wait_state("cloudy", None, 30)
    assert pool.listVolumes() == []  # disk and seed both gone
    assert admin.client.post(f"/media/{image}/delete", data={"csrf_token": admin.csrf}).status_code == 302
    assert media_volumes(qemu_host, app) == []


def test_an_image_smaller_disk_is_refused(qemu_admin, qemu_host, tmp_path):
    app, admin = qemu_admin()
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "5G"], check=True)
    assert upload(admin, base.read_bytes(), kind="image", name="five-gib").status_code == 201
    response = admin.create(name="too-small", disk_gib="2", source=f"image:{medium_id(app, 'five-gib')}",
                            ci_ssh_key=KEY)
    assert response.status_code == 422 and "is a 5 GiB disk; choose at least that" in response.text
    assert qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"]).listVolumes() == []


def test_uefi_firmware_when_ovmf_is_installed(qemu_admin, qemu_host):
    app, admin = qemu_admin(DOMAIN_TYPE="qemu")
    if not runtime.get(app).hypervisor.host.uefi_available():
        pytest.fail("OVMF is not installed; scripts/host-setup --test installs it")
    assert admin.create(name="uefi-vm", memory_mib="256", firmware="uefi").status_code == 201
    admin.wait_state("uefi-vm", "running", 90)
    dom = qemu_host.lookupByUUIDString(uuid_of(app, "uefi-vm"))
    loader = ET.fromstring(dom.XMLDesc(0)).findtext("./os/loader")
    assert "OVMF" in loader and "secboot" not in loader
    assert "UEFI (OVMF)" in admin.client.get(f"/vms/{uuid_of(app, 'uefi-vm')}").text


def test_scripts_upload_and_use_media_through_the_api(qemu_app, qemu_host):
    from helpers import admin_password

    app = qemu_app()
    client = app.test_client()
    token = client.post("/api/v1/auth/tokens", json={"username": "admin", "password": admin_password(app),
                                                     "name": "media"}).json["token"]
    auth = {"Authorization": f"Bearer {token}"}
    data = iso_bytes()
    response = client.post("/api/v1/media?kind=iso&name=scripted&os_kind=windows", data=data,
                           headers={**auth, "Content-Type": "application/octet-stream"})
    assert response.status_code == 201, response.json
    medium = response.json
    assert (medium["name"], medium["kind"], medium["os_kind"], medium["size_bytes"]) == \
        ("scripted", "iso", "windows", len(data))
    assert client.get("/api/v1/media", headers=auth).json == [medium]

    created = client.post("/api/v1/vms", headers=auth, json={
        "name": "scripted-vm", "vcpus": 1, "memory_mib": 128, "disk_gib": 1, "source": f"iso:{medium['id']}"})
    assert created.status_code == 202, created.json
    vm = created.json["vm"]
    # The Windows profile came with the medium.
    assert (vm["os_kind"], vm["disk_bus"], vm["nic_model"], vm["iso"], vm["boot_cdrom"]) == \
        ("windows", "sata", "e1000e", "scripted", True)
    wait_until(lambda: client.get(f"/api/v1/vms/{vm['uuid']}", headers=auth).json["state"] == "running", 60,
               "the VM to run")
    refused = client.delete(f"/api/v1/media/{medium['id']}", headers=auth)
    assert refused.status_code == 409 and refused.json["error"]["code"] == "MEDIUM_IN_USE"
    ejected = client.post(f"/api/v1/vms/{vm['uuid']}/eject", headers=auth, json={"boot_from_disk": True})
    assert ejected.status_code == 200 and ejected.json["iso"] is None and ejected.json["boot_cdrom"] is False
    assert client.delete(f"/api/v1/media/{medium['id']}", headers=auth).status_code == 204
    assert client.get("/api/v1/media", headers=auth).json == []


def test_an_upload_may_be_larger_than_any_other_request(qemu_admin, qemu_host):
    app, admin = qemu_admin()
    data = iso_bytes(3 * 2 ** 20)
    assert len(data) > app.config["MAX_CONTENT_LENGTH"]
    response = upload(admin, data, name="larger")
    assert response.status_code == 201, response.text
    assert response.json["size_bytes"] == len(data)
    assert media_volumes(qemu_host, app) != []
