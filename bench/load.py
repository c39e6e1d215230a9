"""LIMEN under hostile load: slow clients, a huge body and a hundred consoles at once.

LIMEN is served the production way (gunicorn.conf.py: nginx in front of gunicorn, one
worker), on libvirt's test driver, whose domain's VNC display is an echoing TCP source in a
process of its own. One run measures, side by side:

idle     a signed-in page (the VM table's rows) and /healthz, nothing else going on.
loaded   the same, while these are held open from 127.0.0.1:
         - slow connections: half send only part of a request's headers, half announce a
           1 MB body and send one byte of it (slowloris);
         - an unauthenticated 200 MiB body being sent to the sign-in API;
         - console WebSockets, each of which must still echo at the end.
Printed: the slow connections and consoles held, the body's answer, the p50/p99 of each page
loaded against idle (goal: p99 <= 3x idle, and every answer within 1 s), and the peak memory
of gunicorn's worker and of nginx.

A benchmark reports and does not fail: the exit status is 0 whether goals are met or missed, and
non-zero only when the benchmark itself could not run. tests/faults/test_load.py runs the same
load and asserts what a user would see.

    .venv/bin/python bench/load.py [--slow 500] [--consoles 100] [--body-mib 200] [--requests 50]
"""
import argparse
import select
import socket
import sys
import tempfile
import threading
import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console import BANNER, MIB, BenchError, Limen, Source, WSClient, node_xml, percentile  # noqa: E402

PAGES = ("/vms/rows", "/healthz")
ANSWER_WITHIN = 1.0  # seconds: a page slower than this counts as not answered


@dataclass
class Figures:
    slow_opened: int = 0
    slow_held: int = 0
    consoles_opened: int = 0
    consoles_echoing: int = 0
    body_answer: str = ""
    body_sent_mib: float = 0.0
    idle: dict = field(default_factory=dict)  # page -> seconds of each request
    loaded: dict = field(default_factory=dict)
    unanswered: list = field(default_factory=list)  # (page, what happened)
    peak_kib: dict = field(default_factory=dict)  # process -> VmHWM


def time_pages(limen: Limen, n: int, figures: Figures) -> dict:
    """Each page ``n`` times, in turns; a failure or an answer slower than ANSWER_WITHIN is
    recorded in figures.unanswered (and its time kept)."""
    times: dict[str, list[float]] = {p: [] for p in PAGES}
    for _ in range(n):
        for page in PAGES:
            start = time.perf_counter()
            try:
                status = limen.http.open(f"{limen.base}{page}", timeout=ANSWER_WITHIN * 5).status
            except OSError as e:
                status = repr(e)
            took = time.perf_counter() - start
            times[page].append(took)
            if status not in (200, 204) or took > ANSWER_WITHIN:
                figures.unanswered.append((page, f"{status} after {took:.3f} s"))
    return times


def slow_connections(port: int, n: int) -> list[socket.socket]:
    """Slowloris: half stop in the middle of their headers, half in a 1 MB body."""
    parts = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: 1\r\n",
             b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
             b"Content-Length: 1000000\r\n\r\nu")
    held = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(parts[i % 2])
        held.append(s)
    return held


def still_open(socks: list[socket.socket]) -> int:
    """How many the server has neither answered nor closed."""
    count = 0
    for s in socks:
        s.setblocking(False)
        try:
            s.recv(1, socket.MSG_PEEK)  # data (an answer) or b"" (closed): not held any more
        except BlockingIOError:
            count += 1
        except OSError:
            pass
    return count


class BigBody(threading.Thread):
    """An unauthenticated body of ``size`` bytes to the sign-in API, sent as fast as the
    server takes it until the server answers; ``answer`` is the status line it got (or what
    ended it), ``sent`` how much of the body had gone by then."""

    def __init__(self, port: int, size: int):
        super().__init__(name="bench-big-body", daemon=True)
        self.port, self.size, self.sent, self.answer = port, size, 0, ""

    def run(self) -> None:
        chunk = b"x" * (256 * 1024)
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as s:
            s.sendall(f"POST /api/v1/auth/tokens HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {self.size}\r\n\r\n".encode())
            try:
                while self.sent < self.size and not select.select([s], [], [], 0)[0]:
                    self.sent += s.send(chunk[: self.size - self.sent])
            except OSError as e:
                self.answer = f"({e.__class__.__name__} while sending)"
            try:
                s.settimeout(10)
                line = s.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                self.answer = line or self.answer or "(closed without an answer)"
            except OSError as e:
                self.answer = self.answer or f"({e.__class__.__name__} waiting for the answer)"


def open_consoles(limen: Limen, vm_uuid: str, n: int) -> list[WSClient]:
    consoles = []
    for _ in range(n):
        ws = limen.open(vm_uuid)
        if ws.read(len(BANNER)) != BANNER:
            raise BenchError("a console did not show the VM's banner")
        consoles.append(ws)
    return consoles


def echoing(consoles: list[WSClient]) -> int:
    """How many consoles still carry bytes both ways (the display echoes)."""
    count = 0
    for i, ws in enumerate(consoles):
        message = f"still here {i}".encode()
        try:
            ws.send(message)
            if ws.read(len(message)) == message:
                count += 1
        except Exception:
            pass
    return count


def peak_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def load(limen: Limen, vm_uuid: str, *, slow: int, consoles: int, body_mib: int, requests: int) -> Figures:
    """Idle pages, then the same pages under the load; everything opened is closed again."""
    figures = Figures()
    time_pages(limen, 5, figures)  # warm up: pools, caches
    figures.unanswered.clear()
    figures.idle = time_pages(limen, requests, figures)
    held_consoles = open_consoles(limen, vm_uuid, consoles)
    figures.consoles_opened = len(held_consoles)
    held_slow: list[socket.socket] = []
    body = BigBody(limen.port, body_mib * MIB)
    try:
        held_slow = slow_connections(limen.port, slow)
        figures.slow_opened = len(held_slow)
        body.start()
        figures.loaded = time_pages(limen, requests, figures)
        figures.consoles_echoing = echoing(held_consoles)
        figures.slow_held = still_open(held_slow)
        body.join(60)
        figures.body_answer, figures.body_sent_mib = body.answer, body.sent / MIB
        figures.peak_kib = {("gunicorn worker" if pid == limen.worker else f"nginx {pid}"): peak_kib(pid)
                            for pid in limen.pids()}
    finally:
        for s in held_slow:
            s.close()
        for ws in held_consoles:
            ws.sock.close()
    return figures


def serve(workdir: Path, source: Source, consoles: int) -> tuple[Limen, str]:
    """LIMEN on a test-driver node with one running domain whose display echoes."""
    vm_uuid = str(uuidlib.uuid4())
    (workdir / "node.xml").write_text(node_xml([("load", vm_uuid, source.echo_port)]))
    limen = Limen(workdir, {"LIBVIRT_URI": f"test://{workdir / 'node.xml'}",
                            "CONSOLES_PER_USER": consoles, "CONSOLES_MAX": max(128, consoles)})
    limen.add_vm(vm_uuid, "load", "running")
    return limen, vm_uuid


def report(f: Figures) -> None:
    print(f"slow connections held   {f.slow_held} of {f.slow_opened} (still open when the pages had been timed)")
    print(f"consoles held           {f.consoles_echoing} of {f.consoles_opened} still echo")
    print(f"a huge body             {f.body_answer}, when {f.body_sent_mib:.1f} MiB of it had been sent")
    for page in PAGES:
        idle, loaded = f.idle[page], f.loaded[page]
        i50, i99, l50, l99 = (percentile(idle, 0.5), percentile(idle, 0.99),
                              percentile(loaded, 0.5), percentile(loaded, 0.99))
        ratio = l99 / i99
        print(f"{page:<24}idle p50 {i50 * 1e3:.1f} ms p99 {i99 * 1e3:.1f} ms; loaded p50 {l50 * 1e3:.1f} ms "
              f"p99 {l99 * 1e3:.1f} ms; p99 ratio {ratio:.2f} (goal <= 3: {'met' if ratio <= 3 else 'MISSED'})")
    print(f"unanswered within {ANSWER_WITHIN:g} s  {len(f.unanswered)} {f.unanswered[:5] if f.unanswered else ''}")
    for name, kib in f.peak_kib.items():
        print(f"peak memory             {name}: {kib / 1024:.0f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--consoles", type=int, default=100)
    parser.add_argument("--body-mib", type=int, default=200)
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    print(f"load: LIMEN (nginx + gunicorn gthread, 1 worker) on 127.0.0.1, test driver, {args.slow} slow "
          f"connections, {args.consoles} consoles, a {args.body_mib} MiB body")
    source = Source()
    try:
        with tempfile.TemporaryDirectory(prefix="limen-bench-load-") as tmp:
            limen, vm_uuid = serve(Path(tmp), source, args.consoles)
            try:
                report(load(limen, vm_uuid, slow=args.slow, consoles=args.consoles, body_mib=args.body_mib,
                            requests=args.requests))
            finally:
                limen.stop()
    except BenchError as e:
        print(f"load: could not run: {e}", file=sys.stderr)
        return 1
    finally:
        source.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
