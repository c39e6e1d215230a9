"""What tests share besides fixtures (those are in fixtures/): waiting, a browserless client
and the table rows it reads, users, apps, clean-up on the real libvirtd, and console clients."""
import re
import secrets
import shutil
import socket
import time
import uuid as uuidlib
from html.parser import HTMLParser
from pathlib import Path

from sqlalchemy import select

from limen import create_app, runtime
from limen.extensions import db
from limen.models import VM, AuditEvent, User


# -- waiting and naming -------------------------------------------------------------------
def wait_until(predicate, timeout: float = 10.0, what: str = "the condition", every: float = 0.05):
    """Poll ``predicate`` (every ``every`` seconds) until it returns something truthy; fail with
    ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what} (last: {last!r})")


def unique_name(prefix: str = "t") -> str:
    return f"{prefix}-{secrets.token_hex(4)}"


def free_port_range(size: int) -> range:
    """``size`` consecutive ports that nothing on 127.0.0.1 listens on right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            low = s.getsockname()[1]
        if low + size > 65535:
            continue
        try:
            for port in range(low, low + size):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return range(low, low + size)
    raise AssertionError(f"no {size} free consecutive ports on 127.0.0.1")


# -- a browserless client, and the rows it reads -------------------------------------------
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


def signed_in(app, username: str, password: str, **environ) -> Browserless:
    """A new client signed in as ``username``; ``environ`` (REMOTE_ADDR=…) applies to it."""
    b = Browserless(app.test_client())
    b.client.environ_base.update(environ)
    response = b.login(username, password)
    assert response.status_code == 302, response.text
    return b


def admin_password(app) -> str:
    return (Path(app.instance_path) / "initial-admin-password").read_text().strip()



# -- apps ---------------------------------------------------------------------------------
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


def token_for(app, username: str, password: str, **extra) -> str:
    response = app.test_client().post("/api/v1/auth/tokens", json={
        "username": username, "password": password, "name": "test", **extra})
    assert response.status_code == 201, response.json
    return response.json["token"]


class Api:
    """A script's HTTP client: a bearer token, JSON, no cookies."""

    def __init__(self, app, token: str):
        self.app, self.headers = app, {"Authorization": f"Bearer {token}"}

    def __call__(self, method: str, path: str, body=None):
        return self.app.test_client().open(f"/api/v1{path}", method=method, headers=self.headers, json=body)

    def wait_op(self, op_id: int, state: str = "done") -> dict:
        return wait_until(lambda: (r := self("GET", f"/operations/{op_id}").json)["state"] == state and r,
                          10, f"operation {op_id} to be {state}")


def audit_rows(app, **where) -> list[AuditEvent]:
    with app.app_context():
        query = select(AuditEvent).order_by(AuditEvent.id)
        for key, value in where.items():
            query = query.where(getattr(AuditEvent, key) == value)
        rows = db.session.scalars(query).all()
        db.session.expunge_all()
        return rows


# -- the real libvirtd --------------------------------------------------------------------
def open_libvirt(uri: str, timeout: float = 30.0):
    """libvirt.open(uri) for the tests' own use, with a deadline (in a thread, as LIMEN opens
    its own: connection._Opening) and keepalive: a libvirtd that accepts and never answers fails
    the test by name. A call stuck inside libvirt is beyond pytest-timeout's signal, and would
    hold the whole run."""
    from limen.hypervisor.connection import _Opening, ensure_event_loop

    ensure_event_loop()  # keepalive's pings run on libvirt's event loop
    opening = _Opening(uri)
    if not opening.done.wait(timeout):
        raise AssertionError(f"libvirtd at {uri} did not answer within {timeout:g} s")
    if opening.conn is None:
        raise AssertionError(f"cannot open {uri}: {opening.error}")
    opening.conn.setKeepAlive(5, 5)  # silent for 30 s: closed, and a waiting call fails
    return opening.conn


def remove_test_leftovers(host, is_ours, pool_name: str) -> None:
    """Remove the domains ``is_ours`` picks and the storage pool (with its volumes)."""
    import libvirt

    for dom in host.listAllDomains():
        if is_ours(dom):
            if dom.isActive():
                dom.destroy()
            # UEFI VMs have firmware variables; snapshots leave records
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
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



# -- consoles -----------------------------------------------------------------------------
def get_ticket(b: Browserless, vm_uuid: str, kind: str = "screen"):
    return b.client.post(f"/vms/{vm_uuid}/console/ticket?kind={kind}",
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


def make_fleet(app, count: int) -> None:
    """``count`` VMs named vm-000 …, defined on the test driver and known to LIMEN, the even
    ones running; settled by the state sync."""
    hv = runtime.get(app).hypervisor
    with app.app_context():
        admin = db.session.scalar(db.select(User).where(User.username == "admin"))
        for i in range(count):
            vm_uuid, name = str(uuidlib.uuid4()), f"vm-{i:03d}"
            hv.disks.create_volume(f"{vm_uuid}.qcow2", 1)
            hv.domains.define(uuid=vm_uuid, name=name, vcpus=1 + i % 4, memory_mib=64, volume=f"{vm_uuid}.qcow2")
            if i % 2 == 0:
                hv.domains.start(vm_uuid)
            db.session.add(VM(uuid=vm_uuid, name=name, owner_id=admin.id, vcpus=1 + i % 4, memory_mib=64,
                              disk_gib=1, state="nostate"))
        db.session.commit()
        runtime.get(app).sync.resync_all()


def click_console(row) -> None:
    """Open the console from a table row (a Playwright locator): its link is at hand while
    the VM runs, and in the row's menu ("More") otherwise."""
    link = row.locator("a.console-link")
    if not link.is_visible():
        row.locator("summary").click()
    link.click()


def sign_in_page(page, base: str, app, username: str = "admin", password: str | None = None) -> None:
    """Sign in through the browser (a Playwright page) on the app served at ``base``."""
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password or admin_password(app))
    page.get_by_role("button", name="Sign in").click()
