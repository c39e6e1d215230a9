"""The console bridge against websockify 0.13, and the time a stopped VM takes to show its console.

All ratios are measured side by side in one run, on 127.0.0.1 only:

throughput   bytes/s from one TCP source through LIMEN's bridge and through websockify, read by
             the same client; rounds alternate between the two. Goal: LIMEN/websockify >= 1.0.
latency      round trips of 16-byte messages through an echoing source, taken in turns through
             the two. Goal: LIMEN p50 / websockify p50 <= 1.0.
time to      for a stopped real VM on qemu:///system, (WebSocket open -> first RFB byte) minus
console      (a bare virDomainCreate of the same VM), medians, measured in the same rounds.
             Goal: <= 150 ms.
concurrency  100 console sessions streaming at once through one LIMEN process: none fails; the
             worker's memory per session is printed. A second batch shows whether threads or file
             descriptors stay behind (the first grows gunicorn's thread pool and SQLite's files).

LIMEN is served the production way (gunicorn -c gunicorn.conf.py app:app, gthread, one worker),
for the first, second and fourth parts on libvirt's test driver, whose domains' VNC displays are
the TCP source. The client is a small WebSocket reader of its own (large receive buffer, frames
parsed without copying payloads), so that neither server is capped by the client; the share of
a core the client used is printed, and so is the source read directly, with no bridge. So is
each server's CPU time per MiB and per round trip: on a small machine that decides the result.

A benchmark reports and does not fail: the exit status is 0 whether goals are met or missed, and
non-zero only when the benchmark itself could not run.

    .venv/bin/python bench/console.py [--stream-mib 1024] [--rounds 7] [--echoes 1000]
        [--sessions 100] [--session-mib 8] [--start-rounds 5] [--parts throughput,latency,...] [--keep]
"""
import argparse
import base64
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid as uuidlib
from datetime import datetime, timezone
from http.cookiejar import CookieJar
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent  # .venv/bin when run as .venv/bin/python
BANNER = b"RFB 003.008\n"
MIB = 1 << 20
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
PARTS = ("throughput", "latency", "concurrency", "start")
CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark itself could not run (as opposed to a goal being missed)."""


def wait_until(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy; BenchError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")
        time.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def median_ms(values) -> float:
    return statistics.median(values) * 1e3


def percentile(values, p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


# -- the TCP source (a process of its own, so that it shares no GIL with the client) ------
def _recv_exactly(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _source_main(pipe) -> None:
    """Two listeners. stream: the banner, then for every 8-byte big-endian request that many
    bytes of random data. echo: the banner, then every byte back."""
    block = memoryview(os.urandom(MIB))  # incompressible

    def stream(sock: socket.socket) -> None:
        sock.sendall(BANNER)
        while (request := _recv_exactly(sock, 8)) is not None:
            left = int.from_bytes(request, "big")
            while left:
                n = min(left, len(block))
                sock.sendall(block[:n])
                left -= n

    def echo(sock: socket.socket) -> None:
        sock.sendall(BANNER)
        while data := sock.recv(65536):
            sock.sendall(data)

    def serve(sock: socket.socket, handler) -> None:
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                handler(sock)
            except OSError:
                pass

    def accept(listener: socket.socket, handler) -> None:
        while True:
            sock, _ = listener.accept()
            threading.Thread(target=serve, args=(sock, handler), daemon=True).start()

    ports = {}
    for name, handler in (("stream", stream), ("echo", echo)):
        listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
        threading.Thread(target=accept, args=(listener, handler), daemon=True).start()
        ports[name] = listener.getsockname()[1]
    pipe.send(ports)
    try:
        pipe.recv()  # until told to stop, or until the parent is gone
    except EOFError:
        pass


class Source:
    def __init__(self):
        ctx = multiprocessing.get_context("spawn")
        self._pipe, child = ctx.Pipe()
        self.process = ctx.Process(target=_source_main, args=(child,), name="bench-source", daemon=True)
        self.process.start()
        if not self._pipe.poll(30):
            raise BenchError("the TCP source did not start within 30 s")
        ports = self._pipe.recv()
        self.stream_port, self.echo_port = ports["stream"], ports["echo"]

    def stop(self) -> None:
        try:
            self._pipe.send("stop")
        except OSError:
            pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)


# -- the client ---------------------------------------------------------------------------
class Closed(Exception):
    def __init__(self, code: int | None, reason: str):
        super().__init__(f"closed by the server: {code} {reason}")
        self.code, self.reason = code, reason


class WSClient:
    """A minimal RFC 6455 client on a plain socket, the same for LIMEN and websockify.

    Reads go into one 1 MiB buffer; a payload is either kept (``read``: banners, echoes) or
    only counted (``drain``: throughput), so that the client costs little per byte."""

    RECV = MIB

    def __init__(self, port: int, path: str, origin: str | None, timeout: float = 30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            self._handshake(port, path, origin)
        except BaseException:
            self.sock.close()
            raise
        self.view = memoryview(bytearray(self.RECV))
        self.header = bytearray()  # a frame header split across reads
        self.left: int | None = None  # payload bytes still due in the current frame; None: a header
        self.control: bytearray | None = None  # the payload of a control frame being read
        self.data = bytearray()  # kept payload
        self.keep = True
        self.count = 0  # counted payload
        if self.rest:
            self._parse(memoryview(self.rest))

    def _handshake(self, port: int, path: str, origin: str | None) -> None:
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        key = base64.b64encode(os.urandom(16))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
                 "Connection: Upgrade", f"Sec-WebSocket-Key: {key.decode()}", "Sec-WebSocket-Version: 13"]
        if origin:
            lines.append(f"Origin: {origin}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            data = self.sock.recv(4096)
            if not data:
                raise BenchError(f"the server hung up during the WebSocket handshake: {head[:200]!r}")
            head += data
        head, self.rest = head.split(b"\r\n\r\n", 1)
        self.opened = time.perf_counter()  # the handshake is done: the WebSocket is open
        status = head.split(b"\r\n", 1)[0]
        if status.split(b" ")[1:2] != [b"101"]:
            raise BenchError(f"WebSocket handshake refused: {status!r}")
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if accept not in head:
            raise BenchError("WebSocket handshake: wrong Sec-WebSocket-Accept")

    # reading
    def _pump(self) -> None:
        n = self.sock.recv_into(self.view)
        if not n:
            raise Closed(None, "connection closed with no close frame")
        self._parse(self.view[:n])

    def _parse(self, mv: memoryview) -> None:
        pos, end = 0, len(mv)
        while pos < end:
            if self.left is None:
                if self.header:  # complete a header split across reads
                    self.header += mv[pos:pos + 14]
                    buf, from_header = self.header, len(self.header) - min(14, end - pos)
                else:
                    buf, from_header = mv[pos:pos + 14], 0
                if len(buf) < 2:
                    self.header = bytearray(buf)
                    return
                size, hlen = buf[1] & 0x7F, 2
                if buf[1] & 0x80:
                    raise BenchError("the server sent a masked frame")
                if size == 126:
                    hlen = 4
                elif size == 127:
                    hlen = 10
                if len(buf) < hlen:
                    self.header = bytearray(buf)
                    return
                if hlen > 2:
                    size = int.from_bytes(buf[2:hlen], "big")
                pos += hlen - from_header
                self.header = bytearray()
                opcode = buf[0] & 0x0F
                self.left = size
                self.control = bytearray([opcode]) if opcode >= 8 else None
            take = min(self.left, end - pos)
            if self.control is not None:
                self.control += mv[pos:pos + take]
            elif self.keep:
                self.data += mv[pos:pos + take]
            else:
                self.count += take
            pos += take
            self.left -= take
            if self.left == 0:
                self.left = None
                if self.control is not None:
                    control, self.control = self.control, None
                    self._on_control(control[0], bytes(control[1:]))

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == 8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            raise Closed(code, payload[2:].decode(errors="replace"))
        if opcode == 9:
            self._send_frame(0xA, payload)

    def read(self, size: int) -> bytes:
        self.keep = True
        while len(self.data) < size:
            self._pump()
        out = bytes(self.data[:size])
        del self.data[:size]
        return out

    def drain(self, size: int) -> None:
        """Receive ``size`` payload bytes and throw them away."""
        kept = min(size, len(self.data))
        del self.data[:kept]
        self.keep, self.count = False, kept
        try:
            while self.count < size:
                self._pump()
        finally:
            self.keep = True
        if self.count != size:
            raise BenchError(f"got {self.count} bytes where {size} were asked for")

    # writing
    def _send_frame(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        if n < 126:
            header = bytes([0x80 | opcode, 0x80 | n])
        elif n < 65536:
            header = bytes([0x80 | opcode, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
        masked = (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big") if n else b""
        self.sock.sendall(header + mask + masked)

    def send(self, payload: bytes) -> None:
        self._send_frame(0x2, payload)

    def close(self, timeout: float = 10.0) -> int | None:
        """Send a close frame and wait for the server's; returns the server's close code."""
        code = None
        try:
            self._send_frame(0x8, (1000).to_bytes(2, "big"))
            self.sock.settimeout(timeout)
            self.keep = False
            while True:
                self._pump()
        except Closed as e:
            code = e.code
        except OSError:
            pass
        finally:
            self.sock.close()
        return code


# -- processes ----------------------------------------------------------------------------
def proc_stat(pid: int) -> tuple[int, float]:
    """(parent pid, CPU seconds used) of a process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / CLK_TCK


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if proc_stat(int(entry))[0] == pid:
                    found.append(int(entry))
            except (OSError, IndexError):
                pass
    return found


def is_nginx(pid: int) -> bool:
    """Whether a child of gunicorn's master is LIMEN's nginx (the other is the worker)."""
    with open(f"/proc/{pid}/comm") as f:
        return f.read().strip() == "nginx"


def cpu_seconds(pids) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += proc_stat(pid)[1]
        except OSError:
            pass
    return total


def status_of(pid: int) -> dict:
    """RSS (KiB), threads and open fds of a process."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "Threads"):
                values[key] = int(value.split()[0])
    values["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    return values


def remove_pool(conn, pool_name: str) -> None:
    """Remove a storage pool the benchmark made: its volumes, its directory, its definition."""
    import libvirt

    try:
        pool = conn.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError:
        return
    try:
        if pool.isActive():
            pool.refresh(0)
            for vol in pool.listAllVolumes():
                vol.delete(0)
            pool.destroy()
        pool.delete(0)
        pool.undefine()
    except libvirt.libvirtError as e:
        print(f"cleanup: could not remove pool {pool_name}: {e.get_error_message()}", file=sys.stderr)


def stop_process(proc: subprocess.Popen, timeout: float = 35.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class Limen:
    """LIMEN served by gunicorn as ``make run`` serves it, with an instance folder of its own."""

    def __init__(self, workdir: Path, config: dict):
        self.instance = workdir / "instance"
        self.instance.mkdir(parents=True)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Every session of the concurrency part is the admin's: the console caps are raised.
        config = {"NETWORK": "none", "CONSOLES_PER_USER": 256, "CONSOLES_MAX": 256, **config,
                  "BIND": f"127.0.0.1:{self.port}"}
        (self.instance / "config.py").write_text("".join(f"{k} = {v!r}\n" for k, v in config.items()))
        self.log = workdir / "gunicorn.log"
        env = {**os.environ, "LIMEN_INSTANCE_PATH": str(self.instance)}
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until(self._healthy, 60, f"gunicorn on {self.base} to answer /healthz")
            self.worker = wait_until(lambda: [p for p in children(self.proc.pid) if not is_nginx(p)], 10,
                                     "gunicorn's worker process")[0]
            self._sign_in()
        except BaseException:
            self.stop()
            raise

    def _healthy(self) -> bool:
        if self.proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {self.proc.returncode}:\n{log_tail(self.log)}")
        try:
            return urllib.request.urlopen(f"{self.base}/healthz", timeout=5).status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _sign_in(self) -> None:
        self.http = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
        password = (self.instance / "initial-admin-password").read_text().strip()
        page = self.http.open(f"{self.base}/login", timeout=30).read().decode()
        form = urllib.parse.urlencode({"username": "admin", "password": password,
                                       "csrf_token": CSRF_RE.search(page).group(1)}).encode()
        index = self.http.open(f"{self.base}/login", data=form, timeout=30).read().decode()
        token = CSRF_RE.search(index)
        if token is None:
            raise BenchError("signing in as admin failed")
        self.csrf = token.group(1)

    def add_vm(self, vm_uuid: str, name: str, state: str) -> None:
        """The VM row that makes the domain the admin's (get_vm authorises by it)."""
        with sqlite3.connect(self.instance / "limen.sqlite", timeout=30) as db:
            owner = db.execute("SELECT id FROM user WHERE username = 'admin'").fetchone()[0]
            db.execute("INSERT INTO vm (uuid, name, owner_id, vcpus, memory_mib, disk_gib, state, created_at) "
                       "VALUES (?, ?, ?, 1, 128, 1, ?, ?)",
                       (vm_uuid, name, owner, state, datetime.now(timezone.utc).replace(tzinfo=None).isoformat(" ")))
        db.close()

    def query(self, sql: str, *args) -> list:
        db = sqlite3.connect(self.instance / "limen.sqlite", timeout=30)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    def pids(self) -> list[int]:
        """The processes that serve: gunicorn's worker, and nginx (its master and worker)."""
        nginx = [p for p in children(self.proc.pid) if is_nginx(p)]
        return [self.worker, *nginx, *(c for p in nginx for c in children(p))]

    def ticket_path(self, vm_uuid: str) -> str:
        """A fresh ticket: the WebSocket's path and query."""
        request = urllib.request.Request(f"{self.base}/vms/{vm_uuid}/console/ticket", data=b"", method="POST",
                                         headers={"X-CSRFToken": self.csrf, "Accept": "application/json"})
        body = json.loads(self.http.open(request, timeout=30).read())
        url = urllib.parse.urlsplit(body["ws_url"])
        return f"{url.path}?{url.query}"

    def open(self, vm_uuid: str, timeout: float = 60.0) -> WSClient:
        return WSClient(self.port, self.ticket_path(vm_uuid), origin=self.base, timeout=timeout)

    def stop(self) -> None:
        stop_process(self.proc)


class Websockify:
    def __init__(self, workdir: Path, target_port: int, name: str):
        exe = BIN / "websockify"
        if not exe.exists():
            raise BenchError(f"{exe} is missing: pip install -r requirements-bench.txt")
        self.port = free_port()
        self.origin = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"websockify-{name}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([str(exe), f"127.0.0.1:{self.port}", f"127.0.0.1:{target_port}"],
                                         stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            if self.proc.poll() is not None:
                raise BenchError(f"websockify exited with {self.proc.returncode}:\n{log_tail(self.log)}")
            return listening(self.port)

        wait_until(up, 30, f"websockify to listen on {self.port}")

    def open(self, timeout: float = 60.0) -> WSClient:
        return WSClient(self.port, "/", origin=self.origin, timeout=timeout)

    def handlers(self) -> list[int]:
        """The processes websockify forked for its open connections."""
        return children(self.proc.pid)

    def stop(self) -> None:
        stop_process(self.proc, 10)


# -- throughput ---------------------------------------------------------------------------
def stream_through(ws: WSClient, size: int, server_pids) -> tuple[float, float, float]:
    """(seconds, client CPU seconds, server CPU seconds) to receive ``size`` bytes."""
    if ws.read(len(BANNER)) != BANNER:
        raise BenchError("the source's banner did not come through")
    pids = server_pids()
    server0, client0, start = cpu_seconds(pids), time.thread_time(), time.perf_counter()
    ws.send(size.to_bytes(8, "big"))
    ws.drain(size)
    wall, client = time.perf_counter() - start, time.thread_time() - client0
    return wall, client, cpu_seconds(pids) - server0


def stream_direct(port: int, size: int) -> float:
    """Seconds to read ``size`` bytes from the source itself: the ceiling for both bridges."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        if _recv_exactly(sock, len(BANNER)) != BANNER:
            raise BenchError("the source sent no banner")
        buf = memoryview(bytearray(MIB))
        start = time.perf_counter()
        sock.sendall(size.to_bytes(8, "big"))
        got = 0
        while got < size:
            n = sock.recv_into(buf)
            if not n:
                raise BenchError("the source hung up")
            got += n
        return time.perf_counter() - start


def throughput(limen: Limen, wsfy: Websockify, vm_uuid: str, source: Source, args) -> dict:
    size = args.stream_mib * MIB
    sides = {
        "LIMEN": (lambda: limen.open(vm_uuid), limen.pids),
        "websockify": (wsfy.open, wsfy.handlers),
    }
    for opener, pids in sides.values():  # warm-up, not counted
        ws = opener()
        stream_through(ws, min(size, 32 * MIB), pids)
        ws.close()
    results = {name: {"wall": [], "client": [], "server": []} for name in sides}
    direct = []
    for i in range(args.rounds):
        order = list(sides.items()) if i % 2 == 0 else list(sides.items())[::-1]
        for name, (opener, pids) in order:
            ws = opener()
            try:
                wall, client, server = stream_through(ws, size, pids)
            finally:
                ws.close()
            r = results[name]
            r["wall"].append(wall)
            r["client"].append(client / wall)
            r["server"].append(server / (size / MIB))
        direct.append(stream_direct(source.stream_port, size))
    out = {}
    for name, r in results.items():
        out[name] = {"mib_s": size / MIB / statistics.median(r["wall"]),
                     "client_busy": statistics.median(r["client"]),
                     "server_ms_per_mib": statistics.median(r["server"]) * 1e3,
                     "all_mib_s": [round(size / MIB / w) for w in r["wall"]]}
    out["direct_mib_s"] = size / MIB / statistics.median(direct)
    return out


# -- latency ------------------------------------------------------------------------------
def round_trip(ws: WSClient) -> float:
    message = os.urandom(16)
    start = time.perf_counter()
    ws.send(message)
    echoed = ws.read(16)
    elapsed = time.perf_counter() - start
    if echoed != message:
        raise BenchError(f"the echo came back wrong: {echoed!r} for {message!r}")
    return elapsed


def latency(limen: Limen, wsfy: Websockify, vm_uuid: str, args) -> dict:
    """Round trips taken in turns, one through each side, so that both see the same machine."""
    conns = {}
    try:
        conns["LIMEN"] = limen.open(vm_uuid)
        conns["websockify"] = wsfy.open()
        for ws in conns.values():
            if ws.read(len(BANNER)) != BANNER:
                raise BenchError("the echo source's banner did not come through")
            for _ in range(100):  # warm-up
                round_trip(ws)
        pids = {"LIMEN": limen.pids(), "websockify": wsfy.handlers()}
        times = {name: [] for name in conns}
        cpu = {name: cpu_seconds(p) for name, p in pids.items()}
        for i in range(args.echoes):
            order = list(conns.items()) if i % 2 == 0 else list(conns.items())[::-1]
            for name, ws in order:
                times[name].append(round_trip(ws))
        cpu = {name: cpu_seconds(p) - cpu[name] for name, p in pids.items()}
    finally:
        for ws in conns.values():
            ws.close()
    return {name: {"p50": statistics.median(t), "p99": percentile(t, 0.99), "cpu": cpu[name] / len(t)}
            for name, t in times.items()}


# -- concurrency --------------------------------------------------------------------------
def steady(pid: int, timeout: float = 15.0) -> dict:
    """The worker's status once its thread count stops moving (no session winding down)."""
    previous = {}

    def settled():
        nonlocal previous
        current = status_of(pid)
        done = previous.get("Threads") == current["Threads"] and previous.get("fds") == current["fds"]
        previous = current
        if not done:
            time.sleep(0.2)
        return current if done else None

    return wait_until(settled, timeout, "the LIMEN worker to settle")


def session_batch(limen: Limen, vm_uuid: str, n: int, size: int) -> dict:
    """``n`` console sessions opened at once, then all streaming ``size`` bytes at once, then
    closed by the client. Returns failures, the worker's status before, with all open, at its
    peak and after, and what LIMEN recorded for each session."""
    before = steady(limen.worker)
    (recorded_before,) = limen.query("SELECT count(*) FROM console_session")[0]
    paths = [limen.ticket_path(vm_uuid) for _ in range(n)]
    lock = threading.Condition()
    opened, failures, go = [0], [], threading.Event()

    def session(path: str) -> None:
        ws, counted = None, False
        try:
            ws = WSClient(limen.port, path, origin=limen.base, timeout=120)
            if ws.read(len(BANNER)) != BANNER:
                raise BenchError("no banner")
            with lock:
                opened[0] += 1
                counted = True
                lock.notify_all()
            if not go.wait(120):
                raise BenchError("never told to go")
            ws.send(size.to_bytes(8, "big"))
            ws.drain(size)
            code, ws = ws.close(), None
            if code != 1000:
                raise BenchError(f"LIMEN answered the close with {code}")
        except Exception as e:  # every failure is counted and shown
            with lock:
                failures.append(repr(e))
                if not counted:
                    opened[0] += 1  # accounted for, so that the wait below ends
                lock.notify_all()
            if ws is not None:
                ws.sock.close()

    threads = [threading.Thread(target=session, args=(p,), daemon=True) for p in paths]
    start = time.perf_counter()
    for t in threads:
        t.start()
    with lock:
        if not lock.wait_for(lambda: opened[0] >= n, 120):
            raise BenchError(f"only {opened[0]} of {n} console sessions opened within 120 s")
    open_s = time.perf_counter() - start
    all_open = status_of(limen.worker)
    peak = dict(all_open)
    go.set()
    stream_start = time.perf_counter()
    deadline = time.monotonic() + 300
    while any(t.is_alive() for t in threads):
        if time.monotonic() > deadline:
            raise BenchError("console sessions still streaming after 300 s")
        peak = {k: max(v, status_of(limen.worker)[k]) for k, v in peak.items()}
        time.sleep(0.05)
    stream_s = time.perf_counter() - stream_start

    def recorded():
        rows = limen.query("SELECT end, bytes_to_client FROM console_session ORDER BY id")[recorded_before:]
        return rows if len(rows) >= n and all(r[0] for r in rows) else None

    try:
        rows = wait_until(recorded, 30, "LIMEN to record the end of every session")
    except BenchError as e:
        rows, failures = [], failures + [str(e)]
    wrong = [r for r in rows if r != ("CLIENT_CLOSED", size + len(BANNER))]
    return {"failures": failures, "recorded_wrong": wrong, "open_s": open_s,
            "mib_s": n * size / MIB / stream_s, "before": before, "all_open": all_open, "peak": peak,
            "after": steady(limen.worker, 30)}


def concurrency(limen: Limen, vm_uuid: str, args) -> tuple[dict, dict]:
    """Two batches. The first, from a worker that has served one session at a time, measures
    memory per session; the second, from a worker whose thread pool and database connections
    have grown already, shows whether anything stays behind per session (a leak)."""
    warm = limen.open(vm_uuid)
    stream_through(warm, MIB, lambda: [])
    warm.close()
    first = session_batch(limen, vm_uuid, args.sessions, args.session_mib * MIB)
    second = session_batch(limen, vm_uuid, args.sessions, args.session_mib * MIB)
    return first, second


# -- time to console ----------------------------------------------------------------------
def time_to_console(workdir: Path, args) -> dict:
    import libvirt

    sys.path.insert(0, str(ROOT))
    from limen.hypervisor.domain_xml import guest_choice

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as e:
        raise BenchError(f"time to console needs qemu:///system: {e.get_error_message()}") from None
    tag = secrets.token_hex(3)
    name, pool_name, pool_dir = f"limen-bench-{tag}", f"limen-bench-{tag}", f"/var/lib/limen/bench-{tag}"
    dom = limen = None
    try:
        domain_type, arch = guest_choice(conn.getCapabilities())
        dom = conn.defineXML(
            f"<domain type='{domain_type}'><name>{name}</name><memory unit='MiB'>128</memory><vcpu>1</vcpu>"
            f"<os><type arch='{arch}'>hvm</type></os><on_poweroff>destroy</on_poweroff>"
            "<devices><graphics type='vnc' port='-1' autoport='yes'><listen type='address' address='127.0.0.1'/>"
            "</graphics><video><model type='vga'/></video></devices></domain>")
        vm_uuid = dom.UUIDString()
        limen = Limen(workdir / "qemu", {"LIBVIRT_URI": "qemu:///system", "STORAGE_POOL": pool_name,
                                         "STORAGE_DIR": pool_dir})
        limen.add_vm(vm_uuid, name, "shutoff")

        def off():
            if dom.isActive():
                dom.destroy()
            wait_until(lambda: dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF, 30, f"{name} to be shut off")

        def limen_idle():
            active = limen.query("SELECT count(*) FROM operation WHERE vm_uuid = ? AND state IN "
                                 "('pending', 'running')", vm_uuid)[0][0]
            return active == 0

        bare, console = [], []
        for i in range(args.start_rounds + 1):  # the first round warms both up and is not counted
            off()
            start = time.perf_counter()
            dom.create()
            elapsed = time.perf_counter() - start
            if i:
                bare.append(elapsed)
            off()
            wait_until(limen_idle, 30, "LIMEN to finish its operations on the VM")
            ws = limen.open(vm_uuid, timeout=60)
            try:
                first = ws.read(1)
                elapsed = time.perf_counter() - ws.opened
                rest = ws.read(len(BANNER) - 1)
                if first + rest != BANNER:
                    raise BenchError(f"the console began with {first + rest!r}, not an RFB banner")
            finally:
                ws.close()
            if i:
                console.append(elapsed)
            wait_until(limen_idle, 30, "LIMEN's start to finish")
        off()
        return {"type": domain_type, "bare": bare, "console": console}
    finally:
        if limen is not None:
            limen.stop()
        if dom is not None:
            try:
                if dom.isActive():
                    dom.destroy()
                dom.undefine()
            except libvirt.libvirtError as e:
                print(f"cleanup: could not remove domain {name}: {e.get_error_message()}", file=sys.stderr)
        remove_pool(conn, pool_name)
        conn.close()


# -- the run ------------------------------------------------------------------------------
def node_xml(domains: list[tuple[str, str, int]]) -> str:
    """A test-driver node whose domains run, each with the VNC display at ``port``."""
    return "<node>" + "".join(
        f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid><memory>65536</memory><vcpu>1</vcpu>"
        f"<os><type>hvm</type></os><devices><graphics type='vnc' port='{port}' autoport='no' listen='127.0.0.1'/>"
        "</devices></domain>" for name, uuid, port in domains) + "</node>"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def run(args, tmp: Path) -> None:
    parts = set(args.parts.split(","))
    if parts - set(PARTS):
        raise BenchError(f"unknown parts {sorted(parts - set(PARTS))}; choose from {','.join(PARTS)}")
    print(f"console bridge: LIMEN (gunicorn gthread, 1 worker) against websockify 0.13, on 127.0.0.1, {os.cpu_count()} CPUs")
    sys.stdout.flush()
    if parts & {"throughput", "latency", "concurrency"}:
        source = Source()
        limen = stream_ws = echo_ws = None
        try:
            stream_vm, echo_vm = str(uuidlib.uuid4()), str(uuidlib.uuid4())
            (tmp / "node.xml").write_text(node_xml([("bench-stream", stream_vm, source.stream_port),
                                                    ("bench-echo", echo_vm, source.echo_port)]))
            limen = Limen(tmp / "test", {"LIBVIRT_URI": f"test://{tmp}/node.xml", "STORAGE_DIR": str(tmp / "pool")})
            limen.add_vm(stream_vm, "bench-stream", "running")
            limen.add_vm(echo_vm, "bench-echo", "running")
            stream_ws = Websockify(tmp, source.stream_port, "stream")
            echo_ws = Websockify(tmp, source.echo_port, "echo")

            if "throughput" in parts:
                t = throughput(limen, stream_ws, stream_vm, source, args)
                lim, ref = t["LIMEN"], t["websockify"]
                ratio = lim["mib_s"] / ref["mib_s"]
                print(f"  throughput      LIMEN {lim['mib_s']:7.1f} MiB/s   websockify {ref['mib_s']:7.1f} MiB/s"
                      f"   ratio {ratio:.2f}x   goal >= 1.0x: {verdict(ratio >= 1.0)}")
                print(f"                  (medians of {args.rounds} alternating rounds of {args.stream_mib} MiB;"
                      f" rounds: LIMEN {lim['all_mib_s']}, websockify {ref['all_mib_s']})")
                print(f"                  server CPU per MiB: LIMEN {lim['server_ms_per_mib']:.2f} ms,"
                      f" websockify {ref['server_ms_per_mib']:.2f} ms;"
                      f" client busy {lim['client_busy']:.0%} / {ref['client_busy']:.0%} of a core;"
                      f" the source read directly: {t['direct_mib_s']:.0f} MiB/s")
                sys.stdout.flush()
            if "latency" in parts:
                lat = latency(limen, echo_ws, echo_vm, args)
                lim, ref = lat["LIMEN"], lat["websockify"]
                ratio = lim["p50"] / ref["p50"]
                print(f"  echo latency    LIMEN p50 {lim['p50'] * 1e6:6.0f} µs p99 {lim['p99'] * 1e6:6.0f} µs"
                      f"   websockify p50 {ref['p50'] * 1e6:6.0f} µs p99 {ref['p99'] * 1e6:6.0f} µs"
                      f"   ratio of p50s {ratio:.2f}x   goal <= 1.0x: {verdict(ratio <= 1.0)}")
                print(f"                  ({args.echoes} round trips of 16 bytes each, taken in turns;"
                      f" server CPU per round trip: LIMEN {lim['cpu'] * 1e6:.0f} µs, websockify {ref['cpu'] * 1e6:.0f} µs)")
                sys.stdout.flush()
            if "concurrency" in parts:
                first, second = concurrency(limen, stream_vm, args)
                n = args.sessions
                failed = [f for c in (first, second) for f in c["failures"]]
                wrong = [w for c in (first, second) for w in c["recorded_wrong"]]
                base = first["before"]["VmRSS"]
                print(f"  concurrency     2 x {n} sessions x {args.session_mib} MiB at once: {len(failed)} failed,"
                      f" {len(wrong)} recorded wrongly   goal none fails: {verdict(not failed and not wrong)}")
                print(f"                  worker memory per session: {(first['peak']['VmRSS'] - base) / n:.0f} KiB"
                      f" ({(first['all_open']['VmRSS'] - base) / n:.0f} KiB with all open, before streaming);"
                      f" RSS {base / 1024:.1f} MiB -> {first['all_open']['VmRSS'] / 1024:.1f} open ->"
                      f" {first['peak']['VmRSS'] / 1024:.1f} peak -> {first['after']['VmRSS'] / 1024:.1f} after")
                print(f"                  opened in {first['open_s']:.2f} s / {second['open_s']:.2f} s,"
                      f" streamed {first['mib_s']:.0f} / {second['mib_s']:.0f} MiB/s in all;"
                      f" worker threads {first['before']['Threads']} -> {first['all_open']['Threads']} open")
                growth = {k: second["after"][k] - second["before"][k] for k in ("Threads", "fds", "VmRSS")}
                leak = growth["Threads"] >= n // 10 or growth["fds"] >= n // 10  # a few come and go
                print(f"                  second batch, from the grown pools: threads {second['before']['Threads']} ->"
                      f" {second['after']['Threads']}, fds {second['before']['fds']} -> {second['after']['fds']},"
                      f" RSS {growth['VmRSS'] / n:+.1f} KiB per session"
                      f"   {'LEAK: threads or fds stayed behind' if leak else 'nothing left behind'}")
                for failure in sorted(set(failed))[:5]:
                    print(f"                  failure: {failure}")
                for row in wrong[:5]:
                    print(f"                  recorded: {row}")
                sys.stdout.flush()
        finally:
            for server in (stream_ws, echo_ws, limen):
                if server is not None:
                    server.stop()
            source.stop()
    if "start" in parts:
        s = time_to_console(tmp, args)
        bare, console = median_ms(s["bare"]), median_ms(s["console"])
        overhead = console - bare
        print(f"  time to console {console:6.0f} ms (WebSocket open -> first RFB byte) - {bare:.0f} ms"
              f" (bare virDomainCreate) = {overhead:.0f} ms   goal <= 150 ms: {verdict(overhead <= 150)}")
        print(f"                  (medians of {args.start_rounds} rounds, {s['type']} domain; console"
              f" {[round(x * 1e3) for x in s['console']]} ms, bare {[round(x * 1e3) for x in s['bare']]} ms)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-mib", type=int, default=1024, help="MiB per throughput measurement")
    parser.add_argument("--rounds", type=int, default=7, help="throughput rounds for each side")
    parser.add_argument("--echoes", type=int, default=1000, help="round trips for each side")
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--session-mib", type=int, default=8, help="bytes each concurrent session streams")
    parser.add_argument("--start-rounds", type=int, default=5)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"a subset of {','.join(PARTS)}")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) afterwards")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # so that every finally cleans up

    tmp = Path(tempfile.mkdtemp(prefix="limen-bench-"))
    started = time.monotonic()
    try:
        run(args, tmp)
    except BenchError as e:
        print(f"the benchmark could not run: {e}\n(logs in {tmp})", file=sys.stderr)
        args.keep = True
        return 1
    except Exception:
        print(f"the benchmark could not run (logs in {tmp}):", file=sys.stderr)
        args.keep = True
        raise
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"  ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
