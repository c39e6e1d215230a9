"""The serial console's echo latency: LIMEN's WebSocket against libvirt's own console stream.

One run, on the real libvirtd, with the Debian 12 guest image (scripts/build-guest-image)
under TCG: one VM made through LIMEN's API (the image, cloud-init, user-mode network), its
serial line (ttyS0: the kernel's console and a getty's) read from its start until cloud-init's
final message shows, so that the guest is settled. Then rounds, interleaved (LIMEN first in even
rounds, bare first in odd ones), on that one VM:

LIMEN  POST /api/v1/vms/{uuid}/console {"kind": "serial"} with a bearer token; its ws_url with
       &take_over=1, opened through LIMEN's nginx and gunicorn (its first message, the text
       {"event": "open"}, then the line's bytes as binary messages either way).
bare   a Python client of libvirt's console stream, as virsh console is one: a non-blocking
       stream, virDomainOpenConsole(SAFE | FORCE), read in its callbacks on libvirt's default
       event loop (the time a byte comes is taken there, where it reaches the client).

One client holds the line at a time: each side, in its turn, takes it over, gets a fresh prompt
(Ctrl-U and Enter until "login:" is the last thing on the line), then times one typed byte to
the first byte of its echo, --samples times after 10 that are not counted, a letter and a
backspace in turn (the getty echoes "x" and then "\\b \\b", so its login buffer never grows);
whatever came before is thrown away before each. An echo that is not exactly that (a kernel
message in between, a byte lost) is not counted: the line is brought back to a fresh prompt and
the count goes on. Then it closes, and the other opens only once it has.

Goal: LIMEN's median / bare median <= 1.2. A benchmark reports and does not fail: exit status 0
whether the goal is met or missed, non-zero only when it could not run. Everything it made (the
VM, its volumes, the pools, LIMEN's instance folder) is removed, however it ends.

    .venv/bin/python bench/serial.py [--rounds 3] [--samples 200] [--keep]
"""
import argparse
import os
import re
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent))
from guest_boot import Api, remove_made
from console import (
    BIN,
    ROOT,
    BenchError,
    Closed,
    Limen,
    WSClient,
    free_port,
    log_tail,
    percentile,
    wait_until,
)

BOOT_TIMEOUT = 400  # seconds from the create request to a settled guest: a TCG boot takes 50-90 here, cloud-init 100
PROMPT_TIMEOUT = 60  # seconds for a fresh prompt on a booted guest
PRESS_EVERY = 3.0  # seconds between presses of Enter while waiting for the prompt
QUIET = 0.3  # seconds of silence after "login:" that say the prompt is the last thing written
ECHO_TIMEOUT = 5.0  # seconds for one echo
WARM_UP = 10  # echoes after each opening that are not counted
MAX_MISSES = 20  # echoes that may come back wrong in one session before the run gives up
CLOUD_INIT_DONE = re.compile(rb"Cloud-init v\. \S+ finished at")  # its final stage's message, on the console
SERIAL_OPEN = b'{"event": "open"}'  # LIMEN's one text message: the line is held
LETTER, BACKSPACE = b"x", b"\x7f"
KILL_LINE, ENTER = b"\x15", b"\r"  # Ctrl-U empties the getty's login buffer
ECHOES = {LETTER: b"x", BACKSPACE: b"\b \b"}
CHUNK = 64 * 1024
EVENTS = libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP


# -- the two clients: send bytes; receive what has come (with when its first byte came) ----
class BareLine:
    """libvirt's console stream, read in its callbacks on the default event loop's thread."""

    def __init__(self, conn: libvirt.virConnect, dom: libvirt.virDomain, log):
        self.log = log
        self.cond = threading.Condition()
        self.chunks: list[tuple[float, bytes]] = []  # (when it came, the bytes)
        self.ended: str | None = None
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            dom.openConsole(None, self.stream, libvirt.VIR_DOMAIN_CONSOLE_SAFE | libvirt.VIR_DOMAIN_CONSOLE_FORCE)
            self.stream.eventAddCallback(EVENTS, self._on_event, None)
        except libvirt.libvirtError as e:
            self._abort()
            raise BenchError(f"libvirt's console stream would not open: {e.get_error_message()}") from None

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque) -> None:
        with self.cond:
            if self.ended:
                return
            try:
                if events & libvirt.VIR_STREAM_EVENT_READABLE:
                    while True:
                        data = stream.recv(CHUNK)
                        if data == -2:  # nothing more for now
                            break
                        if not data:
                            self._end("the guest's side closed it")
                            break
                        self.chunks.append((time.perf_counter(), data))
                if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                    self._end("the stream failed or hung up")
            except libvirt.libvirtError as e:
                self._end(f"the stream failed: {e.get_error_message()}")
            self.cond.notify_all()

    def _end(self, why: str) -> None:
        """Called with the condition held."""
        self.ended = why
        try:
            self.stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass

    def _abort(self) -> None:
        try:
            self.stream.abort()
        except libvirt.libvirtError:
            pass

    def send(self, data: bytes) -> None:
        deadline = time.monotonic() + ECHO_TIMEOUT
        with self.cond:
            while data:
                if self.ended:
                    raise BenchError(f"the bare console ended: {self.ended}")
                sent = self.stream.send(data)
                if sent == -2:  # the stream is full, which a few bytes never make it: wait a little
                    if time.monotonic() > deadline:
                        raise BenchError(f"the bare console took nothing for {ECHO_TIMEOUT:g} s")
                    self.cond.wait(0.001)
                    continue
                data = data[sent:]

    def receive(self, deadline: float) -> tuple[float | None, bytes]:
        """Wait until something has come or the deadline; (when its first byte came, all of it)."""
        with self.cond:
            self.cond.wait_for(lambda: self.chunks or self.ended, max(0.0, deadline - time.monotonic()))
            if not self.chunks:
                if self.ended:
                    raise BenchError(f"the bare console ended: {self.ended}")
                return None, b""
            first = self.chunks[0][0]
            data = b"".join(c for _, c in self.chunks)
            self.chunks.clear()
        self.log.write(data)
        return first, data

    def drain(self) -> None:
        with self.cond:
            data = b"".join(c for _, c in self.chunks)
            self.chunks.clear()
        self.log.write(data)

    def close(self) -> None:
        with self.cond:
            if not self.ended:
                self._end("closed")
            self._abort()


class LimenLine:
    """LIMEN's serial WebSocket, read by console.py's plain-socket client (which keeps every data
    message's payload in one buffer: LIMEN's first message, the text {"event": "open"}, is told
    from the line's bytes by being first)."""

    def __init__(self, api: Api, limen: Limen, vm_uuid: str, log):
        self.log = log
        url = urllib.parse.urlsplit(api("POST", f"/vms/{vm_uuid}/console", {"kind": "serial"})["ws_url"])
        if not url.path.endswith(f"/vms/{vm_uuid}/serial/ws"):
            raise BenchError(f"LIMEN gave an unexpected ws_url path: {url.path}")
        self.ws = WSClient(limen.port, f"{url.path}?{url.query}&take_over=1", origin=limen.base, timeout=60)
        self.open_event: bool | None = None  # whether LIMEN's first message was {"event": "open"}; None: not known yet

    def _pump(self, timeout: float) -> None:
        self.ws.sock.settimeout(timeout)
        try:
            self.ws._pump()
        except Closed as e:
            raise BenchError(f"LIMEN closed the serial console: {e.code} {e.reason}") from None
        data = self.ws.data
        while self.open_event is None and data:
            head = bytes(data[:len(SERIAL_OPEN)])
            if head == SERIAL_OPEN:
                del data[:len(SERIAL_OPEN)]
                self.open_event = True
            elif not SERIAL_OPEN.startswith(head):  # the line's bytes came first
                self.open_event = False
            else:  # a part of it: the rest is on its way
                self.ws.sock.settimeout(ECHO_TIMEOUT)
                self.ws._pump()

    def send(self, data: bytes) -> None:
        self.ws.send(data)

    def receive(self, deadline: float) -> tuple[float | None, bytes]:
        while not self.ws.data:
            left = deadline - time.monotonic()
            if left <= 0:
                return None, b""
            try:
                self._pump(left)
            except TimeoutError:
                return None, b""
        first = time.perf_counter()
        data = bytes(self.ws.data)
        self.ws.data.clear()
        self.log.write(data)
        return first, data

    def drain(self) -> None:
        while select.select([self.ws.sock], [], [], 0)[0]:
            self._pump(1)
        self.log.write(self.ws.data)
        self.ws.data.clear()

    def close(self) -> None:
        self.ws.close()


# -- the measurement ----------------------------------------------------------------------
def wait_output(line, pattern: re.Pattern, deadline: float, what: str) -> None:
    """Read the line until ``pattern`` shows in its output."""
    tail = b""
    while not pattern.search(tail):
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out waiting for {what} on the serial line (last bytes: {tail[-200:]!r})")
        _, data = line.receive(deadline)
        tail = (tail + data)[-4096:]


def fresh_prompt(line, timeout: float) -> int:
    """Empty the getty's buffer and press Enter, every PRESS_EVERY seconds, until "login:" is
    the last thing on the line (nothing more for QUIET seconds). Returns the presses it took."""
    deadline = time.monotonic() + timeout
    presses, tail = 0, b""
    while time.monotonic() < deadline:
        line.send(KILL_LINE + ENTER)
        presses += 1
        press_deadline = min(deadline, time.monotonic() + PRESS_EVERY)
        while time.monotonic() < press_deadline:
            _, data = line.receive(press_deadline)
            tail = (tail + data)[-4096:]
            if b"login:" in tail:
                # The prompt has come; is it the last thing written?
                while True:
                    _, data = line.receive(min(deadline, time.monotonic() + QUIET))
                    if not data:
                        break
                    tail = (tail + data)[-4096:]
                if tail.rstrip().endswith(b"login:"):
                    return presses
                tail = b""
    raise BenchError(f"no login prompt on the serial line within {timeout:g} s ({presses} presses of Enter;"
                     f" last bytes: {tail[-200:]!r})")


def echo(line, key: bytes) -> float | None:
    """Seconds from sending ``key`` to the first byte of its echo; None if the echo is not
    exactly the getty's."""
    expected = ECHOES[key]
    line.drain()
    start = time.perf_counter()
    line.send(key)
    first, got = line.receive(time.monotonic() + ECHO_TIMEOUT)
    if first is None:
        return None
    deadline = time.monotonic() + ECHO_TIMEOUT
    while len(got) < len(expected) and got == expected[:len(got)]:
        _, more = line.receive(deadline)
        if not more:
            break
        got += more
    return first - start if got == expected else None


def session(open_line, samples: int) -> dict:
    """Open a line, get a fresh prompt, and take ``samples`` echoes (after WARM_UP more)."""
    opening = time.perf_counter()
    line = open_line()
    opened = time.perf_counter() - opening
    try:
        presses = fresh_prompt(line, PROMPT_TIMEOUT)
        times, missed, warm, typed = [], 0, WARM_UP, False  # typed: the getty holds a letter
        while len(times) < samples:
            took = echo(line, BACKSPACE if typed else LETTER)
            if took is None:
                missed += 1
                if missed > MAX_MISSES:
                    raise BenchError(f"{missed} echoes came back wrong in one session")
                presses += fresh_prompt(line, PROMPT_TIMEOUT)
                typed = False
                continue
            typed = not typed
            if warm:
                warm -= 1
            else:
                times.append(took)
        if typed:
            line.send(KILL_LINE)
    finally:
        line.close()
    return {"times": times, "missed": missed, "presses": presses, "opened": opened,
            "open_event": getattr(line, "open_event", None)}


def limen_closed(limen: Limen, vm_uuid: str) -> bool:
    """Whether LIMEN has ended (and so let go of the line of) every console of the VM."""
    return limen.query("SELECT count(*) FROM console_session WHERE vm_uuid = ? AND ended_at IS NULL",
                       vm_uuid)[0][0] == 0


def wait_state(api: Api, vm_uuid: str, state: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        vm = api("GET", f"/vms/{vm_uuid}")
        if vm["state"] == state:
            return
        if time.monotonic() > deadline:
            raise BenchError(f"the VM is {vm['state']} ({vm['state_reason']}), not {state}, after {timeout:g} s;"
                             f" its operation: {vm['operation']}")
        time.sleep(0.5)


def summary(times: list[float]) -> str:
    return f"median {statistics.median(times) * 1e3:6.2f} ms, p95 {percentile(times, 0.95) * 1e3:6.2f} ms"


def run(args, workdir: Path, image: Path) -> None:
    tag = secrets.token_hex(3)
    low = free_port()
    config = {"LIBVIRT_URI": "qemu:///system", "DOMAIN_TYPE": "qemu", "NETWORK": "user",
              "STORAGE_POOL": f"limen-bench-{tag}", "STORAGE_DIR": f"/var/lib/limen/bench-{tag}",
              "MEDIA_POOL": f"limen-bench-media-{tag}", "MEDIA_DIR": f"/var/lib/limen/bench-media-{tag}",
              "FORWARD_PORTS": f"{low}-{low + 50}", "START_TIMEOUT": 120}
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    libvirt.virEventRegisterDefaultImpl()  # before the connection: its streams' callbacks run on it

    def event_loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=event_loop, name="libvirt-events", daemon=True).start()
    conn = libvirt.open("qemu:///system")
    limen = api = vm_uuid = None
    try:
        limen = Limen(workdir, config)
        with open(workdir / "serial.log", "ab") as log:  # every byte the clients read
            env = {**os.environ, "LIMEN_INSTANCE_PATH": str(limen.instance)}
            out = subprocess.run([str(BIN / "flask"), "--app", "app", "media", "upload", str(image), "--kind", "image",
                                  "--name", "bench image"], cwd=ROOT, env=env, check=True,
                                 capture_output=True, text=True).stdout
            image_id = int(out.rsplit("(id ", 1)[1].rstrip(")\n"))
            api = Api(limen)
            start = time.monotonic()
            vm = api("POST", "/vms", {"name": f"bench-serial-{tag}", "vcpus": 1, "memory_mib": 768, "disk_gib": 3,
                                      "source": f"image:{image_id}", "ci_user": "bench",
                                      "ci_password": secrets.token_urlsafe(12), "network": "user"})["vm"]
            vm_uuid = vm["uuid"]
            wait_state(api, vm_uuid, "running", BOOT_TIMEOUT)
            dom = conn.lookupByUUIDString(vm_uuid)
            line = BareLine(conn, dom, log)  # held from the start, so that no boot message is missed
            try:
                # Measured on a settled guest: cloud-init's last stage keeps its one vCPU busy for a
                # while after the getty's first prompt.
                wait_output(line, CLOUD_INIT_DONE, start + BOOT_TIMEOUT, "cloud-init's final message")
                settled = time.monotonic() - start
                presses = fresh_prompt(line, PROMPT_TIMEOUT)
            finally:
                line.close()
            print(f"serial echo latency on {os.cpu_count()} CPUs, a {ET.fromstring(dom.XMLDesc(0)).get('type')} guest:"
                  f" cloud-init finished {settled:.0f} s after the create request; login prompt after"
                  f" {presses} presses of Enter", flush=True)

            sides = {
                "LIMEN": lambda: LimenLine(api, limen, vm_uuid, log),
                "bare": lambda: BareLine(conn, dom, log),
            }
            times: dict[str, list[float]] = {name: [] for name in sides}
            no_open_event = 0
            for n in range(args.rounds):
                order = list(sides) if n % 2 == 0 else list(sides)[::-1]
                for name in order:
                    log.write(f"\n==== round {n}: {name} ====\n".encode())
                    s = session(sides[name], args.samples)
                    if name == "LIMEN":
                        no_open_event += s["open_event"] is False
                        wait_until(lambda: limen_closed(limen, vm_uuid), 30, "LIMEN to let go of the serial line")
                    times[name].extend(s["times"])
                    print(f"round {n}: {name:5}  {summary(s['times'])}   ({len(s['times'])} echoes, {s['missed']} not"
                          f" counted; opened in {s['opened'] * 1e3:.0f} ms, prompt after {s['presses']} presses)",
                          flush=True)
            lim, bare = statistics.median(times["LIMEN"]), statistics.median(times["bare"])
            ratio = lim / bare
            print(f"serial echo: LIMEN {summary(times['LIMEN'])}; bare libvirt {summary(times['bare'])};"
                  f" ratio of medians {ratio:.3f} (goal <= 1.2: {'met' if ratio <= 1.2 else 'missed'})")
            if no_open_event:
                print(f"note: LIMEN sent no {SERIAL_OPEN.decode()} before the line's bytes in {no_open_event} of"
                      f" {args.rounds} sessions")
    except BenchError:
        if limen is not None:
            print(f"LIMEN's log, last lines:\n{log_tail(limen.log)}", file=sys.stderr)
        raise
    finally:
        remove_made(limen, api, conn, config, vm_uuid)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=200, help="echoes timed for each side in each round")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (LIMEN's log, the serial log)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that every finally cleans up
    started = time.monotonic()
    image = Path(subprocess.run([str(ROOT / "scripts" / "build-guest-image")], check=True, capture_output=True,
                                text=True).stdout.strip().splitlines()[-1])
    workdir = Path(tempfile.mkdtemp(prefix="limen-bench-serial-"))
    try:
        run(args, workdir, image)
    except BenchError as e:
        print(f"serial: could not run: {e}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"(the work folder is kept: {workdir})", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
