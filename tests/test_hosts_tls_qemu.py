"""A host reached over TLS (qemu tier): added with a CA, a client certificate and its key, each
checked; a VM made there, and its screen through QEMU's own TLS. The host is
scripts/second-host with a TLS port (tests/fixtures/hosts.py, ``tls_host``)."""
import re
import socket
import struct
from pathlib import Path

import libvirt
import pytest

from helpers import Reader, find_row, get_ticket, open_console, open_libvirt, wait_until
from test_console_qemu import BANNER, ws_url
from test_serial_qemu import OPEN, opened, read_until, serial_url
from test_hosts_qemu import host_cell, migrated_op, post, stopped_here, uuid_in

pytestmark = pytest.mark.qemu


def test_a_tls_host_is_added_with_its_certificates_and_a_vm_there_shows_its_screen_through_tls(
        qemu_admin, tls_host, live_server):
    app, admin = qemu_admin()
    pki = tls_host.pki
    given = {"name": "secure", "uri": tls_host.uri, "ca_cert": pki["ca_cert"], "client_cert": pki["client_cert"],
             "client_key": pki["client_key"]}

    # Certificates that cannot work are named before any connection, and nothing is kept.
    wrong_ca = post(admin, "/admin/hosts/probe", {**given, "ca_cert": pki["other_ca"]})
    assert wrong_ca.status_code == 422 and "This CA did not sign the client certificate." in wrong_ca.text
    wrong_key = post(admin, "/admin/hosts/probe", {**given, "client_key": pki["server_key"]})
    assert wrong_key.status_code == 422 and "This key is not the client certificate&#39;s." in wrong_key.text
    garbage = post(admin, "/admin/hosts/probe", {**given, "client_cert": "-----BEGIN CERTIFICATE-----\nno"})
    assert garbage.status_code == 422 and "That is not a certificate in PEM form." in garbage.text
    # The host's certificate must name the host as the URI does (it names 127.0.0.1 only).
    by_name = post(admin, "/admin/hosts/probe", {**given, "uri": tls_host.uri.replace("127.0.0.1", "localhost")})
    assert by_name.status_code == 503 and "HOST_UNREACHABLE" in by_name.text
    assert "certificate" in by_name.text.lower()
    assert not list((Path(app.instance_path) / "tls").glob("staged-*"))  # nothing kept of those

    tried = post(admin, "/admin/hosts/probe", given)
    assert tried.status_code == 200, tried.text[-3000:]
    assert "Its certificate is signed by the CA CN=LIMEN test CA" in tried.text
    assert pki["client_key"].splitlines()[1] not in tried.text  # the key is not sent back
    staged = re.search(r'name="tls_staged" value="([0-9a-f]{16})"', tried.text).group(1)
    added = post(admin, "/admin/hosts", {"name": "secure", "uri": tls_host.uri, "tls_staged": staged})
    assert added.status_code == 302, added.text[-3000:]
    hosts_page = admin.client.get("/admin/hosts").text
    assert 'data-host="secure"' in hosts_page and "TLS, CA CN=LIMEN test CA" in hosts_page
    key_file = Path(app.instance_path) / "tls" / "2" / "clientkey.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600

    assert admin.create(name="sealed", host="secure").status_code == 201
    admin.wait_state("sealed", "running", 60)
    assert '<td class="host">secure</td>' in host_cell(admin, "sealed")
    vm = uuid_in(host_cell(admin, "sealed"))
    there = open_libvirt(tls_host.test_uri)
    try:
        port = int(re.search(r"<graphics type='vnc' port='(\d+)'", there.lookupByUUIDString(vm).XMLDesc(0)).group(1))
    finally:
        there.close()
    # In clear, its VNC server offers nothing but VeNCrypt (TLS) ...
    with socket.create_connection(("127.0.0.1", port), timeout=10) as plain:
        assert plain.recv(12) == BANNER
        plain.sendall(BANNER)
        count = plain.recv(1)[0]
        assert list(plain.recv(count)) == [19]
    # ... and the browser's console reaches the screen through it.
    screen_shows(app, admin, vm, "sealed", live_server)
    # The serial console, through libvirt's stream over TLS, starts it and carries the firmware's words.
    assert admin.htmx_post(f"/vms/{vm}/force-off").status_code == 202
    admin.wait_state("sealed", "shutoff", 30)
    base = live_server(app)
    serial = open_console(serial_url(base, admin, vm), base)
    try:
        assert opened(serial) == OPEN
        read_until(serial, b"SeaBIOS")  # fails, naming what came, if it does not within its deadline
    finally:
        serial.close()

    assert admin.htmx_post(f"/vms/{vm}/delete").status_code == 202
    wait_until(lambda: find_row(admin.rows(), "sealed") is None, 30, "the VM to be deleted")
    assert post(admin, "/admin/hosts/2/remove").status_code == 302
    assert not key_file.parent.exists()  # its certificates are forgotten with it


def screen_shows(app, admin, vm: str, name: str, live_server) -> None:
    """The VM's console, opened as noVNC would, gets as far as its screen's size and name."""
    base = live_server(app)
    ws = open_console(ws_url(base, vm, get_ticket(admin, vm).json["ticket"]), base)
    rfb = Reader(ws)
    assert rfb.read(12) == BANNER
    ws.send(BANNER)
    assert rfb.read(rfb.read(1)[0]) == b"\x01"  # None: LIMEN holds the TLS session
    ws.send(bytes([1]))
    assert rfb.read(4) == b"\x00\x00\x00\x00"
    ws.send(bytes([1]))  # ClientInit
    init = rfb.read(24)
    width, height = struct.unpack(">HH", init[:4])
    assert 320 <= width <= 4096 and 200 <= height <= 4096
    assert name in rfb.read(struct.unpack(">I", init[20:24])[0]).decode()
    ws.close()


def persistent_listen(conn, vm: str) -> str:
    xml = conn.lookupByUUIDString(vm).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    return re.search(r"<graphics type='vnc'.*?(<listen [^>]*>)", xml, re.S).group(1)


def test_vms_move_to_a_tls_host_and_back_and_listen_as_each_hosts_vms_do(
        qemu_admin, qemu_host, tls_host, live_server, tmp_path):
    app, admin = qemu_admin()
    # Added from the command line, with the certificates' files (the add tests the connection too).
    files = []
    for field in ("ca_cert", "client_cert", "client_key"):
        (tmp_path / field).write_text(tls_host.pki[field])
        files += [f"--{field.replace('_', '-')}", str(tmp_path / field)]
    cli = app.test_cli_runner()
    added = cli.invoke(args=["hosts", "add", "secure", tls_host.uri, *files])
    assert added.exit_code == 0 and added.output == "added host secure\n", added.output
    listed = cli.invoke(args=["hosts", "list"]).output
    assert re.search(rf"^secure\t{re.escape(tls_host.uri)}\treachable\t0\tTLS CA ([0-9A-F]{{2}}:){{31}}[0-9A-F]{{2}}$",
                     listed, re.M), listed
    assert admin.create(name="wanderer", host="local").status_code == 201
    admin.wait_state("wanderer", "running", 30)
    vm = uuid_in(host_cell(admin, "wanderer"))

    # Live, peer to peer: the local libvirtd opens the TLS host with LIMEN's certificates.
    assert post(admin, f"/vms/{vm}/migrate", {"host": "secure"}).status_code == 302
    wait_until(lambda: (op := migrated_op(app, vm)) is not None and not op.active, 120, "the migration to end")
    op = migrated_op(app, vm)
    assert op.state == "done", (op.error_code, op.error_message)
    wait_until(lambda: '<td class="host">secure</td>' in host_cell(admin, "wanderer"), 10, "the row to follow it")
    there = open_libvirt(tls_host.test_uri)
    try:
        assert "address=" not in persistent_listen(there, vm)  # where the TLS host's qemu.conf says
        screen_shows(app, admin, vm, "wanderer", live_server)

        # Back, driven over both connections: it listens on 127.0.0.1 again.
        assert post(admin, f"/vms/{vm}/migrate", {"host": "local"}).status_code == 302
        wait_until(lambda: (op := migrated_op(app, vm)) is not None and not op.active and op.params["to"] == 1,
                   120, "the migration back to end")
        assert migrated_op(app, vm).state == "done", migrated_op(app, vm).error_message
        assert "address='127.0.0.1'" in persistent_listen(qemu_host, vm)
        assert vm not in {d.UUIDString() for d in there.listAllDomains()}
    finally:
        there.close()

    # Shut off, it moves too, and is defined there as that host's VMs are.
    still = stopped_here(app, admin, "sleeper")
    assert post(admin, f"/vms/{still}/migrate", {"host": "secure"}).status_code == 302
    wait_until(lambda: (op := migrated_op(app, still)) is not None and not op.active, 60, "the move to end")
    assert migrated_op(app, still).state == "done", migrated_op(app, still).error_message
    there = open_libvirt(tls_host.test_uri)
    try:
        assert "address=" not in persistent_listen(there, still)
    finally:
        there.close()
    for name, uuid in (("wanderer", vm), ("sleeper", still)):
        assert admin.htmx_post(f"/vms/{uuid}/delete").status_code == 202
        wait_until(lambda: find_row(admin.rows(), name) is None, 30, f"{name} to be deleted")
