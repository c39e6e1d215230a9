"""A memory snapshot of a running VM, and the revert to it: LIMEN's Operations against bare libvirt calls.

One run, on the real libvirtd, with the Debian 12 guest image (scripts/build-guest-image) under
TCG: one VM made through LIMEN's API (the image, cloud-init with a user and a key, user-mode
network), booted once: its SSH banner through the forward, then cloud-init finished (asked over
SSH), so that the guest is settled. Then a warm-up round that is not counted (the first snapshot
allocates the clusters in the qcow2 file that later ones reuse), then rounds, interleaved (LIMEN
first in even rounds, bare first in odd ones), on that one running VM:

LIMEN  POST /api/v1/vms/{uuid}/snapshots {"name": …} with a bearer token (202 and an Operation),
       timed from the request until GET /api/v1/operations/{id} says done, asked every 0.05 s;
       then POST …/snapshots/{name}/revert, timed the same way; then DELETE …/snapshots/{name},
       waited for (not counted), so that the disk does not grow from round to round.
bare   the same libvirt calls on the same domain, each timed around the call alone:
       virDomainSnapshotCreateXML (the same <domainsnapshot>: a name, an empty description; no
       flags), virDomainRevertToSnapshot (no flags), then virDomainSnapshotDelete (not counted).

The VM runs throughout: each snapshot holds its memory, and each revert resumes the guest where it
was; after each revert the guest is asked over SSH for its boot id, which must be the one it
booted with (not timed).

Goals: LIMEN's median / bare median <= 1.1 for the create, and <= 1.1 for the revert. LIMEN's
time ends when a client can see the end, at the first poll that says done; how much of it the
polling can account for is printed beside it (the same ratios counted only to the last poll that
said not done, after which the Operation ended), and so is where LIMEN's time goes: libvirt's call
inside the Operation (by the stamps of its steps), the rest of the Operation (created_at to
finished_at), the request and the polling; and the CPU LIMEN's processes used meanwhile (polling
costs CPU on a small machine, where QEMU and libvirtd need it too: --poll changes how often).
And how the VM's disk file grew.

A benchmark reports and does not fail: exit status 0 whether the goals are met or missed,
non-zero only when it could not run. Everything it made (the VM, its volumes, the pools, LIMEN's
instance folder) is removed, however it ends.

    .venv/bin/python bench/snapshot.py [--rounds 3] [--poll 0.05] [--keep]
"""
import argparse
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console import BIN, ROOT, BenchError, Limen, cpu_seconds, free_port, log_tail, wait_until
from guest_boot import Api as _Api
from guest_boot import banner, first_time, remove_made

BOOT_TIMEOUT = 400  # seconds from the create request to the SSH banner: a TCG boot takes 50-90 here
SETTLE_TIMEOUT = 300  # seconds more for cloud-init to finish
OP_TIMEOUT = 300  # seconds for one snapshot Operation (a memory snapshot under TCG takes a few)
GUEST_TIMEOUT = 120  # seconds for the guest to answer over SSH after a revert
POLL = 0.05  # seconds between LIMEN's Operation polls (--poll)
GOAL = 1.1
MIB = 1 << 20


class Api(_Api):
    """guest_boot's bearer-token client; an error answer is a BenchError that says what it was."""

    def __call__(self, method: str, path: str, body=None):
        try:
            return self._call(method, path, body)
        except urllib.error.HTTPError as e:
            answer = e.read()[:300].decode(errors="replace")
            raise BenchError(f"{method} /api/v1{path} answered {e.code}: {answer}") from None


class Timed(NamedTuple):
    seen: float  # seconds from the request to the first poll that said done
    bound: float  # seconds from the request to when the last poll that said not done was sent
    recorded: float  # LIMEN's own record: the Operation's created_at to its finished_at
    call: float  # of which its libvirt call, by the stamps of its first step and the next
    cpu: float  # CPU seconds LIMEN's processes (gunicorn's worker, nginx) used meanwhile


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp)


def limen_op(api: Api, server_cpu, poll: float, method: str, path: str, body=None) -> Timed:
    """Start an Operation with one request and poll it every ``poll`` seconds until it ends."""
    cpu = server_cpu()
    start = time.perf_counter()
    op = api(method, path, body)["operation"]
    bound = 0.0  # the request itself answered "not done" at the latest when it was answered
    deadline, next_poll = start + OP_TIMEOUT, start
    while op["state"] in ("pending", "running"):
        if time.perf_counter() > deadline:
            raise BenchError(f"LIMEN's {op['kind']} Operation {op['id']} did not end within {OP_TIMEOUT} s "
                             f"(step: {op['step']})")
        next_poll = max(next_poll + poll, time.perf_counter())  # a fixed schedule, not POLL after each answer
        time.sleep(max(0.0, next_poll - time.perf_counter()))
        asked = time.perf_counter() - start
        op = api("GET", f"/operations/{op['id']}")
        if op["state"] in ("pending", "running"):
            bound = asked
    seen = time.perf_counter() - start
    cpu = server_cpu() - cpu
    if op["state"] != "done":
        raise BenchError(f"LIMEN's {op['kind']} Operation failed: {op['error']}")
    recorded = (_when(op["finished_at"]) - _when(op["created_at"])).total_seconds()
    # The first step makes the call; the next (or the end) comes when it has returned. Steps are
    # stamped in UTC with no zone, finished_at with one.
    stamps = [_when(step["at"]) for step in op["steps"][:2]]
    if len(stamps) < 2:
        stamps.append(_when(op["finished_at"]).replace(tzinfo=None))
    return Timed(seen, bound, recorded, (stamps[1] - stamps[0]).total_seconds(), cpu)


def ssh(key: Path, port: int, command: str, timeout: float = 60) -> str | None:
    """``command``'s output in the guest, through the VM's SSH forward; None when it did not run."""
    try:
        done = subprocess.run(["ssh", "-i", str(key), "-p", str(port), "-o", "BatchMode=yes",
                               "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                               "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10", "bench@127.0.0.1", command],
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def ssh_until(key: Path, port: int, command: str, timeout: float, what: str) -> str:
    """``command``'s output, asked again a second after each failure until ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        out = ssh(key, port, command, max(5.0, deadline - time.monotonic()))
        if out is not None:
            return out
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(1)


def check_same_boot(key: Path, port: int, boot_id: str, what: str) -> None:
    """The guest answers over SSH after a revert, and from the boot it was snapshotted in."""
    got = ssh_until(key, port, "cat /proc/sys/kernel/random/boot_id", GUEST_TIMEOUT,
                    f"the guest to answer over SSH after {what}")
    if got != boot_id:
        raise BenchError(f"after {what} the guest runs another boot ({got}, not {boot_id}): the revert did not "
                         f"resume it")


def snapshot_xml(name: str) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "description").text = ""
    return ET.tostring(root, encoding="unicode")


def limen_round(api: Api, server_cpu, poll: float, vm_uuid: str, name: str) -> tuple[Timed, Timed, float]:
    """(create, revert, seconds to delete) through LIMEN's API."""
    create = limen_op(api, server_cpu, poll, "POST", f"/vms/{vm_uuid}/snapshots", {"name": name})
    revert = limen_op(api, server_cpu, poll, "POST", f"/vms/{vm_uuid}/snapshots/{name}/revert")
    delete = limen_op(api, server_cpu, poll, "DELETE", f"/vms/{vm_uuid}/snapshots/{name}")
    return create, revert, delete.seen


def bare_round(dom: libvirt.virDomain, server_cpu, name: str) -> tuple[float, float, float, float, float]:
    """(create, revert, delete) seconds, each around the one libvirt call, and the CPU seconds
    LIMEN's processes used during the create and during the revert."""
    xml = snapshot_xml(name)
    cpu = server_cpu()
    start = time.perf_counter()
    snap = dom.snapshotCreateXML(xml, 0)
    create = time.perf_counter() - start
    create_cpu = server_cpu() - cpu
    cpu = server_cpu()
    start = time.perf_counter()
    dom.revertToSnapshot(snap, 0)
    revert = time.perf_counter() - start
    revert_cpu = server_cpu() - cpu
    start = time.perf_counter()
    snap.delete(0)
    delete = time.perf_counter() - start
    return create, revert, delete, create_cpu, revert_cpu


def disk_mib(path: str) -> float:
    """What the VM's qcow2 file takes on the disk (its data and its internal snapshots')."""
    return os.stat(path).st_blocks * 512 / MIB


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):6.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def ensure_daemons() -> None:
    """libvirtd (and virtlogd, which QEMU's logs go through) running, and answering."""
    if subprocess.run(["pgrep", "libvirtd"], capture_output=True).returncode != 0:
        subprocess.run(["virtlogd", "-d"], check=True)
        subprocess.run(["libvirtd", "-d"], check=True)

    def answers() -> bool:
        try:
            libvirt.open("qemu:///system").close()
            return True
        except libvirt.libvirtError:
            return False

    wait_until(answers, 30, "libvirtd to answer on qemu:///system")


def upload_image(limen: Limen, image: Path) -> int:
    """The guest image in LIMEN's library (its CLI's upload, as an admin would): its id."""
    env = {**os.environ, "LIMEN_INSTANCE_PATH": str(limen.instance)}
    out = subprocess.run([str(BIN / "flask"), "--app", "app", "media", "upload", str(image), "--kind", "image",
                          "--name", "bench image"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout
    return int(out.rsplit("(id ", 1)[1].rstrip(")\n"))


def run(args, workdir: Path, image: Path) -> None:
    tag = secrets.token_hex(3)
    low = free_port()
    config = {"LIBVIRT_URI": "qemu:///system", "DOMAIN_TYPE": "qemu", "NETWORK": "user",
              "STORAGE_POOL": f"limen-bench-{tag}", "STORAGE_DIR": f"/var/lib/limen/bench-{tag}",
              "MEDIA_POOL": f"limen-bench-media-{tag}", "MEDIA_DIR": f"/var/lib/limen/bench-media-{tag}",
              "FORWARD_PORTS": f"{low}-{low + 50}", "START_TIMEOUT": 120}
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(workdir / "key")], check=True)
    key = workdir / "key"
    conn = libvirt.open("qemu:///system")
    limen = api = vm_uuid = None
    try:
        limen = Limen(workdir, config)
        image_id = upload_image(limen, image)
        api = Api(limen)

        # One guest, booted once and settled.
        start = time.monotonic()
        created = api("POST", "/vms", {"name": f"bench-snapshot-{tag}", "vcpus": 1, "memory_mib": 768,
                                       "disk_gib": 3, "source": f"image:{image_id}", "ci_user": "bench",
                                       "ci_ssh_key": (workdir / "key.pub").read_text().strip(), "network": "user"})
        vm_uuid = created["vm"]["uuid"]
        port = next(f["host_port"] for f in created["vm"]["forwards"] if f["guest_port"] == 22)
        first_time(lambda: banner(port), start, BOOT_TIMEOUT, "the guest's SSH banner", threading.Event())
        booted = time.monotonic() - start
        ssh_until(key, port, "cloud-init status --wait >/dev/null; echo ok", SETTLE_TIMEOUT,
                  "cloud-init to finish in the guest")
        settled = time.monotonic() - start
        boot_id = ssh_until(key, port, "cat /proc/sys/kernel/random/boot_id", 60, "the guest's boot id")
        made = wait_until(lambda: (op := api("GET", f"/operations/{created['operation']['id']}"))["state"]
                          not in ("pending", "running") and op, 60, "the VM's create Operation to end")
        if made["state"] != "done":
            raise BenchError(f"LIMEN's create Operation is {made['state']} ({made['error']})")
        dom = conn.lookupByUUIDString(vm_uuid)
        root = ET.fromstring(dom.XMLDesc(0))
        disk = next(d.find("source").get("file") for d in root.iterfind("./devices/disk") if d.get("device") == "disk")
        print(f"snapshot with memory of a running guest (1 vCPU, 768 MiB, {root.get('type')}) on {os.cpu_count()} "
              f"CPUs: SSH banner {booted:.0f} s after the create request, cloud-init finished at {settled:.0f} s; "
              f"its disk file {disk_mib(disk):.0f} MiB", flush=True)

        times: dict[str, dict[str, list]] = {side: {"create": [], "revert": []} for side in ("LIMEN", "bare")}
        bare_cpu: dict[str, list[float]] = {"create": [], "revert": []}
        sizes = [disk_mib(disk)]
        server = limen.pids()

        def server_cpu() -> float:
            return cpu_seconds(server)

        for n in range(-1, args.rounds):  # -1: the warm-up round, not counted
            label = "warm-up" if n < 0 else f"round {n}"
            order = ("LIMEN", "bare") if n % 2 == 0 or n < 0 else ("bare", "LIMEN")
            for side in order:
                name = f"{side.lower()}-{'warm-up' if n < 0 else n}"
                if side == "LIMEN":
                    create, revert, delete = limen_round(api, server_cpu, args.poll, vm_uuid, name)
                    check_same_boot(key, port, boot_id, f"LIMEN's revert to {name}")
                    print(f"{label}: LIMEN  create {create.seen:6.2f} s, revert {revert.seen:6.2f} s  (delete "
                          f"{delete:.2f} s; libvirt's calls inside its Operations {create.call:.2f} s and "
                          f"{revert.call:.2f} s)", flush=True)
                    if n >= 0:
                        times[side]["create"].append(create)
                        times[side]["revert"].append(revert)
                else:
                    create_s, revert_s, delete_s, create_cpu, revert_cpu = bare_round(dom, server_cpu, name)
                    check_same_boot(key, port, boot_id, f"the bare revert to {name}")
                    print(f"{label}: bare   create {create_s:6.2f} s, revert {revert_s:6.2f} s  (delete "
                          f"{delete_s:.2f} s)", flush=True)
                    if n >= 0:
                        times[side]["create"].append(create_s)
                        times[side]["revert"].append(revert_s)
                        bare_cpu["create"].append(create_cpu)
                        bare_cpu["revert"].append(revert_cpu)
            sizes.append(disk_mib(disk))
            print(f"{label}: the VM's disk file takes {sizes[-1]:.0f} MiB", flush=True)

        print(f"snapshot with memory, {args.rounds} rounds:")
        ratios, bounds, parts, cpu = {}, {}, [], []
        for what in ("create", "revert"):
            lim, bare = times["LIMEN"][what], times["bare"][what]
            ratios[what] = statistics.median(t.seen for t in lim) / statistics.median(bare)
            bounds[what] = statistics.median(t.bound for t in lim) / statistics.median(bare)
            verdict = "met" if ratios[what] <= GOAL else "missed"
            print(f"  {what:6}  LIMEN {spread([t.seen for t in lim])}   bare {spread(bare)}   "
                  f"ratio {ratios[what]:.3f} (goal <= {GOAL}: {verdict})")
            call = statistics.median(t.call for t in lim)
            parts.append(f"{what}: libvirt's call {call:.2f} s (bare: {statistics.median(bare):.2f} s), the rest of "
                         f"the Operation {statistics.median(t.recorded - t.call for t in lim) * 1e3:.0f} ms, the "
                         f"request and the polling {statistics.median(t.seen - t.recorded for t in lim) * 1e3:.0f} ms")
            cpu.append(f"{statistics.median(t.cpu for t in lim) * 1e3:.0f} ms during its {what} "
                       f"({statistics.median(bare_cpu[what]) * 1e3:.0f} ms during the bare one)")
        print(f"  where LIMEN's time goes (medians): {'; '.join(parts)}")
        print(f"  polling: LIMEN's times end at the first GET /api/v1/operations/{{id}} that said done, asked every "
              f"{args.poll * 1e3:.0f} ms; each Operation ended after the last one that said not done was sent: "
              f"counted to that instead, the ratios would be {bounds['create']:.3f} (create) and "
              f"{bounds['revert']:.3f} (revert). LIMEN's processes (gunicorn's worker, nginx) used a median "
              f"{' and '.join(cpu)} of CPU")
        print(f"  disk: the VM's file took {sizes[0]:.0f} MiB after boot, {sizes[1]:.0f} MiB after the warm-up round "
              f"and {sizes[-1]:.0f} MiB after the last (every snapshot deleted in its round)")
    except (BenchError, libvirt.libvirtError):
        if limen is not None:
            print(f"LIMEN's log, last lines:\n{log_tail(limen.log)}", file=sys.stderr)
        raise
    finally:
        remove_made(limen, api, conn, config, vm_uuid)


def guest_main(name: str, doc: str, run, add_arguments=lambda parser: None) -> int:
    """A guest benchmark's command: its arguments (--keep, and ``add_arguments``'), the daemons,
    the guest image, ``run(args, workdir, image)``, and the work folder removed unless kept."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    add_arguments(parser)
    parser.add_argument("--keep", action="store_true", help="keep the work folder (LIMEN's log)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that every finally cleans up
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix=f"limen-bench-{name}-"))
    try:
        ensure_daemons()
        image = Path(subprocess.run([str(ROOT / "scripts" / "build-guest-image")], check=True, capture_output=True,
                                    text=True).stdout.strip().splitlines()[-1])
        run(args, workdir, image)
    except (BenchError, libvirt.libvirtError, subprocess.CalledProcessError) as e:
        print(f"{name}: could not run: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"(the work folder is kept: {workdir})", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    return 0


def main() -> int:
    def arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--rounds", type=int, default=3)
        parser.add_argument("--poll", type=float, default=POLL, help="seconds between polls of LIMEN's Operations")

    return guest_main("snapshot", __doc__, run, arguments)


if __name__ == "__main__":
    sys.exit(main())
