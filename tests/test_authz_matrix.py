"""The authorisation matrix (fast tier): every route of the app's URL map, as anonymous, as
another user, as the VM's owner and as an admin, with the status each must get. A refused
request must change nothing, in the database or in libvirt. A route that is not listed here
fails the first test: whoever adds a route decides who may use it.

The security headers are checked on every HTML response the matrix produces.
"""
import shutil

import pytest
from sqlalchemy import select, update

from helpers import Browserless, add_user, admin_password, close_code, get_ticket, open_console, \
    receive_exactly, signed_in, start_app, uuid_of, wait_until
from limen import runtime
from limen.extensions import db
from limen.models import VM, ApiToken, Operation, User, utcnow
from test_console import BANNER, adopt, ws_url

ROLES = ("anonymous", "other", "owner", "admin")
SIGN_IN = "login"  # expected: a redirect to the sign-in page


def expect(anonymous, other, owner, admin):
    return dict(anonymous=anonymous, other=other, owner=owner, admin=admin)


VM_ROUTE = expect(SIGN_IN, 404, 200, 200)
VM_POST = expect(SIGN_IN, 404, 302, 302)
ADMIN_PAGE = expect(SIGN_IN, 403, 403, 200)
ADMIN_POST = expect(SIGN_IN, 403, 403, 302)
PASSWORD = {"password": "a-new-password-1", "confirm": "a-new-password-1"}

# (endpoint, method) -> (path, form, expected status per role). In the path and the form, {vm} is a VM of
# the owner's (each role that may act gets its own), {user} the owner's username.
MATRIX = {
    ("static", "GET"): ("/static/css/limen.css", None, expect(200, 200, 200, 200)),
    ("health.healthz", "GET"): ("/healthz", None, expect(200, 200, 200, 200)),
    ("health.metrics", "GET"): ("/metrics", None, expect(200, 200, 200, 200)),
    ("auth.login", "GET"): ("/login", None, expect(200, 200, 200, 200)),
    ("auth.login", "POST"): ("/login", {"username": "alice", "password": "wrong-password"},
                             expect(401, 401, 401, 401)),
    ("auth.logout", "POST"): ("/logout", {}, expect(SIGN_IN, 302, 302, 302)),
    ("auth.account", "GET"): ("/account", None, expect(SIGN_IN, 200, 200, 200)),
    ("auth.account", "POST"): ("/account", {"current": "wrong-password", **PASSWORD},
                               expect(SIGN_IN, 422, 422, 422)),
    ("vms.index", "GET"): ("/", None, expect(SIGN_IN, 200, 200, 200)),
    ("vms.rows", "GET"): ("/vms/rows?v=x", None, expect(SIGN_IN, 200, 200, 200)),
    ("vms.create", "POST"): ("/vms", {"name": "made-by-{role}", "vcpus": "1", "memory_mib": "64",
                                      "disk_gib": "1"}, expect(SIGN_IN, 302, 302, 302)),
    ("vms.action", "POST"): ("/vms/{vm}/force-off", {}, VM_POST),
    ("vms.bulk", "POST"): ("/vms/bulk/force-off", {"vm": "{vm}"}, expect(SIGN_IN, 404, 202, 202)),
    ("vms.status", "GET"): ("/vms/{vm}/status", None, VM_ROUTE),
    ("hub.stats", "GET"): ("/vms/{vm}/stats", None, VM_ROUTE),
    # Only admins move VMs; this admin's VM is on the only host already.
    ("hub.migrate", "POST"): ("/vms/{vm}/migrate", {"host": "local"}, expect(SIGN_IN, 404, 403, 422)),
    ("hub.cancel_migration", "POST"): ("/vms/{vm}/migrate/cancel", {}, expect(SIGN_IN, 404, 403, 409)),
    ("hub.head", "GET"): ("/vms/{vm}/head", None, VM_ROUTE),
    ("hub.screen", "GET"): ("/vms/{vm}/screen.png", None, VM_ROUTE),
    ("hub.tasks", "GET"): ("/tasks", None, expect(SIGN_IN, 200, 200, 200)),
    ("vms.delete", "POST"): ("/vms/{vm}/delete", {}, VM_POST),
    # Admins only. The VM runs, so forgetting it is refused even for an admin (409); and it
    # is not an unmanaged domain, so there is nothing to adopt (404).
    ("vms.forget", "POST"): ("/vms/{vm}/forget", {}, expect(SIGN_IN, 404, 403, 409)),
    ("vms.adopt", "POST"): ("/unmanaged/{vm}/adopt", {"owner": "alice"}, expect(SIGN_IN, 403, 403, 404)),
    ("vms.detail", "GET"): ("/vms/{vm}", None, VM_ROUTE),
    ("vms.host", "GET"): ("/host", None, ADMIN_PAGE),
    ("vms.guest", "GET"): ("/vms/{vm}/guest", None, VM_ROUTE),
    ("vms.edit", "POST"): ("/vms/{vm}/edit", {"description": "by {role}"}, VM_POST),
    # libvirt's test driver plugs no disk into a running VM (409) and resizes none (502); the
    # VM has no vdb (404).
    ("vms.add_disk", "POST"): ("/vms/{vm}/disks", {"gib": "1"}, expect(SIGN_IN, 404, 409, 409)),
    ("vms.grow_disk", "POST"): ("/vms/{vm}/disks/vda/grow", {"gib": "2"}, expect(SIGN_IN, 404, 502, 502)),
    ("vms.remove_disk", "POST"): ("/vms/{vm}/disks/vdb/delete", {}, expect(SIGN_IN, 404, 404, 404)),
    # The matrix's VMs have no NIC, and the test driver plugs none in (409).
    ("vms.add_nic", "POST"): ("/vms/{vm}/nics", {"network": "user"}, expect(SIGN_IN, 404, 409, 409)),
    ("vms.change_nic", "POST"): ("/vms/{vm}/nics/52:54:00:00:00:01/change", {"link": "down"},
                                 expect(SIGN_IN, 404, 404, 404)),
    ("vms.remove_nic", "POST"): ("/vms/{vm}/nics/52:54:00:00:00:01/delete", {}, expect(SIGN_IN, 404, 404, 404)),
    # The matrix's VMs have no NIC (NETWORK "none"), so a forward is refused even for its
    # owner (422), and there is no forward 999 to remove (404).
    ("vms.add_forward", "POST"): ("/vms/{vm}/forwards", {"guest_port": "80"}, expect(SIGN_IN, 404, 422, 422)),
    ("vms.remove_forward", "POST"): ("/vms/{vm}/forwards/999/delete", {}, expect(SIGN_IN, 404, 404, 404)),
    # No ISO 999 in the library: the owner's request is valid but for that.
    ("vms.insert_iso", "POST"): ("/vms/{vm}/cdrom", {"medium": "999"}, expect(SIGN_IN, 404, 422, 422)),
    # The test driver cannot change a running VM's drive (502 HYPERVISOR_ERROR; the qemu tier
    # does it), and that failure must change nothing either.
    ("vms.eject", "POST"): ("/vms/{vm}/eject", {"boot_from_disk": "1"}, expect(SIGN_IN, 404, 502, 502)),
    # The matrix's VM runs: a clone is refused even for its owner (409), and changes nothing.
    ("vms.clone", "POST"): ("/vms/{vm}/clone", {"name": "clone-by-{role}"}, expect(SIGN_IN, 404, 409, 409)),
    ("vms.snapshots", "GET"): ("/vms/{vm}/snapshots", None, VM_ROUTE),
    ("vms.take_snapshot", "POST"): ("/vms/{vm}/snapshots", {"name": "by-{role}"}, expect(SIGN_IN, 404, 302, 302)),
    # No snapshot "none": the owner's request is valid but for that.
    ("vms.revert_snapshot", "POST"): ("/vms/{vm}/snapshots/none/revert", {}, expect(SIGN_IN, 404, 404, 404)),
    ("vms.delete_snapshot", "POST"): ("/vms/{vm}/snapshots/none/delete", {}, expect(SIGN_IN, 404, 404, 404)),
    ("media.index", "GET"): ("/media/", None, expect(SIGN_IN, 200, 200, 200)),
    ("media.library", "GET"): ("/media/library", None, expect(SIGN_IN, 200, 200, 200)),
    # A form post is no upload: its body is the form, so no ISO arrives (400 UPLOAD_INCOMPLETE).
    ("media.upload", "POST"): ("/media/upload?kind=iso&name=m&os_kind=linux", {}, expect(SIGN_IN, 403, 403, 400)),
    ("media.register", "POST"): ("/media/register", {"file": "none.iso", "name": "m", "os_kind": "linux"},
                                 expect(SIGN_IN, 403, 403, 422)),
    ("media.delete", "POST"): ("/media/999/delete", {}, expect(SIGN_IN, 403, 403, 404)),
    ("console.page", "GET"): ("/vms/{vm}/console", None, VM_ROUTE),
    ("console.ticket", "POST"): ("/vms/{vm}/console/ticket", {}, expect(SIGN_IN, 404, 201, 201)),
    # The WebSocket answers with close codes: see test_the_console_websocket_matrix.
    ("console.websocket", "GET"): ("/vms/{vm}/console/ws", None,
                                   expect(4401, 4403, "open", "open")),
    ("console.serial_page", "GET"): ("/vms/{vm}/serial", None, VM_ROUTE),
    # libvirt's test driver has no console streams: past the door, the owner and an admin get
    # its refusal (4502 HYPERVISOR_ERROR); the qemu tier opens the line (test_serial_qemu).
    ("console.serial_websocket", "GET"): ("/vms/{vm}/serial/ws", None, expect(4401, 4403, 4502, 4502)),
    ("admin.users", "GET"): ("/admin/users", None, ADMIN_PAGE),
    ("admin.create_user", "POST"): ("/admin/users", {"username": "made-by-{role}", **PASSWORD},
                                    ADMIN_POST),
    ("admin.user", "GET"): ("/admin/users/{user}", None, ADMIN_PAGE),
    ("admin.update_user", "POST"): ("/admin/users/{user}", {"role": "user", "quota_vms": "1"},
                                    ADMIN_POST),
    ("admin.reset_password", "POST"): ("/admin/users/{user}/password", PASSWORD, ADMIN_POST),
    ("admin.audit_log", "GET"): ("/admin/audit", None, ADMIN_PAGE),
    ("hosts.index", "GET"): ("/admin/hosts", None, ADMIN_PAGE),
    # Nothing answers on port 1: the test connects, and says the host cannot be reached.
    ("hosts.probe", "POST"): ("/admin/hosts/probe", {"name": "h-{role}", "uri": "qemu+ssh://root@127.0.0.1:1/system"},
                              expect(SIGN_IN, 403, 403, 503)),
    ("hosts.add", "POST"): ("/admin/hosts", {"name": "h-{role}", "uri": "qemu+ssh://root@127.0.0.1:1/system",
                                             "host_key": "not-a-key"}, expect(SIGN_IN, 403, 403, 422)),
    ("hosts.enable", "POST"): ("/admin/hosts/1/enable", {}, ADMIN_POST),  # it is already
    ("hosts.remove", "POST"): ("/admin/hosts/1/remove", {}, expect(SIGN_IN, 403, 403, 422)),  # the local host stays
    # The API: bearer tokens (each role its own; anonymous none), JSON bodies, no cookies.
    ("auth.create_token", "POST"): ("/account/tokens", {"name": "t"}, expect(SIGN_IN, 201, 201, 201)),
    ("auth.revoke_token", "POST"): ("/account/tokens/{token}/revoke", {}, expect(SIGN_IN, 404, 302, 302)),
    ("api_docs.docs", "GET"): ("/api/docs", None, expect(200, 200, 200, 200)),
    ("api.openapi", "GET"): ("/api/v1/openapi.json", None, expect(200, 200, 200, 200)),
    ("api.create_token", "POST"): ("/api/v1/auth/tokens", {"username": "alice", "password": "wrong-password",
                                                           "name": "t"}, expect(401, 401, 401, 401)),
    ("api.list_vms", "GET"): ("/api/v1/vms", None, expect(401, 200, 200, 200)),
    ("api.create_vm", "POST"): ("/api/v1/vms", {"name": "api-by-{role}", "vcpus": 1, "memory_mib": 64,
                                                "disk_gib": 1}, expect(401, 202, 202, 202)),
    ("api.get_vm", "GET"): ("/api/v1/vms/{vm}", None, expect(401, 404, 200, 200)),
    ("api.delete_vm", "DELETE"): ("/api/v1/vms/{vm}", None, expect(401, 404, 202, 202)),
    ("api.add_forward", "POST"): ("/api/v1/vms/{vm}/forwards", {"guest_port": 80}, expect(401, 404, 422, 422)),
    ("api.remove_forward", "DELETE"): ("/api/v1/vms/{vm}/forwards/999", None, expect(401, 404, 404, 404)),
    ("api.act", "POST"): ("/api/v1/vms/{vm}/actions/force-off", {}, expect(401, 404, 202, 202)),
    ("api.console_ticket", "POST"): ("/api/v1/vms/{vm}/console", {}, expect(401, 404, 201, 201)),
    ("api.vm_stats", "GET"): ("/api/v1/vms/{vm}/stats", None, expect(401, 404, 200, 200)),
    ("api.clone_vm", "POST"): ("/api/v1/vms/{vm}/clone", {"name": "api-clone-{role}"}, expect(401, 404, 409, 409)),
    ("api.migrate_vm", "POST"): ("/api/v1/vms/{vm}/migrate", {"host": "local"}, expect(401, 404, 403, 422)),
    ("api.cancel_migration", "POST"): ("/api/v1/vms/{vm}/migrate/cancel", {}, expect(401, 404, 403, 409)),
    ("api.list_snapshots", "GET"): ("/api/v1/vms/{vm}/snapshots", None, expect(401, 404, 200, 200)),
    ("api.take_snapshot", "POST"): ("/api/v1/vms/{vm}/snapshots", {"name": "api-{role}"}, expect(401, 404, 202, 202)),
    ("api.revert_snapshot", "POST"): ("/api/v1/vms/{vm}/snapshots/none/revert", {}, expect(401, 404, 404, 404)),
    ("api.delete_snapshot", "DELETE"): ("/api/v1/vms/{vm}/snapshots/none", None, expect(401, 404, 404, 404)),
    ("api.list_disks", "GET"): ("/api/v1/vms/{vm}/disks", None, expect(401, 404, 200, 200)),
    ("api.add_disk", "POST"): ("/api/v1/vms/{vm}/disks", {"gib": 1}, expect(401, 404, 409, 409)),
    ("api.grow_disk", "PATCH"): ("/api/v1/vms/{vm}/disks/vda", {"gib": 2}, expect(401, 404, 502, 502)),
    ("api.remove_disk", "DELETE"): ("/api/v1/vms/{vm}/disks/vdb", None, expect(401, 404, 404, 404)),
    ("api.list_nics", "GET"): ("/api/v1/vms/{vm}/nics", None, expect(401, 404, 200, 200)),
    ("api.add_nic", "POST"): ("/api/v1/vms/{vm}/nics", {"network": "user"}, expect(401, 404, 409, 409)),
    ("api.change_nic", "PATCH"): ("/api/v1/vms/{vm}/nics/52:54:00:00:00:01", {"link": "down"},
                                  expect(401, 404, 404, 404)),
    ("api.remove_nic", "DELETE"): ("/api/v1/vms/{vm}/nics/52:54:00:00:00:01", None, expect(401, 404, 404, 404)),
    ("api.edit", "PATCH"): ("/api/v1/vms/{vm}", {"description": "by {role}"}, expect(401, 404, 200, 200)),
    ("api.insert_iso", "POST"): ("/api/v1/vms/{vm}/cdrom", {"medium": 999}, expect(401, 404, 422, 422)),
    ("api.eject", "POST"): ("/api/v1/vms/{vm}/eject", {"boot_from_disk": True}, expect(401, 404, 502, 502)),
    ("api.list_media", "GET"): ("/api/v1/media", None, expect(401, 200, 200, 200)),
    # The body here is "{}": no ISO header (422).
    ("api.upload_medium", "POST"): ("/api/v1/media?kind=iso&name=m&os_kind=linux", {}, expect(401, 403, 403, 422)),
    ("api.delete_medium", "DELETE"): ("/api/v1/media/999", None, expect(401, 403, 403, 404)),
    ("api.get_operation", "GET"): ("/api/v1/operations/{op}", None, expect(401, 404, 200, 200)),
    ("api.list_users", "GET"): ("/api/v1/users", None, expect(401, 403, 403, 200)),
    ("api.create_user", "POST"): ("/api/v1/users", {"username": "api-{role}", "password": "a-new-password-1"},
                                  expect(401, 403, 403, 201)),
    ("api.update_user", "PATCH"): ("/api/v1/users/{user_id}", {"quota_vms": 5}, expect(401, 403, 403, 200)),
    ("api.list_hosts", "GET"): ("/api/v1/hosts", None, expect(401, 403, 403, 200)),
    ("api.public_key", "GET"): ("/api/v1/hosts/key", None, expect(401, 403, 403, 200)),
    ("api.probe_host", "POST"): ("/api/v1/hosts/probe", {"name": "h-{role}", "uri": "qemu+ssh://root@127.0.0.1:1/system"},
                                 expect(401, 403, 403, 503)),
    ("api.add_host", "POST"): ("/api/v1/hosts", {"name": "h-{role}", "uri": "qemu+ssh://root@127.0.0.1:1/system",
                                                 "host_key": "not-a-key"}, expect(401, 403, 403, 422)),
    ("api.update_host", "PATCH"): ("/api/v1/hosts/1", {"enabled": True}, expect(401, 403, 403, 200)),
    ("api.remove_host", "DELETE"): ("/api/v1/hosts/1", None, expect(401, 403, 403, 422)),
}
HTTP_ROUTES = [key for key in MATRIX if key[0] not in ("console.websocket", "console.serial_websocket")]


def test_every_route_is_in_the_matrix(app):
    routes = {(rule.endpoint, method) for rule in app.url_map.iter_rules()
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes - set(MATRIX) == set(), "routes nobody listed: decide who may use them"
    assert set(MATRIX) - routes == set(), "listed routes the app does not have"


def snapshot(app, conn) -> tuple:
    """Everything a request could change: every row (but the audit log, where refusals are
    recorded on purpose) and every domain and volume in libvirt."""
    with app.app_context():
        rows = {table.name: sorted(map(tuple, db.session.execute(select(table))), key=repr)
                for table in db.metadata.sorted_tables if table.name != "audit_event"}
    domains = sorted((d.name(), d.state()[0]) for d in conn.listAllDomains())
    pools = {p.name(): p for p in conn.listAllStoragePools()}  # made at the first create
    pool = pools.get(app.config["STORAGE_POOL"])
    volumes = sorted(pool.listVolumes()) if pool else []
    return rows, domains, volumes


def no_work_in_flight(app) -> bool:
    with app.app_context():
        return db.session.scalar(select(Operation.id).where(Operation.state.in_(Operation.ACTIVE))) is None


def clients(app) -> dict[str, Browserless]:
    add_user(app, "alice", "alice-password-1")
    add_user(app, "mallory", "mallory-password-1")
    anonymous = Browserless(app.test_client())
    anonymous.client.get("/login")  # a session with a CSRF token, and no user
    anonymous.csrf = anonymous.client.get("/login").text.split('name="csrf_token" value="')[1].split('"')[0]
    by_role = {"anonymous": anonymous, "other": signed_in(app, "mallory", "mallory-password-1"),
               "owner": signed_in(app, "alice", "alice-password-1"),
               "admin": signed_in(app, "admin", admin_password(app))}
    anonymous.api = {}
    for role, username, password in (("other", "mallory", "mallory-password-1"),
                                     ("owner", "alice", "alice-password-1"),
                                     ("admin", "admin", admin_password(app))):
        token = app.test_client().post("/api/v1/auth/tokens", json={
            "username": username, "password": password, "name": "matrix"}).json["token"]
        by_role[role].api = {"Authorization": f"Bearer {token}"}
        app.test_client().get("/api/v1/vms", headers=by_role[role].api)  # its first use is recorded
    return by_role


@pytest.fixture(scope="module")
def signed_in_instance(tmp_path_factory, database_template):
    """The users, sign-ins and API tokens every case starts with, made once for the module:
    an instance folder (database, secret key) and what each role's client holds (its session
    cookie, CSRF token and bearer token)."""
    root = tmp_path_factory.mktemp("matrix")
    node = root / "node.xml"
    node.write_text("<node/>")
    app = start_app(root, database_template, LIBVIRT_URI=f"test://{node}")
    try:
        held = {role: (b.client.get_cookie("session").value, b.csrf, b.api) for role, b in clients(app).items()}
    finally:
        runtime.stop(app)
        with app.app_context():
            db.engine.dispose()  # the last connection closes: SQLite folds its WAL into the file
    instance = root / "instance"
    assert not (instance / "limen.sqlite-wal").exists(), "the database is one file"
    return instance, held


@pytest.fixture
def matrix_app(make_app, node_xml, tmp_path, signed_in_instance):
    """(app, client per role): a LIMEN of the case's own, on a node of its own, started from a
    copy of the module's signed-in instance; the same users, sign-ins and tokens as clients()
    makes, so that what one case changes no other case sees."""
    instance, held = signed_in_instance
    shutil.copytree(instance, tmp_path / "instance")
    # The guest watch writes what a new VM's guest tells (here: no agent) a few seconds after it
    # runs, into the snapshots of whichever request happens then: not in this app.
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", GUEST_POLL_INTERVAL=3600)
    with app.app_context():  # used just now (last_used_at is written at most once a minute): no
        # refused request of this case writes it, however long the module has run
        db.session.execute(update(ApiToken).values(last_used_at=utcnow()))
        db.session.commit()
    by_role = {}
    for role, (cookie, csrf, api) in held.items():
        b = Browserless(app.test_client())
        b.client.set_cookie("session", cookie)
        b.csrf, b.api = csrf, api
        if api:
            assert app.test_client().get("/api/v1/vms", headers=api).status_code == 200
        by_role[role] = b
    return app, by_role


def libvirt_of(app):
    """LIMEN's own connection to its test-driver node."""
    return runtime.get(app).hypervisor.connection.get()


def _ids(app, vm_uuid: str) -> dict:
    with app.app_context():
        alice = db.session.scalar(select(User.id).where(User.username == "alice"))
        return {"op": db.session.scalar(select(Operation.id).where(Operation.vm_uuid == vm_uuid)),
                "user_id": alice,
                "token": db.session.scalar(select(ApiToken.id).where(ApiToken.user_id == alice))}


def running_vm(owner: Browserless, app, name: str) -> str:
    assert owner.create(name=name).status_code == 201
    owner.wait_state(name, "running")
    return uuid_of(app, name)


@pytest.mark.parametrize("endpoint, method", HTTP_ROUTES, ids=[f"{m} {e}" for e, m in HTTP_ROUTES])
def test_the_matrix(matrix_app, endpoint, method):
    path, form, expected = MATRIX[(endpoint, method)]
    app, by_role = matrix_app
    libvirt_conn = libvirt_of(app)
    owner = by_role["owner"]
    vms = {"owner": running_vm(owner, app, "alices-own"), "admin": running_vm(owner, app, "alices-other")}
    for role in ROLES:
        b = by_role[role]
        vm = vms.get(role, vms["owner"])
        url = path.format(vm=vm, user="alice", role=role, **_ids(app, vm))
        data = {k: v.format(role=role, vm=vm) if isinstance(v, str) else v for k, v in (form or {}).items()}
        before = snapshot(app, libvirt_conn)
        if url.startswith("/api/"):  # a token and JSON; no cookie, no CSRF token
            response = app.test_client().open(url, method=method, headers=b.api,
                                              json=data if form is not None else None)
        elif method == "GET":
            response = b.client.get(url)
        else:
            response = b.client.post(url, data={**data, "csrf_token": b.csrf})
        want = expected[role]
        where = f"{role} {method} {url}"
        if want == SIGN_IN:
            assert response.status_code == 302, where
            assert response.headers["Location"].startswith("/login"), where
        else:
            assert response.status_code == want, f"{where}: {response.status_code}"
        if endpoint != "static":  # no page, answer or token is kept by a cache or the back button
            assert response.headers["Cache-Control"] == "no-store", where
        if response.mimetype == "text/html":
            assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"], where
            assert "script-src 'self'" in response.headers["Content-Security-Policy"], where
            assert response.headers["X-Content-Type-Options"] == "nosniff", where
            assert response.headers["Referrer-Policy"] == "same-origin", where
        if want == SIGN_IN or (isinstance(want, int) and want >= 400):
            assert snapshot(app, libvirt_conn) == before, f"{where} was refused but changed something"
        else:  # what it started in the background ends before the next role's snapshot
            wait_until(lambda: no_work_in_flight(app), what=f"the work {where} started to end")


def test_the_console_websocket_matrix(matrix_app, live_server, stub):
    app, by_role = matrix_app
    libvirt_conn = libvirt_of(app)
    base = live_server(app)
    vm = adopt(app, libvirt_conn, "alices-screen", stub.port, owner="alice")
    expected = MATRIX[("console.websocket", "GET")][2]
    cookie = {role: f"session={b.client.get_cookie('session').value}"
              for role, b in by_role.items() if role != "anonymous"}

    before = snapshot(app, libvirt_conn)
    ws = open_console(ws_url(base, vm, None), base)  # anonymous: no ticket, no session
    assert close_code(ws)[0] == expected["anonymous"]
    assert get_ticket(by_role["other"], vm).status_code == 404  # another user gets no ticket
    stolen = get_ticket(by_role["owner"], vm).json["ticket"]  # and cannot use the owner's
    ws = open_console(ws_url(base, vm, stolen), base, cookie=cookie["other"])
    assert close_code(ws)[0] == expected["other"]
    assert snapshot(app, libvirt_conn)[1:] == before[1:]  # libvirt untouched: nothing started

    for role in ("owner", "admin"):
        assert expected[role] == "open"
        ticket = get_ticket(by_role[role], vm).json["ticket"]
        ws = open_console(ws_url(base, vm, ticket), base, cookie=cookie[role])
        assert receive_exactly(ws, len(BANNER)) == BANNER, role
        ws.close()

    # The serial line's WebSocket: the same door, with a ticket for it.
    expected = MATRIX[("console.serial_websocket", "GET")][2]
    serial = f"ws{base.removeprefix('http')}/vms/{vm}/serial/ws?ticket="
    ws = open_console(serial, base)
    assert close_code(ws)[0] == expected["anonymous"]
    assert get_ticket(by_role["other"], vm, "serial").status_code == 404
    stolen = get_ticket(by_role["owner"], vm, "serial").json["ticket"]
    ws = open_console(serial + stolen, base, cookie=cookie["other"])
    assert close_code(ws)[0] == expected["other"]
    for role in ("owner", "admin"):
        ticket = get_ticket(by_role[role], vm, "serial").json["ticket"]
        ws = open_console(serial + ticket, base, cookie=cookie[role])
        assert close_code(ws) == (expected[role], "HYPERVISOR_ERROR"), role


def test_a_hostile_name_from_another_tool_is_shown_as_text(app, admin, libvirt_conn):
    """Names and reasons that did not pass LIMEN's validation (a domain another tool made,
    libvirt's messages) are escaped wherever they are shown."""
    hostile = "<img src=x onerror=alert(1)>"
    vm_uuid = running_vm(admin, app, "plain")
    with app.app_context():
        vm = db.session.scalar(select(VM).where(VM.uuid == vm_uuid))
        vm.name, vm.state, vm.state_reason = hostile, "error", f"libvirt said {hostile}"
        db.session.commit()
    for page in (admin.client.get("/").text, admin.rows(), admin.client.get(f"/vms/{vm_uuid}/console").text,
                 admin.client.get("/admin/audit").text):
        assert hostile not in page
    table = admin.client.get("/").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in table
    assert "libvirt said &lt;img" in table


def test_only_static_files_may_be_cached(app):
    response = app.test_client().get("/static/js/limen.js")
    assert response.status_code == 200 and "no-store" not in response.headers.get("Cache-Control", "")
