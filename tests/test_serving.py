"""What `make run` serves: gunicorn with gunicorn.conf.py, configured from the environment and
the instance folder (fast tier: the test driver behind a real HTTP server)."""
import json
import os
import sqlite3
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from http.cookiejar import CookieJar
from pathlib import Path

import pytest

from helpers import CSRF_RE, Reader, close_code, open_console, wait_until

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def serve(tmp_path):
    """Start gunicorn as `make run` does, on a node file with the given domains."""
    procs = []

    def start(domains: str = ""):
        port = _free_port()
        instance = tmp_path / "instance"
        instance.mkdir()
        # instance/config.py sets the hypervisor; the environment overrides its network.
        (instance / "config.py").write_text(f'LIBVIRT_URI = "test://{tmp_path}/node.xml"\n'
                                            f'NETWORK = "lan"\nBIND = "127.0.0.1:{port}"\n')
        (tmp_path / "node.xml").write_text(f"<node>{domains}</node>")
        env = {**os.environ, "LIMEN_INSTANCE_PATH": str(instance),
               "LIMEN_STORAGE_DIR": str(tmp_path / "pool"), "LIMEN_NETWORK": "none"}
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "app:app"],
                                cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        base = f"http://127.0.0.1:{port}"

        def healthy():
            try:
                return urllib.request.urlopen(f"{base}/healthz", timeout=2).status == 200
            except (urllib.error.URLError, ConnectionError):
                assert proc.poll() is None, proc.stdout.read()
                return False

        wait_until(healthy, 30, "gunicorn to answer /healthz")
        return base, instance

    start.procs = procs
    yield start
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=30)


def _sign_in(base, instance):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()))
    page = opener.open(f"{base}/login").read().decode()
    password = (instance / "initial-admin-password").read_text().strip()
    data = f"username=admin&password={password}&csrf_token={CSRF_RE.search(page).group(1)}".encode()
    index = opener.open(f"{base}/login", data=data).read().decode()
    assert "New VM" in index
    return opener, CSRF_RE.search(index).group(1)


def test_gunicorn_serves_limen_and_runs_its_background_work(serve):
    base, instance = serve()
    opener, token = _sign_in(base, instance)
    form = f"name=served&vcpus=1&memory_mib=64&disk_gib=1&csrf_token={token}".encode()
    opener.open(f"{base}/vms", data=form)

    def running():
        rows = opener.open(f"{base}/vms/rows").read().decode()
        return re.search(r'data-name="served" data-state="running"', rows)

    wait_until(running, 10, "the VM to run (the worker's background threads)")
    # Only LIMEN's user reads what the instance folder holds: password hashes, the secret key.
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [instance, *instance.iterdir()]}
    assert modes == {"instance": "0o700", "limen.sqlite": "0o600", "limen.sqlite-wal": "0o600",
                     "limen.sqlite-shm": "0o600", "secret_key": "0o600", "initial-admin-password": "0o600",
                     "gunicorn.ctl": "0o600",  # gunicorn's control socket: this instance's own
                     "gunicorn.sock": "0o700", "front": "0o700",  # gunicorn's socket for nginx; nginx's files
                     **{k: v for k, v in modes.items() if k.endswith(".py")}}


def test_forwarded_headers_are_believed_only_from_trusted_proxies(serve):
    """With LIMEN_TRUSTED_PROXIES=0 (the default) a client on 127.0.0.1 cannot claim https or
    another host through X-Forwarded-*: the links LIMEN builds keep what the request was."""
    base, _instance = serve()
    request = urllib.request.Request(f"{base}/api/v1/openapi.json", headers={
        "X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"})
    server = json.load(urllib.request.urlopen(request, timeout=10))["servers"][0]["url"]
    assert server == f"{base}/api/v1"
    # The address LIMEN records is the client's, as nginx saw it, whatever the client claims.
    request = urllib.request.Request(f"{base}/api/v1/auth/tokens", method="POST", headers={
        "X-Forwarded-For": "203.0.113.9", "Content-Type": "application/json"},
        data=json.dumps({"username": "admin", "password": "wrong", "name": "x"}).encode())
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    with sqlite3.connect(_instance / "limen.sqlite") as db:
        assert db.execute("SELECT ip FROM audit_event WHERE result != 'ok'").fetchall() == [("127.0.0.1",)]


def test_slow_and_oversized_requests_are_nginxs_to_hold(serve):
    """A request that stops halfway through its headers is held by nginx, which ends it after
    its header deadline, while pages answer; a body over the limit is refused from its
    Content-Length (413), before any of it is sent."""
    base, _instance = serve()
    port = int(base.rsplit(":", 1)[1])
    slow = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
    for s in slow:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ in range(5):
        assert urllib.request.urlopen(f"{base}/healthz", timeout=5).status == 200
    with socket.create_connection(("127.0.0.1", port)) as big:
        big.sendall(b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 209715200\r\n\r\n")
        big.settimeout(10)
        assert big.recv(4096).startswith(b"HTTP/1.1 413 ")
    slow[0].settimeout(30)  # the header deadline is 10 s
    assert slow[0].recv(4096) == b"", "nginx ends a request whose headers never end"
    for s in slow:
        s.close()


def test_a_database_an_older_limen_left_readable_is_made_private(make_app, node_xml, tmp_path, database_template):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    (instance / "limen.sqlite").write_bytes(database_template.read_bytes())
    (instance / "limen.sqlite").chmod(0o644)
    make_app(LIBVIRT_URI=f"test://{node_xml}")
    assert oct(instance.stat().st_mode & 0o777) == "0o700"
    assert oct((instance / "limen.sqlite").stat().st_mode & 0o777) == "0o600"


def _console_ticket(serve, stub) -> tuple[str, dict]:
    """LIMEN served with one domain whose display is the stub, and a console ticket for it."""
    uuid = "6f1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
    base, instance = serve(
        f"<domain type='test'><name>screen</name><uuid>{uuid}</uuid><memory>65536</memory>"
        f"<os><type>hvm</type></os><devices><graphics type='vnc' port='{stub.port}' "
        f"autoport='no' listen='127.0.0.1'/></devices></domain>")
    with sqlite3.connect(instance / "limen.sqlite") as db:  # LIMEN adopts the domain
        db.execute("INSERT INTO vm (uuid, name, owner_id, vcpus, memory_mib, disk_gib, state, created_at)"
                   " VALUES (?, 'screen', 1, 1, 64, 1, 'shutoff', '2026-01-01 00:00:00')", (uuid,))
    opener, token = _sign_in(base, instance)
    request = urllib.request.Request(f"{base}/vms/{uuid}/console/ticket", method="POST",
                                     headers={"X-CSRFToken": token, "Accept": "application/json"})
    return base, json.load(opener.open(request))


def test_the_console_websocket_works_through_gunicorn(serve, stub):
    """flask-sock under gunicorn's threads, behind nginx: a console opens, bridges and closes
    cleanly."""
    base, ticket = _console_ticket(serve, stub)
    assert ticket["ws_url"].startswith(f"ws{base.removeprefix('http')}/")
    ws = open_console(ticket["ws_url"], origin=base)
    reader = Reader(ws)
    assert reader.read(12) == b"RFB 003.008\n"
    ws.send(b"ping" * 1000)
    assert reader.read(4000) == b"ping" * 1000
    ws.close()
    assert close_code(open_console(ticket["ws_url"], origin=base)) == (4401, "TICKET_INVALID")


def test_stopping_limen_tells_the_open_consoles(serve, stub):
    """A graceful stop (SIGTERM to gunicorn, as a service manager sends it): each open console
    gets 1001 LIMEN_STOPPING, for its page to offer to reconnect, before the connection goes."""
    base, ticket = _console_ticket(serve, stub)
    ws = open_console(ticket["ws_url"], origin=base)
    assert Reader(ws).read(12) == b"RFB 003.008\n"
    serve.procs[-1].terminate()
    assert close_code(ws, timeout=20) == (1001, "LIMEN_STOPPING")
    assert serve.procs[-1].wait(timeout=30) == 0


def test_configuration_precedence(tmp_path, monkeypatch):
    """Defaults < instance/config.py < LIMEN_* environment < test_config."""
    from limen import create_app

    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text('NETWORK = "lan"\nSTORAGE_POOL = "fast"\nWORKERS = 2\n')
    monkeypatch.setenv("LIMEN_STORAGE_POOL", "from-env")
    monkeypatch.setenv("LIMEN_WORKERS", "6")
    app = create_app({"INSTANCE_PATH": str(instance), "INITIAL_ADMIN": False, "WORKERS": 8})
    assert app.config["NETWORK"] == "lan"
    assert app.config["STORAGE_POOL"] == "from-env"
    assert app.config["WORKERS"] == 8
    assert app.config["LIBVIRT_URI"] == "qemu:///system"
    assert (instance / "secret_key").stat().st_mode & 0o777 == 0o600
    assert app.config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{instance}/limen.sqlite"
