"""The console of a VM on another host against one on the local host: the time a stopped VM takes
to show its console, and the bytes per second a running VM's screen can carry, through LIMEN.

One run, on 127.0.0.1 only. The other hosts are scripts/second-host twice (each another libvirtd
in a mount namespace of its own): one reached over SSH on 127.0.0.1, one over TLS (a test CA's
certificates, its VNC servers speaking TLS), each added to LIMEN as an admin adds one. Three VMs
with no OS (SeaBIOS, a VNC display), one on each host, each LIMEN's:

time to console  for each, shut off: WebSocket open -> first RFB byte (LIMEN starts it, then
                 reaches its VNC server: on the SSH host through an SSH channel, on the TLS host
                 with VeNCrypt's TLS), medians of rounds that take the three in turns.
                 Reported: each remote / local.
throughput       for each, running: the RFB handshake, then framebuffer updates asked for as
                 fast as they come (the whole screen, not incremental), for a few seconds; bytes
                 per second, medians of rounds in turns. Reported: each remote / local.

There is no goal: the issue asks for the ratio. LIMEN is served as `make run` serves it
(gunicorn, one worker, nginx in front). A benchmark reports and does not fail: the exit status
is non-zero only when it could not run. Everything it made is removed, however it ends.

    .venv/bin/python bench/remote_console.py [--rounds 5] [--seconds 3] [--keep]
"""
import argparse
import secrets
import shutil
import sqlite3
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console import BANNER, ROOT, BenchError, Limen, free_port, remove_pool, wait_until

SCRIPT = ROOT / "scripts" / "second-host"


def domain_xml(name: str, listen: str | None = "127.0.0.1") -> str:
    """A VM with no OS, its VNC server listening as LIMEN's do on its host (a TLS host's: where
    that host's qemu.conf says)."""
    address = f" address='{listen}'" if listen else ""
    return (f"<domain type='kvm'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64' machine='q35'>hvm</type></os><on_poweroff>destroy</on_poweroff>"
            f"<devices><graphics type='vnc' port='-1' autoport='yes'><listen type='address'{address}/>"
            "</graphics><video><model type='vga'/></video></devices></domain>")


def add_row(limen: Limen, vm_uuid: str, name: str, host_id: int) -> None:
    with sqlite3.connect(limen.instance / "limen.sqlite", timeout=30) as db:
        owner = db.execute("SELECT id FROM user WHERE username = 'admin'").fetchone()[0]
        db.execute("INSERT INTO vm (uuid, name, owner_id, host_id, vcpus, memory_mib, disk_gib, state, created_at) "
                   "VALUES (?, ?, ?, ?, 1, 64, 1, 'shutoff', ?)",
                   (vm_uuid, name, owner, host_id, datetime.now(UTC).replace(tzinfo=None).isoformat(" ")))
    db.close()


def post_form(limen: Limen, path: str, form: dict) -> int:
    data = urllib.parse.urlencode({**form, "csrf_token": limen.csrf}).encode()
    try:
        return limen.http.open(f"{limen.base}{path}", data=data, timeout=60).status
    except urllib.error.HTTPError as e:
        raise BenchError(f"POST {path} answered {e.code}: {e.read()[:300]!r}") from None


def first_byte(limen: Limen, vm_uuid: str) -> float:
    ws = limen.open(vm_uuid, timeout=60)
    try:
        first = ws.read(1)
        elapsed = time.perf_counter() - ws.opened
        if first + ws.read(len(BANNER) - 1) != BANNER:
            raise BenchError("the console did not begin with an RFB banner")
        return elapsed
    finally:
        ws.close()


def screen_rate(limen: Limen, vm_uuid: str, seconds: float) -> float:
    """Bytes per second of whole-screen updates, asked for one after another."""
    ws = limen.open(vm_uuid, timeout=60)
    try:
        if ws.read(12) != BANNER:
            raise BenchError("no RFB banner")
        ws.send(BANNER)
        types = ws.read(ws.read(1)[0])
        if 1 not in types:
            raise BenchError(f"no security type None offered: {list(types)}")
        ws.send(bytes([1]))
        ws.read(4)  # SecurityResult
        ws.send(bytes([1]))  # ClientInit, shared
        width, height = struct.unpack(">HH", ws.read(4))
        depth = ws.read(16)[0] // 8  # the pixel format: bytes per pixel first
        ws.read(struct.unpack(">I", ws.read(4))[0])  # the name
        ws.send(struct.pack(">BBH", 2, 0, 1) + struct.pack(">i", 0))  # SetEncodings: raw only
        request = struct.pack(">BBHHHH", 3, 0, 0, 0, width, height)  # the whole screen
        got, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            ws.send(request)
            kind, _, rects = struct.unpack(">BBH", ws.read(4))
            if kind != 0:
                raise BenchError(f"a server message of type {kind}, not a framebuffer update")
            for _ in range(rects):
                _x, _y, w, h, _enc = struct.unpack(">HHHHi", ws.read(12))
                ws.drain(w * h * depth)
                got += w * h * depth + 12
        return got / (time.perf_counter() - start)
    finally:
        ws.close()


def start_host(home: Path, key: Path, tls: bool) -> str:
    """A second host (scripts/second-host; over TLS, with the certificates in home/pki); its URI."""
    ports = [str(free_port())] + ([str(free_port())] if tls else [])
    started = subprocess.run([str(SCRIPT), "start", str(home), ports[0], f"{key}.pub", *ports[1:]],
                             capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        raise BenchError(f"the second host did not start: {started.stderr}")
    return started.stdout.strip()


SIDES = ("local", "ssh", "tls")


def run(args, tmp: Path) -> None:
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    local = libvirt.open("qemu:///system")
    tag = secrets.token_hex(3)
    homes, key = {"ssh": tmp / "ssh-host", "tls": tmp / "tls-host"}, tmp / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    sys.path.insert(0, str(ROOT / "tests"))
    from pki import CLIENT_FILES, SERVER_FILES, make_pki, write

    pki = make_pki()
    write(pki, homes["tls"] / "pki", SERVER_FILES)
    write(pki, tmp / "client", CLIENT_FILES)
    limen = None
    conns, doms = {"local": local}, []
    try:
        uris = {side: start_host(home, key, side == "tls") for side, home in homes.items()}
        limen = Limen(tmp / "limen", {"LIBVIRT_URI": "qemu:///system", "STORAGE_POOL": f"limen-bench-{tag}",
                                      "STORAGE_DIR": f"/var/lib/limen/bench-{tag}"})
        sys.path.insert(0, str(ROOT))
        from limen import remote

        with open(homes["ssh"] / "ssh" / "authorized_keys", "a") as f:
            f.write(remote.public_key(str(limen.instance)) + "\n")
        host_key = " ".join((homes["ssh"] / "ssh" / "host_key.pub").read_text().split()[:2])
        post_form(limen, "/admin/hosts", {"name": "ssh", "uri": uris["ssh"], "host_key": host_key})
        post_form(limen, "/admin/hosts", {"name": "tls", "uri": uris["tls"], "ca_cert": pki["ca_cert"],
                                          "client_cert": pki["client_cert"], "client_key": pki["client_key"]})
        from limen.hypervisor.connection import ensure_event_loop

        ensure_event_loop()
        conns["ssh"] = libvirt.open(f"{uris['ssh']}?keyfile={key}&known_hosts={tmp / 'known_hosts'}"
                                    "&known_hosts_verify=auto")
        conns["tls"] = libvirt.open(f"{uris['tls']}?pkipath={tmp / 'client'}")
        vms = {}
        for host_id, side in enumerate(SIDES, start=1):
            dom = conns[side].defineXML(domain_xml(f"limen-bench-{side}-{tag}", None if side == "tls" else "127.0.0.1"))
            doms.append(dom)
            vms[side] = dom
            add_row(limen, dom.UUIDString(), f"bench-{side}", host_id)

        def off(dom) -> None:
            if dom.isActive():
                dom.destroy()
            wait_until(lambda: not dom.isActive(), 30, f"{dom.name()} to be shut off")

        def idle(dom) -> bool:
            return limen.query("SELECT count(*) FROM operation WHERE vm_uuid = ? AND state IN ('pending', 'running')",
                               dom.UUIDString())[0][0] == 0

        starts: dict[str, list[float]] = {side: [] for side in SIDES}
        rates: dict[str, list[float]] = {side: [] for side in SIDES}
        for i in range(args.rounds + 1):  # the first round warms all up and is not counted
            order = SIDES[i % 3:] + SIDES[:i % 3]
            for side in order:
                dom = vms[side]
                off(dom)
                wait_until(lambda d=dom: idle(d), 30, "LIMEN to finish its operations")
                elapsed = first_byte(limen, dom.UUIDString())
                wait_until(lambda d=dom: idle(d), 30, "LIMEN's start to finish")
                rate = screen_rate(limen, dom.UUIDString(), args.seconds)
                if i:
                    starts[side].append(elapsed)
                    rates[side].append(rate)
        s = {side: statistics.median(starts[side]) for side in SIDES}
        r = {side: statistics.median(rates[side]) for side in SIDES}
        print("console of a VM on another host (over SSH, and over TLS, on 127.0.0.1) against one on the local "
              "host, through LIMEN")
        for side in ("ssh", "tls"):
            print(f"  time to console  local {s['local'] * 1e3:6.0f} ms   {side} {s[side] * 1e3:6.0f} ms"
                  f"   ratio {s[side] / s['local']:.2f}x   (no goal: reported)")
        ms = {side: [round(x * 1e3) for x in starts[side]] for side in SIDES}
        print(f"                   (medians of {args.rounds} rounds in turns; "
              + ", ".join(f"{side} {ms[side]} ms" for side in SIDES) + ")")
        for side in ("ssh", "tls"):
            print(f"  throughput       local {r['local'] / 2**20:6.1f} MiB/s   {side} {r[side] / 2**20:6.1f} MiB/s"
                  f"   ratio {r[side] / r['local']:.2f}x   (no goal: reported)")
        print(f"                   (whole-screen raw updates for {args.seconds:g} s, medians of {args.rounds} rounds)")
    finally:
        for dom in doms:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError:
                pass
        for side, conn in conns.items():
            if side != "local":
                conn.close()
        if limen is not None:
            limen.stop()
        for home in homes.values():
            subprocess.run([str(SCRIPT), "stop", str(home)], capture_output=True, timeout=120)
        remove_pool(local, f"limen-bench-{tag}")
        local.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds of screen updates per round")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="limen-bench-remote-"))
    try:
        run(args, tmp)
    except BenchError as e:
        print(f"remote console: could not run: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
