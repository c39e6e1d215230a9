"""A live migration of the real guest to another host, with its disk: LIMEN's Operation against a
bare virDomainMigrateToURI3 with the same flags, in the same run.

The other host is scripts/second-host (another libvirtd in a mount namespace of its own, reached
over SSH on 127.0.0.1), added to LIMEN as an admin adds one. One guest (the Debian 12 image of
scripts/build-guest-image under TCG, cloud-init, user-mode network) is made on the local host
through LIMEN's API and booted once. Then rounds, LIMEN first in even rounds and bare first in
odd ones, each moving the running guest from the local host to the second and back:

LIMEN  POST /api/v1/vms/{uuid}/migrate {"host": "second"}, timed from the request until
       GET /api/v1/operations/{id} says done (asked every 0.1 s): preparing the destination
       (its pool, a copy of the guest's cloud-init seed), libvirt's migration, the disks left on
       the source removed. Back: the same with {"host": "local"} (not counted).
bare   the same migrateToURI3 (LIVE | PEER2PEER | PERSIST_DEST | UNDEFINE_SOURCE |
       NON_SHARED_DISK, the data to tcp://127.0.0.1) on the same domain, timed around the call;
       the seed copied to the destination first (not counted). Back: libvirt's managed
       migration over both connections (not counted); LIMEN's rows follow the domain on their own.

Downtime: how long the guest was paused at the switch, as libvirt's completed-job statistics on
the destination report it. After each move the guest answers over SSH (the forward follows it)
with the boot id it booted with. Goals: LIMEN's median / bare median <= 1.1, for the total time
and for the downtime.

A benchmark reports and does not fail: exit status 0 whether the goals are met or missed,
non-zero only when it could not run. Everything it made is removed, however it ends.

    .venv/bin/python bench/migration.py [--rounds 3] [--keep]
"""
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console import ROOT, BenchError, Limen, free_port, log_tail, wait_until
from guest_boot import banner, first_time, remove_made
from remote_console import SCRIPT, post_form
from snapshot import BOOT_TIMEOUT, SETTLE_TIMEOUT, Api, guest_main, ssh_until, upload_image

OP_TIMEOUT = 900  # seconds for one migration Operation
POLL = 0.1
GOAL = 1.1
FLAGS = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
         | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_NON_SHARED_DISK)
BACK = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
        | libvirt.VIR_MIGRATE_NON_SHARED_DISK)


def limen_move(api: Api, vm_uuid: str, host: str) -> float:
    start = time.perf_counter()
    op = api("POST", f"/vms/{vm_uuid}/migrate", {"host": host})["operation"]
    deadline = start + OP_TIMEOUT
    while op["state"] in ("pending", "running"):
        if time.perf_counter() > deadline:
            raise BenchError(f"LIMEN's migration did not end within {OP_TIMEOUT} s (step: {op['step']})")
        time.sleep(POLL)
        op = api("GET", f"/operations/{op['id']}")
    if op["state"] != "done":
        raise BenchError(f"LIMEN's migration to {host} failed: {op['error']}")
    return time.perf_counter() - start


def downtime_ms(conn: libvirt.virConnect, vm_uuid: str) -> float | None:
    """The pause at the switch, from the completed migration's statistics on the destination."""
    try:
        stats = conn.lookupByUUIDString(vm_uuid).jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    except libvirt.libvirtError:
        return None
    return float(stats["downtime"]) if "downtime" in stats else None


def copy_volume(src: libvirt.virStoragePool, dst: libvirt.virStoragePool, name: str) -> None:
    """A volume streamed to the pool of the other host (the seed, which libvirt does not copy)."""
    vol = src.storageVolLookupByName(name)
    size = vol.info()[1]
    created = dst.createXML(f"<volume><name>{name}</name><capacity unit='B'>{size}</capacity>"
                            "<target><format type='raw'/></target></volume>", 0)
    down, up = src.connect().newStream(0), dst.connect().newStream(0)
    vol.download(down, 0, size, 0)
    created.upload(up, 0, size, 0)
    left = size
    while left > 0:
        chunk = down.recv(min(left, 1 << 18))
        if not chunk:
            raise BenchError(f"{name} ended early")
        up.send(chunk)
        left -= len(chunk)
    down.finish()
    up.finish()


def run(args, workdir: Path, image: Path) -> None:
    tag = secrets.token_hex(3)
    low = free_port()
    pool = f"limen-bench-{tag}"
    config = {"LIBVIRT_URI": "qemu:///system", "DOMAIN_TYPE": "qemu", "NETWORK": "user",
              "STORAGE_POOL": pool, "STORAGE_DIR": f"/var/lib/limen/bench-{tag}",
              "MEDIA_POOL": f"limen-bench-media-{tag}", "MEDIA_DIR": f"/var/lib/limen/bench-media-{tag}",
              "FORWARD_PORTS": f"{low}-{low + 50}", "START_TIMEOUT": 120}
    key = workdir / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    home = workdir / "second-host"
    started = subprocess.run([str(SCRIPT), "start", str(home), str(free_port()), f"{key}.pub"],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        raise BenchError(f"the second host did not start: {started.stderr}")
    uri = started.stdout.strip()
    conn = libvirt.open("qemu:///system")
    limen = api = vm_uuid = there = None
    try:
        limen = Limen(workdir, config)
        sys.path.insert(0, str(ROOT))
        from limen import remote
        from limen.hypervisor.connection import ensure_event_loop

        ensure_event_loop()
        with open(home / "ssh" / "authorized_keys", "a") as f:
            f.write(remote.public_key(str(limen.instance)) + "\n")
        host_key = " ".join((home / "ssh" / "host_key.pub").read_text().split()[:2])
        post_form(limen, "/admin/hosts", {"name": "second", "uri": uri, "host_key": host_key})
        # The bare side's URIs, as LIMEN's own for the same host (libssh2, the pinned key).
        known = remote.known_hosts_file(str(workdir), "bench", uri, host_key)
        dest_uri = remote.libvirt_uri(uri, str(limen.instance), known)
        there = libvirt.open(dest_uri)
        image_id = upload_image(limen, image)
        api = Api(limen)
        start = time.monotonic()
        created = api("POST", "/vms", {"name": f"bench-migration-{tag}", "vcpus": 1, "memory_mib": 768,
                                       "disk_gib": 3, "source": f"image:{image_id}", "ci_user": "bench",
                                       "ci_ssh_key": (workdir / "key.pub").read_text().strip(), "network": "user",
                                       "host": "local"})
        vm_uuid = created["vm"]["uuid"]
        port = next(f["host_port"] for f in created["vm"]["forwards"] if f["guest_port"] == 22)
        first_time(lambda: banner(port), start, BOOT_TIMEOUT, "the guest's SSH banner", threading.Event())
        ssh_until(key, port, "cloud-init status --wait >/dev/null; echo ok", SETTLE_TIMEOUT, "cloud-init to finish")
        boot_id = ssh_until(key, port, "cat /proc/sys/kernel/random/boot_id", 60, "the guest's boot id")
        print(f"live migration of a running guest (1 vCPU, 768 MiB, TCG) with its disk, local host -> second host "
              f"(127.0.0.1, over SSH), {os.cpu_count()} CPUs; booted and settled in {time.monotonic() - start:.0f} s",
              flush=True)

        def same_boot(what: str) -> None:
            got = ssh_until(key, port, "cat /proc/sys/kernel/random/boot_id", 120, f"the guest after {what}")
            if got != boot_id:
                raise BenchError(f"after {what} the guest runs another boot")

        times: dict[str, list[float]] = {"LIMEN": [], "bare": []}
        pauses: dict[str, list[float]] = {"LIMEN": [], "bare": []}
        seed = f"{vm_uuid}-seed.iso"
        for n in range(-1, args.rounds):  # -1: a warm-up round, not counted
            label = "warm-up" if n < 0 else f"round {n}"
            for side in (("LIMEN", "bare") if n % 2 == 0 or n < 0 else ("bare", "LIMEN")):
                if side == "LIMEN":
                    took = limen_move(api, vm_uuid, "second")
                else:
                    dom = conn.lookupByUUIDString(vm_uuid)
                    copy_volume(conn.storagePoolLookupByName(pool), there.storagePoolLookupByName(pool), seed)
                    begin = time.perf_counter()
                    dom.migrateToURI3(dest_uri, {libvirt.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"}, FLAGS)
                    took = time.perf_counter() - begin
                pause = downtime_ms(there, vm_uuid)
                if side == "LIMEN":  # (a bare move leaves the guest's SSH forward behind: checked once back)
                    same_boot("LIMEN's migration")
                    limen_move(api, vm_uuid, "local")  # back, not counted
                else:
                    there.lookupByUUIDString(vm_uuid).migrate3(conn, {}, BACK)
                    for name in (seed, f"{vm_uuid}.qcow2"):  # as LIMEN leaves the host it moved from
                        there.storagePoolLookupByName(pool).storageVolLookupByName(name).delete(0)
                    wait_until(lambda: api("GET", f"/vms/{vm_uuid}")["state"] == "running", 60,
                               "LIMEN's row to show the guest back and running")
                same_boot(f"{side}'s migration back")
                print(f"{label}: {side:5}  {took:6.2f} s, downtime "
                      f"{'not reported' if pause is None else f'{pause:.0f} ms'}", flush=True)
                if n >= 0:
                    times[side].append(took)
                    if pause is not None:
                        pauses[side].append(pause)
        print(f"live migration, {args.rounds} rounds (medians):")
        ratio = statistics.median(times["LIMEN"]) / statistics.median(times["bare"])
        lim, bare = statistics.median(times["LIMEN"]), statistics.median(times["bare"])
        print(f"  total     LIMEN {lim:6.2f} s   bare {bare:6.2f} s"
              f"   ratio {ratio:.3f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'missed'})")
        if pauses["LIMEN"] and pauses["bare"]:
            ratio = statistics.median(pauses["LIMEN"]) / statistics.median(pauses["bare"])
            lim, bare = statistics.median(pauses["LIMEN"]), statistics.median(pauses["bare"])
            print(f"  downtime  LIMEN {lim:6.0f} ms  bare {bare:6.0f} ms"
                  f"   ratio {ratio:.3f} (goal <= {GOAL}: {'met' if ratio <= GOAL else 'missed'})")
        else:
            print("  downtime  libvirt reported none for a side: no ratio")
    except (BenchError, libvirt.libvirtError):
        if limen is not None:
            print(f"LIMEN's log, last lines:\n{log_tail(limen.log)}", file=sys.stderr)
        raise
    finally:
        if there is not None:
            there.close()
        remove_made(limen, api, conn, config, vm_uuid)
        subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)


def main() -> int:
    return guest_main("migration", __doc__, run, lambda parser: parser.add_argument("--rounds", type=int, default=3))


if __name__ == "__main__":
    sys.exit(main())
