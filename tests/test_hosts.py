"""Hosts, as far as libvirt's test driver shows them (fast tier): the Hosts page, what a host's
URI may be, a host that cannot be reached, LIMEN's key pair, placement on the local host, and
what only admins may see. A real second host is in test_hosts_qemu.py (over SSH) and
test_hosts_tls_qemu.py (over TLS)."""
import os
import stat
from pathlib import Path

from sqlalchemy import func, select

from helpers import Api, add_user, admin_password, audit_rows, signed_in, token_for
from limen import remote
from limen.extensions import db
from limen.models import VM, Host

UNREACHABLE = "qemu+ssh://root@127.0.0.1:1/system"  # nothing listens on port 1


def post(b, url: str, data: dict | None = None):
    """A plain form's post, as the page sends it (its CSRF token in the form)."""
    return b.client.post(url, data={**(data or {}), "csrf_token": b.csrf})


def host_count(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Host))


def test_the_local_host_is_the_first_and_stays(app, admin):
    page = admin.client.get("/admin/hosts")
    assert page.status_code == 200
    assert 'data-host="local"' in page.text and "the local host (test://" in page.text
    # The form's hints are text beside each field, tied to it, not placeholders it cuts off.
    assert 'aria-describedby="hint-uri"' in page.text
    assert '<span class="hint" id="hint-uri">qemu+ssh://root@host.example/system, or qemu+tls://' in page.text
    assert post(admin, "/admin/hosts/1/disable").status_code == 422
    assert post(admin, "/admin/hosts/1/remove").status_code == 422
    with app.app_context():
        local = db.session.get(Host, 1)
        assert (local.name, local.enabled, local.local) == ("local", True, True)


def test_limen_shows_the_public_half_of_a_key_pair_it_made_and_keeps_the_private_half_to_itself(app, admin):
    page = admin.client.get("/admin/hosts").text
    key = Path(app.instance_path) / "ssh" / "id_ed25519"
    public = (Path(f"{key}.pub")).read_text().split()
    assert f"{public[0]} {public[1]} limen" in page and public[0] == "ssh-ed25519"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(key.parent).st_mode) == 0o700
    assert "PRIVATE KEY" not in page
    assert f"{public[0]} {public[1]}" in admin.client.get("/admin/hosts").text  # the same pair, kept


def test_a_host_uri_limen_cannot_use_is_refused_with_a_reason_and_nothing_is_kept(app, admin):
    cases = {
        "": "libvirt URI",
        "qemu:///system": "over SSH",
        "qemu+tcp://host.example/system": "over SSH",
        "qemu+ssh://root@host.example/session": "/system",
        "qemu+ssh://root@host.example/system?keyfile=/etc/shadow": "No ?",
        "qemu+ssh://root:secret@host.example/system": "No password",
        "qemu+ssh://root@bad_host!/system": "Name the host",
        "qemu+ssh://root@host.example:99999/system": "port",
        "qemu+ssh://" + "a" * 250 + "/system": "At most 255",
        "qemu+tls://root@host.example/system": "No user@",
    }
    for uri, reason in cases.items():
        answer = post(admin, "/admin/hosts/probe", data={"name": "other", "uri": uri})
        assert answer.status_code == 422, uri
        assert reason in answer.text, (uri, answer.text[-2000:])
    assert post(admin, "/admin/hosts/probe", data={"name": "", "uri": UNREACHABLE}).status_code == 422
    assert post(admin, "/admin/hosts/probe", data={"name": "LOCAL", "uri": UNREACHABLE}).status_code == 422
    assert host_count(app) == 1
    for good in ("qemu+ssh://root@host.example/system", "qemu+libssh://10.0.0.2:2222/system",
                 "qemu+ssh://admin@[::1]:22/system", "qemu+tls://host.example/system"):
        assert remote.uri_problem(good) is None, good


def test_a_host_that_cannot_be_reached_is_named_so_and_not_added(app, admin):
    answer = post(admin, "/admin/hosts/probe", data={"name": "far", "uri": UNREACHABLE})
    assert answer.status_code == 503
    assert "HOST_UNREACHABLE" in answer.text and "Connection refused" in answer.text
    assert 'value="far"' in answer.text  # the form keeps what was typed
    added = post(admin, "/admin/hosts", data={"name": "far", "uri": UNREACHABLE,
                                                    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIErwO63EUNOzKeR5"})
    assert added.status_code == 503
    assert host_count(app) == 1
    assert [(r.action, r.result) for r in audit_rows(app, action="host.probe")] == [("host.probe", "HOST_UNREACHABLE")]


def test_a_host_key_that_is_not_one_is_refused_before_any_connection(app, admin):
    for key in ("", "not-a-key", "ssh-ed25519 !!!!", "ssh-ed25519 AAAA AAAA"):
        answer = post(admin, "/admin/hosts", data={"name": "far", "uri": UNREACHABLE, "host_key": key})
        assert answer.status_code == 422, key
    assert host_count(app) == 1


def test_only_admins_see_hosts_and_no_user_sees_a_hosts_key(app, admin):
    add_user(app, "alice", "alice-password-1")
    alice = signed_in(app, "alice", "alice-password-1")
    assert alice.client.get("/admin/hosts").status_code == 403
    assert post(alice, "/admin/hosts/probe", data={"name": "x", "uri": UNREACHABLE}).status_code == 403
    public = admin.client.get("/admin/hosts")  # made now: the pair exists
    assert public.status_code == 200
    key = (Path(app.instance_path) / "ssh" / "id_ed25519.pub").read_text().split()[1]
    for page in ("/", "/account", "/tasks"):
        assert key not in alice.client.get(page).text
    assert "Hosts" not in alice.client.get("/").text.split("</nav>")[0]


def test_a_new_vm_goes_on_the_host_asked_for_and_a_host_that_does_not_exist_is_refused(app, admin):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    refused = api("POST", "/vms", {"name": "nowhere", "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "host": "mars"})
    assert refused.status_code == 422
    assert "no enabled host named mars" in refused.json["error"]["details"]["fields"]["host"]
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(VM)) == 0
    made = api("POST", "/vms", {"name": "here", "vcpus": 1, "memory_mib": 64, "disk_gib": 1, "host": "local"})
    assert made.status_code == 202, made.json
    assert api("GET", f"/vms/{made.json['vm']['uuid']}").json["host"] == "local"
    auto = api("POST", "/vms", {"name": "anywhere", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert api("GET", f"/vms/{auto.json['vm']['uuid']}").json["host"] == "local"  # the only one


def test_the_api_lists_hosts_and_tries_one_as_the_page_does(app):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    listed = api("GET", "/hosts")
    assert listed.status_code == 200
    assert listed.json == [{"id": 1, "name": "local", "uri": None, "local": True, "enabled": True, "vms": 0,
                            "problem": None, "fingerprint": None, "ca": None}]
    key = api("GET", "/hosts/key").json["public_key"]
    assert key.startswith("ssh-ed25519 ") and key.endswith(" limen")
    tried = api("POST", "/hosts/probe", {"name": "far", "uri": UNREACHABLE})
    assert tried.status_code == 503 and tried.json["error"]["code"] == "HOST_UNREACHABLE"
    assert api("PATCH", "/hosts/1", {"enabled": False}).status_code == 422
    assert api("DELETE", "/hosts/1").status_code == 422
    assert api("PATCH", "/hosts/9", {"enabled": True}).json["error"]["code"] == "HOST_NOT_FOUND"
    add_user(app, "alice", "alice-password-1")
    alice = Api(app, token_for(app, "alice", "alice-password-1"))
    assert alice("GET", "/hosts").status_code == 403
    assert alice("GET", "/hosts/key").status_code == 403


def test_the_command_line_lists_hosts_and_refuses_what_the_pages_refuse(app):
    cli = app.test_cli_runner()
    assert cli.invoke(args=["hosts", "list"]).output.splitlines()[1] == "local\t(local)\treachable\t0\t-"
    assert cli.invoke(args=["hosts", "key"]).output.startswith("ssh-ed25519 ")
    far = cli.invoke(args=["hosts", "add", "far", UNREACHABLE])
    assert far.exit_code == 1 and "HOST_UNREACHABLE" in far.output
    bad = cli.invoke(args=["hosts", "add", "far", "http://example.org/"])
    assert bad.exit_code == 1 and "over SSH" in bad.output
    local = cli.invoke(args=["hosts", "disable", "local"])
    assert local.exit_code == 1 and "stays enabled" in local.output
    assert "HOST_NOT_FOUND" in cli.invoke(args=["hosts", "remove", "mars"]).output
    assert len(cli.invoke(args=["hosts", "list"]).output.splitlines()) == 2  # nothing was added


def test_a_tls_host_needs_a_ca_a_client_certificate_and_its_key_each_checked_before_any_connection(app):
    from pki import make_pki

    pki = make_pki()
    api = Api(app, token_for(app, "admin", admin_password(app)))
    tls = "qemu+tls://127.0.0.1:1/system"  # nothing listens there
    missing = api("POST", "/hosts/probe", {"name": "far", "uri": tls})
    assert missing.status_code == 422
    assert set(missing.json["error"]["details"]["fields"]) == {"ca_cert", "client_cert", "client_key"}
    given = {"name": "far", "uri": tls, **{f: pki[f] for f in ("ca_cert", "client_cert", "client_key")}}
    swapped = api("POST", "/hosts", {**given, "ca_cert": pki["client_cert"], "client_key": pki["server_key"]})
    assert swapped.json["error"]["details"]["fields"] == {
        "client_cert": "This CA did not sign the client certificate.",
        "client_key": "This key is not the client certificate's.",
    }
    encrypted = api("POST", "/hosts", {**given, "client_key": "-----BEGIN ENCRYPTED PRIVATE KEY-----\nxx\n"})
    assert encrypted.json["error"]["details"]["fields"]["client_key"] == (
        "That is not an unencrypted private key in PEM form.")
    gone = api("POST", "/hosts", {"name": "far", "uri": tls, "tls_staged": "0123456789abcdef"})
    assert "test the connection again" in gone.json["error"]["details"]["fields"]["tls_staged"]
    unreachable = api("POST", "/hosts", given)
    assert unreachable.status_code == 503 and unreachable.json["error"]["code"] == "HOST_UNREACHABLE"
    assert host_count(app) == 1
    tls_dir = Path(app.instance_path) / "tls"
    assert not tls_dir.exists() or not any(tls_dir.iterdir())  # nothing of theirs kept


def test_the_serving_process_follows_the_host_table_and_forgets_certificates_no_add_followed(app):
    """A host added by another process (the command line) reaches this one's runtime at the
    watch's next round; a connection test's certificates older than an hour are removed."""
    from limen import runtime

    rt = runtime.get(app)
    with app.app_context():
        db.session.add(Host(name="far", uri=UNREACHABLE, host_key="ssh-ed25519 AAAA"))
        db.session.commit()
    assert set(rt.hosts) == {1}
    staged = remote.stage_tls(app.instance_path, "ca", "cert", "key")
    fresh = remote.stage_tls(app.instance_path, "ca", "cert", "key")
    os.utime(staged, (0, 0))  # its test was long ago
    runtime.HostsWatch(rt, 30).round()
    assert set(rt.hosts) == {1, 2} and rt.hosts[2].name == "far"
    assert not staged.exists() and fresh.exists()
    assert remote.staged_tls(app.instance_path, staged.name.removeprefix("staged-")) is None
    assert remote.staged_tls(app.instance_path, fresh.name.removeprefix("staged-")) == fresh
    assert remote.staged_tls(app.instance_path, "../../etc") is None
    with app.app_context():
        db.session.execute(Host.__table__.update().where(Host.id == 2).values(enabled=False))
        db.session.commit()
    runtime.HostsWatch(rt, 30).round()
    assert set(rt.hosts) == {1}
