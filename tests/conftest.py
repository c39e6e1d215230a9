"""Fixtures shared by the three tiers.

fast    libvirt's test driver, one node file per test (``test:///<tmp>/node.xml``)
qemu    the real libvirtd on qemu:///system, in a storage pool of the test's own
browser headless Chromium (Debian's /usr/bin/chromium) through Playwright, against a live server

``make test`` sets LIMEN_REQUIRE_ALL_TIERS=1: then a tier that ran no test, or any skipped
test, fails the run.
"""
import os
import re
import secrets
import shutil
import time
from html.parser import HTMLParser
from collections import Counter
from pathlib import Path

import pytest

from limen import create_app, runtime

TIERS = ("fast", "qemu", "browser")
# Passwords are hashed with a cheap method in every LIMEN the tests start, in this process and
# in the servers and commands it starts (they inherit the environment); scrypt costs ~0.1 s.
# tests/test_hashing.py proves that LIMEN itself uses scrypt.
CHEAP_HASH = "pbkdf2:sha256:1"
os.environ.setdefault("LIMEN_PASSWORD_HASH_METHOD", CHEAP_HASH)
_STARTED = time.monotonic()


# -- helpers ------------------------------------------------------------------------------
def wait_until(predicate, timeout: float = 10.0, what: str = "the condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browserless:
    """A signed-in HTTP client, speaking as htmx does (HX-Request and the CSRF header)."""

    def __init__(self, client):
        self.client = client
        self.csrf = None

    def login(self, username: str, password: str):
        page = self.client.get("/login")
        token = CSRF_RE.search(page.text).group(1)
        response = self.client.post("/login", data={
            "username": username, "password": password, "csrf_token": token})
        if response.status_code == 302:
            self.csrf = CSRF_RE.search(self.client.get("/").text).group(1)
        return response

    def htmx_post(self, url: str, data: dict | None = None):
        return self.client.post(url, data=data or {}, headers={
            "HX-Request": "true", "X-CSRFToken": self.csrf})

    def create(self, **fields):
        form = {"vcpus": "1", "memory_mib": "64", "disk_gib": "1", **fields}
        return self.htmx_post("/vms", form)

    def rows(self) -> str:
        return self.client.get("/vms/rows", headers={"HX-Request": "true"}).text

    def row_state(self, name: str) -> str | None:
        """The state the table shows for VM ``name`` (None when it has no row)."""
        row = find_row(self.rows(), name)
        return row.attrs["data-state"] if row else None

    def wait_state(self, name: str, state: str | None, timeout: float = 10.0) -> None:
        """Wait until the row of ``name`` shows ``state`` (None: no row) and no step of an
        action; an ``error`` row that was not asked for fails at once, with its reason."""

        def reached():
            current = self.row_state(name)
            if current == "error" and state != "error":
                raise AssertionError(f"{name} went to error: {self.row_html(name)}")
            return current == state and 'class="step"' not in self.row_html(name)

        wait_until(reached, timeout, f"{name} to show {state}, with no action under way")

    def create_stopped(self, app, name: str) -> str:
        """Create a VM, let it come up, force it off; returns its UUID (real libvirtd)."""
        assert self.create(name=name, memory_mib="128").status_code == 201
        self.wait_state(name, "running", 60)
        vm_uuid = uuid_of(app, name)
        assert self.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
        self.wait_state(name, "shutoff", 30)
        return vm_uuid

    def row_html(self, name: str) -> str:
        row = find_row(self.rows(), name)
        return row.html if row else ""


class Row:
    """One table row as found in markup: its attributes and its own HTML."""

    def __init__(self, attrs: dict, html: str):
        self.attrs, self.html = attrs, html

    @property
    def cells(self) -> list[str]:
        """The text of each of its cells."""
        parser = _Cells()
        parser.feed(self.html)
        return [" ".join("".join(cell).split()) for cell in parser.cells]


class _Cells(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.cells: list[list[str]] = []
        self._open = False

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self.cells.append([])
            self._open = True

    def handle_endtag(self, tag):
        if tag == "td":
            self._open = False

    def handle_data(self, data):
        if self._open:
            self.cells[-1].append(data)


class _RowFinder(HTMLParser):
    """Finds the <tr> whose ``attr`` is ``name`` with Python's HTML parser, and where it ends."""

    def __init__(self, name: str, attr: str):
        super().__init__(convert_charrefs=True)
        self.name, self.attr, self.attrs, self.start, self.end, self._depth = name, attr, None, None, None, 0

    def handle_starttag(self, tag, attrs):
        if tag != "tr":
            return
        if self.start is not None and self.end is None:
            self._depth += 1
        elif self.start is None and dict(attrs).get(self.attr) == self.name:
            self.attrs, self.start = dict(attrs), self.getpos()

    def handle_endtag(self, tag):
        if tag != "tr" or self.start is None or self.end is not None:
            return
        if self._depth:
            self._depth -= 1
        else:
            line, col = self.getpos()
            self.end = (line, col + len("</tr>"))


def find_row(markup: str, name: str, attr: str = "data-name") -> Row | None:
    """The row of VM ``name`` (or whose ``attr`` is ``name``) in a table's markup, or None."""
    finder = _RowFinder(name, attr)
    finder.feed(markup)
    finder.close()
    if finder.start is None or finder.end is None:
        return None
    lines = markup.splitlines(keepends=True)

    def offset(pos: tuple[int, int]) -> int:
        return sum(len(line) for line in lines[: pos[0] - 1]) + pos[1]

    return Row(finder.attrs, markup[offset(finder.start):offset(finder.end)])


def uuid_of(app, name: str) -> str:
    from limen.models import VM
    from limen.extensions import db
    from sqlalchemy import select

    with app.app_context():
        return db.session.scalar(select(VM.uuid).where(VM.name == name))


def add_user(app, username: str, password: str, role: str = "user", **quota):
    """A user straight in the database; ``quota`` sets quota_vms=… and the like."""
    from limen.extensions import db
    from limen.models import User

    with app.app_context():
        user = User(username=username, role=role, **quota)
        user.set_password(password)
        db.session.add(user)
        db.session.commit()


def signed_in(app, username: str, password: str, **environ) -> "Browserless":
    """A new client signed in as ``username``; ``environ`` (REMOTE_ADDR=…) applies to it."""
    b = Browserless(app.test_client())
    b.client.environ_base.update(environ)
    response = b.login(username, password)
    assert response.status_code == 302, response.text
    return b


# -- app fixtures -------------------------------------------------------------------------
@pytest.fixture(scope="session")
def database_template(tmp_path_factory) -> Path:
    """A database the migrations have built once (and with no user yet): each test's LIMEN
    starts from a copy. tests/test_schema.py builds and upgrades databases of its own."""
    from limen.extensions import db

    instance = tmp_path_factory.mktemp("template")
    app = create_app({"TESTING": True, "INSTANCE_PATH": str(instance), "INITIAL_ADMIN": False,
                      "LIBVIRT_URI": "test:///default"})
    with app.app_context():
        db.engine.dispose()  # the last connection closes: SQLite folds its WAL into the file
    path = instance / "limen.sqlite"
    assert not (instance / "limen.sqlite-wal").exists(), "the template is one file"
    return path


def start_app(root: Path, database_template: Path, **config):
    """Build and start a LIMEN app in ``root`` with config overrides (the caller stops it). A
    new instance folder starts with a copy of the migrated template database."""
    instance = Path(config.get("INSTANCE_PATH", root / "instance"))
    if "DATABASE_URL" not in config and not (instance / "limen.sqlite").exists():
        instance.mkdir(parents=True, exist_ok=True)
        shutil.copy(database_template, instance / "limen.sqlite")
    # Tests sign in often from one address; the rate-limit tests ask for the real limits.
    cfg = {"TESTING": True, "INSTANCE_PATH": str(root / "instance"),
           "STORAGE_DIR": str(root / "pool"), "MEDIA_DIR": str(root / "media"), "NETWORK": "none",
           "LOGIN_LIMIT_PER_IP": "1000 per minute", "LOGIN_LIMIT_PER_USERNAME": "1000 per minute",
           **config}
    app = create_app(cfg)
    runtime.start(app)
    return app


@pytest.fixture
def make_app(tmp_path, database_template):
    """Build and start a LIMEN app with config overrides (see start_app); stopped at teardown."""
    apps = []

    def make(**config):
        app = start_app(tmp_path, database_template, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        runtime.stop(app)


@pytest.fixture
def node_xml(tmp_path) -> Path:
    """A private test-driver node: 16 CPUs, 3 GiB, no domains."""
    path = tmp_path / "node.xml"
    path.write_text("<node/>")
    return path


@pytest.fixture
def app(make_app, node_xml):
    return make_app(LIBVIRT_URI=f"test://{node_xml}")


def admin_password(app) -> str:
    return (Path(app.instance_path) / "initial-admin-password").read_text().strip()


@pytest.fixture
def anon(app):
    return Browserless(app.test_client())


@pytest.fixture
def admin(app):
    b = Browserless(app.test_client())
    assert b.login("admin", admin_password(app)).status_code == 302
    return b


@pytest.fixture
def libvirt_conn(app):
    """LIMEN's own connection, for acting behind LIMEN's back on the test driver (a second
    connection to the same node file would be a separate, private node)."""
    return runtime.get(app).hypervisor.connection.get()


# -- the tier guard -----------------------------------------------------------------------
_outcomes: Counter = Counter()


def _tier(item) -> str:
    for tier in ("browser", "qemu"):
        if item.get_closest_marker(tier):
            return tier
    return "fast"


def pytest_collection_modifyitems(items):
    for item in items:
        item.user_properties.append(("tier", _tier(item)))


def pytest_runtest_logreport(report):
    tier = dict(report.user_properties).get("tier", "fast")
    if report.skipped:
        _outcomes[(tier, "skipped")] += 1
    elif report.when == "call" and report.passed:
        _outcomes[(tier, "passed")] += 1


def pytest_sessionfinish(session, exitstatus):
    if os.environ.get("LIMEN_REQUIRE_ALL_TIERS") != "1":
        return
    problems = [f"the {t} tier ran no passing test" for t in TIERS if not _outcomes[(t, "passed")]]
    problems += [f"{n} {t} test(s) skipped" for (t, kind), n in _outcomes.items() if kind == "skipped"]
    if problems:
        session.config._limen_tier_problems = problems
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, config):
    counts = ", ".join(f"{t}: {_outcomes[(t, 'passed')]} passed" for t in TIERS)
    wall = time.monotonic() - _STARTED
    terminalreporter.write_line(f"LIMEN tiers — {counts}; the suite took {wall:.0f} s of wall time")
    for problem in getattr(config, "_limen_tier_problems", []):
        terminalreporter.write_line(f"TIER GUARD FAILED: {problem}", red=True)


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


# -- the qemu tier ------------------------------------------------------------------------
class _Host:
    """A connection to the real libvirtd that reopens itself when libvirtd was restarted (the
    fault tests restart it)."""

    def __init__(self):
        import libvirt

        self._libvirt, self._conn = libvirt, None

    def _live(self):
        try:
            if self._conn is not None:
                self._conn.getLibVersion()
                return self._conn
        except self._libvirt.libvirtError:
            pass
        self._conn = self._libvirt.open("qemu:///system")
        return self._conn

    def __getattr__(self, name):
        return getattr(self._live(), name)


@pytest.fixture(scope="session")
def qemu_host():
    """A connection to the real libvirtd; the qemu tier fails (never skips) without one."""
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    host = _Host()
    try:
        host.getLibVersion()
    except libvirt.libvirtError as e:
        pytest.fail(f"the qemu tier needs libvirtd on qemu:///system ({e.get_error_message()}); "
                    "run scripts/host-setup", pytrace=False)
    yield host
    host.close()


@pytest.fixture
def qemu_app(make_app, qemu_host):
    """LIMEN on the real libvirtd, with a storage pool of its own, removed afterwards with
    every domain the test's LIMEN knew."""
    apps = []

    def make(**config):
        tag = secrets.token_hex(3)
        cfg = {"LIBVIRT_URI": "qemu:///system", "STORAGE_POOL": f"limen-test-{tag}",
               "STORAGE_DIR": f"/var/lib/limen/test-{tag}", "MEDIA_POOL": f"limen-test-media-{tag}",
               "MEDIA_DIR": f"/var/lib/limen/test-media-{tag}", "SHUTDOWN_TIMEOUT": 3, **config}
        app = make_app(**cfg)
        apps.append(app)
        return app

    yield make
    from sqlalchemy import select

    from limen.extensions import db
    from limen.models import VM

    for app in apps:
        with app.app_context():
            uuids = set(db.session.scalars(select(VM.uuid)))
        remove_test_leftovers(qemu_host, lambda dom: dom.UUIDString() in uuids, app.config["STORAGE_POOL"])
        remove_test_leftovers(qemu_host, lambda dom: False, app.config["MEDIA_POOL"])


def remove_test_leftovers(host, is_ours, pool_name: str) -> None:
    """Remove the domains ``is_ours`` picks and the storage pool (with its volumes)."""
    import libvirt

    for dom in host.listAllDomains():
        if is_ours(dom):
            if dom.isActive():
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)  # UEFI VMs have firmware variables
    try:
        pool = host.storagePoolLookupByName(pool_name)
    except libvirt.libvirtError:
        return
    if pool.isActive():
        pool.refresh(0)
        for vol in pool.listAllVolumes():
            vol.delete(0)
        pool.destroy()
    pool.delete(0)
    pool.undefine()


@pytest.fixture
def qemu_admin(qemu_app):
    """(app, signed-in admin client) on the real libvirtd."""

    def make(**config):
        app = qemu_app(**config)
        b = Browserless(app.test_client())
        assert b.login("admin", admin_password(app)).status_code == 302
        return app, b

    return make


# -- the browser tier ---------------------------------------------------------------------
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, through Playwright; the tier fails (never skips) without it."""
    from playwright.sync_api import Error, sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"the browser tier needs {CHROMIUM}; run scripts/host-setup --test", pytrace=False)
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Error as e:
            pytest.fail(f"cannot start {CHROMIUM}: {e}", pytrace=False)
        yield b
        b.close()


@pytest.fixture
def live_server():
    """Serve an app on 127.0.0.1 on a free port from a thread; returns its base URL."""
    import threading

    from werkzeug.serving import make_server

    servers = []

    def serve(app) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_port}"

    yield serve
    for server, thread in servers:
        server.shutdown()
        thread.join(timeout=10)


@pytest.fixture
def page(browser):
    """A fresh browser tab. Any Content-Security-Policy violation on it fails the test: LIMEN
    has no inline script or style, and loads nothing from elsewhere."""
    context = browser.new_context()
    page = context.new_page()
    violations = []
    page.on("console", lambda msg: violations.append(msg.text)
            if "Content Security Policy" in msg.text else None)
    yield page
    context.close()
    assert violations == [], f"the page broke its Content-Security-Policy: {violations}"


# -- consoles -----------------------------------------------------------------------------
def get_ticket(b: "Browserless", vm_uuid: str):
    return b.client.post(f"/vms/{vm_uuid}/console/ticket",
                         headers={"X-CSRFToken": b.csrf, "Accept": "application/json"})


def open_console(ws_url: str, origin: str | None, cookie: str | None = None, headers: dict | None = None):
    """A WebSocket client as a browser would open it (Origin, and the session cookie if any);
    with no origin and a bearer token in ``headers``, as a script would."""
    import simple_websocket

    class BrowserLike(simple_websocket.Client):
        def handshake(self):
            """Send Host with its port, as browsers do (simple-websocket leaves it out)."""
            host, self.host = self.host, f"{self.host}:{self.port}"
            try:
                super().handshake()
            finally:
                self.host = host

        def _thread(self):
            """Frames that came with the handshake answer (a refusal's close frame) first:
            simple-websocket would leave them unread."""
            if not self._handle_events():
                self.connected = False
                self.event.set()
                self.sock.close()
                return
            super()._thread()

    headers = dict(headers or {})
    if origin:
        headers["Origin"] = origin
    if cookie:
        headers["Cookie"] = cookie
    return BrowserLike(ws_url, headers=headers)


def close_code(ws, timeout: float = 15.0) -> tuple[int, str]:
    """Read until the server closes; returns (close code, reason)."""
    import simple_websocket

    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ws.receive(timeout=max(0.01, deadline - time.monotonic()))
    except simple_websocket.ConnectionClosed as e:
        return e.reason, e.message
    raise AssertionError(f"the server did not close the console within {timeout:g} s")


def receive_exactly(ws, size: int, timeout: float = 30.0) -> bytes:
    """Collect at least ``size`` bytes of WebSocket payload, with a deadline."""
    data = b""
    deadline = time.monotonic() + timeout
    while len(data) < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"got {len(data)} of {size} bytes within {timeout:g} s: {data!r}")
        chunk = ws.receive(timeout=remaining)
        data += chunk or b""
    return data


class Reader:
    """Exact reads from a WebSocket's byte stream (messages split and join as they please)."""

    def __init__(self, ws):
        self.ws, self.buffer = ws, b""

    def read(self, size: int, timeout: float = 30.0) -> bytes:
        deadline = time.monotonic() + timeout
        while len(self.buffer) < size:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.buffer)} of {size} bytes within {timeout:g} s")
            self.buffer += self.ws.receive(timeout=remaining) or b""
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data
