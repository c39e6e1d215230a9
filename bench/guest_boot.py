"""From the create request to the guest's SSH banner: LIMEN against bare libvirt calls.

One run, on the real libvirtd, with the Debian 12 guest image (scripts/build-guest-image)
under TCG, rounds interleaved (LIMEN first in even rounds, bare first in odd ones):

LIMEN  POST /api/v1/vms (the image, cloud-init with a user and a key, user-mode network), then
       connect to the VM's SSH forward until the guest's "SSH-2.0-" banner arrives.
bare   the same image as a qcow2 overlay, the same cloud-init seed and the domain XML LIMEN
       defined in that round (its name, UUID, disk, seed and MAC replaced), defined and started
       with libvirt calls, the forward added through QEMU's monitor, the same banner wait.

Goal: LIMEN's median / bare median <= 1.05. Also printed: when LIMEN first shows the guest's
address (GET /api/v1/vms/{uuid}) against when the guest agent first reports it (libvirt asked
directly), both polled every 0.2 s from the create request.

A benchmark reports and does not fail: exit status 0 whether the goal is met or missed, non-zero
only when it could not run.

    .venv/bin/python bench/guest_boot.py [--rounds 3] [--keep]
"""
import argparse
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid as uuidlib
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import libvirt_qemu

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from console import BIN, ROOT, BenchError, Limen, free_port, remove_pool, wait_until

from limen import cloudinit

BOOT_TIMEOUT = 400  # seconds: a TCG boot with cloud-init takes 50-90 here


def banner(port: int) -> bool:
    """Does the guest's sshd answer on the host port (its first line, "SSH-2.0-…")?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(3)
            return s.recv(8).startswith(b"SSH-2.0")
    except OSError:
        return False


def gone(conn: libvirt.virConnect, vm_uuid: str) -> bool:
    return vm_uuid not in {d.UUIDString() for d in conn.listAllDomains()}


def agent_address(conn: libvirt.virConnect, vm_uuid: str) -> bool:
    try:
        ifaces = conn.lookupByUUIDString(vm_uuid).interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT)
    except libvirt.libvirtError:
        return False
    return any(a["addr"] != "127.0.0.1" for i in ifaces.values() for a in (i.get("addrs") or []) if a["type"] == 0)


def first_time(predicate, start: float, timeout: float, what: str, stop: threading.Event) -> float:
    """Seconds from ``start`` until ``predicate`` first holds, polled every 0.2 s."""
    deadline = time.monotonic() + timeout
    while not stop.is_set():
        if predicate():
            return time.monotonic() - start
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.2)
    raise BenchError(f"stopped while waiting for {what}")


class Api:
    def __init__(self, limen: Limen):
        self.base = limen.base
        password = (limen.instance / "initial-admin-password").read_text().strip()
        self.token = self._call("POST", "/auth/tokens", {"username": "admin", "password": password,
                                                          "name": "bench"}, auth=False)["token"]

    def _call(self, method: str, path: str, body=None, auth: bool = True):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.base}/api/v1{path}", data=data, method=method, headers=headers)
        with urllib.request.urlopen(request, timeout=60) as r:
            return json.loads(r.read() or b"null")

    def __call__(self, method: str, path: str, body=None):
        return self._call(method, path, body)


def remove_made(limen: "Limen | None", api: "Api | None", conn: libvirt.virConnect, config: dict,
                vm_uuid: str | None) -> None:
    """What a guest benchmark made, removed however it ended: its VM (through LIMEN while it
    serves), LIMEN itself, the two pools of ``config``; ``conn`` is closed."""
    if vm_uuid is not None:
        remove_vm(api, conn, vm_uuid)
    if limen is not None:
        limen.stop()
    remove_pool(conn, config["STORAGE_POOL"])
    remove_pool(conn, config["MEDIA_POOL"])
    conn.close()


def remove_vm(api: "Api | None", conn: libvirt.virConnect, vm_uuid: str) -> None:
    """Delete the VM (and so its snapshots) through LIMEN; if LIMEN cannot, with libvirt calls
    (the pool's removal takes its disk)."""
    if api is not None:
        try:
            api("DELETE", f"/vms/{vm_uuid}")
            wait_until(lambda: gone(conn, vm_uuid), 120, "the VM's delete")
            return
        except Exception as e:  # LIMEN could not: libvirt directly
            print(f"cleanup: LIMEN did not delete the VM ({e}); removing its domain directly", file=sys.stderr)
    try:
        dom = conn.lookupByUUIDString(vm_uuid)
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
            print(f"cleanup: could not remove domain {vm_uuid}: {e.get_error_message()}", file=sys.stderr)


def limen_round(api: Api, conn, image_id: int, key: str, name: str) -> tuple[float, float, float, str]:
    """(seconds to the SSH banner, to LIMEN showing the address, to the agent reporting it, uuid)."""
    start = time.monotonic()
    vm = api("POST", "/vms", {"name": name, "vcpus": 1, "memory_mib": 768, "disk_gib": 3,
                              "source": f"image:{image_id}", "ci_user": "bench", "ci_ssh_key": key,
                              "network": "user"})["vm"]
    port = next(f["host_port"] for f in vm["forwards"] if f["guest_port"] == 22)
    stop, found = threading.Event(), {}

    def watch(label, predicate):
        try:
            found[label] = first_time(predicate, start, BOOT_TIMEOUT, label, stop)
        except BenchError as e:
            found[label] = e

    watchers = [threading.Thread(target=watch, args=("shown", lambda: api("GET", f"/vms/{vm['uuid']}")["address"])),
                threading.Thread(target=watch, args=("agent", lambda: agent_address(conn, vm["uuid"])))]
    for t in watchers:
        t.start()
    try:
        ssh = first_time(lambda: banner(port), start, BOOT_TIMEOUT, f"{name}'s SSH banner", stop)
        for t in watchers:
            t.join(BOOT_TIMEOUT)
        for value in found.values():
            if isinstance(value, Exception):
                raise value
    except BaseException:
        stop.set()
        api("DELETE", f"/vms/{vm['uuid']}")  # nothing of a failed round stays behind
        wait_until(lambda: gone(conn, vm["uuid"]), 60, "the failed round's VM to be deleted")
        raise
    return ssh, found["shown"], found["agent"], vm["uuid"]


def bare_round(conn, template_xml: str, image: Path, workdir: Path, key: str, name: str) -> float:
    """Seconds from defining the domain to the SSH banner, with libvirt calls only."""
    vm_uuid = str(uuidlib.uuid4())
    disk, seed = workdir / f"{vm_uuid}.qcow2", workdir / f"{vm_uuid}-seed.iso"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image), str(disk), "3G"],
                   check=True)
    seed.write_bytes(cloudinit.seed_iso(cloudinit.user_data(name, "bench", key, None),
                                        cloudinit.meta_data(vm_uuid, name)))
    dom_xml = ET.fromstring(template_xml)
    dom_xml.find("name").text, dom_xml.find("uuid").text = name, vm_uuid
    for d in dom_xml.findall("./devices/disk"):
        d.find("source").set("file", str(disk if d.get("device") == "disk" else seed))
    for iface in dom_xml.findall("./devices/interface"):
        for mac in iface.findall("mac"):
            iface.remove(mac)  # libvirt picks one, as for LIMEN's
    port = free_port()
    start = time.monotonic()
    dom = conn.defineXML(ET.tostring(dom_xml, encoding="unicode"))
    try:
        dom.create()
        libvirt_qemu.qemuMonitorCommand(dom, f"hostfwd_add hostnet0 tcp:127.0.0.1:{port}-:22",
                                        libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
        return first_time(lambda: banner(port), start, BOOT_TIMEOUT, f"{name}'s SSH banner", threading.Event())
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        dom.undefine()
        disk.unlink()
        seed.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    image = Path(subprocess.run([str(ROOT / "scripts" / "build-guest-image")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1])
    tag = secrets.token_hex(3)
    workdir = Path(tempfile.mkdtemp(prefix="limen-bench-guest-"))
    bare_dir = Path(f"/var/lib/limen/bench-bare-{tag}")
    bare_dir.mkdir(parents=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "key")], check=True)
    key = (workdir / "key.pub").read_text().strip()
    low = free_port()
    config = {"LIBVIRT_URI": "qemu:///system", "DOMAIN_TYPE": "qemu", "NETWORK": "user",
              "STORAGE_POOL": f"limen-bench-{tag}", "STORAGE_DIR": f"/var/lib/limen/bench-{tag}",
              "MEDIA_POOL": f"limen-bench-media-{tag}", "MEDIA_DIR": f"/var/lib/limen/bench-media-{tag}",
              "FORWARD_PORTS": f"{low}-{low + 50}", "START_TIMEOUT": 120}
    conn = libvirt.open("qemu:///system")
    limen = Limen(workdir, config)
    limen_s, bare_s, shown_s, agent_s = [], [], [], []
    last_template = None
    try:
        env = {**os.environ, "LIMEN_INSTANCE_PATH": str(limen.instance)}
        out = subprocess.run([str(BIN / "flask"), "--app", "app", "media", "upload", str(image), "--kind", "image",
                              "--name", "bench image"], cwd=ROOT, env=env, check=True,
                             capture_output=True, text=True).stdout
        image_id = int(out.rsplit("(id ", 1)[1].rstrip(")\n"))
        api = Api(limen)
        for n in range(args.rounds):
            order = ("limen", "bare") if n % 2 == 0 else ("bare", "limen")
            template = None
            for side in order:
                name = f"bench-{side}-{tag}-{n}"
                if side == "limen":
                    ssh, shown, agent, vm_uuid = limen_round(api, conn, image_id, key, name)
                    template = conn.lookupByUUIDString(vm_uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
                    limen_s.append(ssh)
                    shown_s.append(shown)
                    agent_s.append(agent)
                    api("DELETE", f"/vms/{vm_uuid}")
                    wait_until(lambda u=vm_uuid: gone(conn, u), 60, "the VM's delete")
                    print(f"round {n}: LIMEN {ssh:.1f} s to SSH; address shown at {shown:.1f} s, "
                          f"agent reported it at {agent:.1f} s", flush=True)
                else:
                    template = template or last_template  # bare first: LIMEN's XML of the round before
                    seconds = bare_round(conn, template, image, bare_dir, key, name)
                    bare_s.append(seconds)
                    print(f"round {n}: bare  {seconds:.1f} s to SSH", flush=True)
            last_template = template
    except BenchError as e:
        print(f"guest_boot: could not run: {e}", file=sys.stderr)
        return 1
    finally:
        limen.stop()
        remove_pool(conn, config["STORAGE_POOL"])
        remove_pool(conn, config["MEDIA_POOL"])
        conn.close()
        shutil.rmtree(bare_dir, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ratio = statistics.median(limen_s) / statistics.median(bare_s)
    lag = statistics.median(s - a for s, a in zip(shown_s, agent_s, strict=True))
    verdict = "met" if ratio <= 1.05 else "missed"
    print(f"boot to SSH banner: LIMEN median {statistics.median(limen_s):.1f} s, bare libvirt median "
          f"{statistics.median(bare_s):.1f} s; ratio {ratio:.3f} (goal <= 1.05: {verdict})")
    print(f"address: LIMEN shows it a median {lag:.1f} s after the guest agent first reports it "
          f"(shown at {statistics.median(shown_s):.1f} s, reported at {statistics.median(agent_s):.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
