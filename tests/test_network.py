"""A VM's network on the test driver (fast tier): what the create form offers, refusals that
leave nothing behind, and the host ports user-mode VMs are given. That QEMU listens on them
is the qemu tier's (test_network_qemu.py); that SSH reaches a guest through them, the guest
tier's (test_guest.py)."""
import socket
import xml.etree.ElementTree as ET

import pytest
from sqlalchemy import func, select

from helpers import Api, Browserless, admin_password, free_port_range, token_for, uuid_of, wait_until
from limen.extensions import db
from limen.models import VM, Forward

NODE = """<node>
<network><name>lab</name><forward mode='nat'/><bridge name='virbr9'/>
  <ip address='192.0.2.1' netmask='255.255.255.0'/></network>
<network><name>dormant</name><bridge name='virbr8'/></network>
<interface type='bridge' name='br0'><start mode='onboot'/><bridge stp='off'>
  <interface type='ethernet' name='eth0'><mac address='52:54:00:00:00:01'/></interface></bridge></interface>
</node>"""


@pytest.fixture
def ports():
    """A range of 3 host ports that nothing on this machine listens on right now."""
    return free_port_range(3)


@pytest.fixture
def make_net_app(make_app, tmp_path, ports):
    """(app, signed-in admin) on a node with the networks and bridge of NODE, user mode by
    default, forwarding from ``ports``; with config overrides."""

    def make(**config):
        node = tmp_path / "node.xml"
        node.write_text(NODE)
        app = make_app(LIBVIRT_URI=f"test://{node}", NETWORK="user", FORWARD_PORTS=f"{ports.start}-{ports.stop - 1}",
                       GUEST_POLL_INTERVAL=0.1, **config)
        b = Browserless(app.test_client())
        assert b.login("admin", admin_password(app)).status_code == 302
        return app, b

    return make


@pytest.fixture
def net_app(make_net_app):
    return make_net_app()


def _forwards(app, name: str) -> list[tuple[str, int, int]]:
    with app.app_context():
        vm = db.session.scalar(select(VM).where(VM.name == name))
        return [(f.host_address, f.host_port, f.guest_port) for f in vm.forwards]


def _nic(app, name: str) -> ET.Element:
    from limen import runtime

    conn = runtime.get(app).hypervisor.connection.get()
    return ET.fromstring(conn.lookupByName(name).XMLDesc(0)).find("./devices/interface")


def test_the_form_offers_user_mode_libvirts_networks_and_the_hosts_bridges(net_app):
    _app, b = net_app
    page = b.client.get("/").text
    options = [o.split(">")[0] for o in page.split('<select name="network"')[1].split("</select>")[0].split("<option ")[1:]]
    assert [o.split('"')[1] for o in options] == ["user", "network:dormant", "network:lab", "bridge:br0"]
    assert "selected" in options[0]  # the configured default
    assert "Network lab (nat)" in page and "Bridge br0" in page


@pytest.mark.parametrize("choice, kind, source", [
    ("network:lab", "network", {"network": "lab"}),
    ("lab", "network", {"network": "lab"}),  # a bare name is a libvirt network
    ("bridge:br0", "bridge", {"bridge": "br0"}),
    ("user", "user", None),
])
def test_the_nic_is_attached_where_the_form_says(net_app, choice, kind, source):
    app, b = net_app
    assert b.create(name="attached", network=choice).status_code == 201
    b.wait_state("attached", "running")
    nic = _nic(app, "attached")
    assert nic.get("type") == kind
    assert (nic.find("source").attrib if source else nic.find("source")) == source
    # Only user mode has no inbound path, and so a forward.
    assert [f[2] for f in _forwards(app, "attached")] == ([22] if kind == "user" else [])


def test_an_unknown_or_inactive_network_is_refused_and_nothing_is_made(net_app):
    app, b = net_app
    from limen import runtime

    runtime.get(app).hypervisor.connection.get().networkLookupByName("dormant").destroy()
    for choice, message in [("network:nowhere", "There is no libvirt network nowhere"),
                            ("bridge:br9", "There is no host bridge br9"),
                            ("network:dormant", "The libvirt network dormant is not active"),
                            ("wifi:home", "Choose &#34;user&#34;, &#34;network:&lt;name&gt;&#34;"),
                            ("<script>", "Choose &#34;user&#34;")]:
        response = b.create(name="nowhere", network=choice)
        assert response.status_code == 422, choice
        assert message in response.text, (choice, response.text)
        assert 'id="err-network"' in response.text
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(VM)) == 0
        assert db.session.scalar(select(func.count()).select_from(Forward)) == 0
    assert runtime.get(app).hypervisor.connection.get().listAllDomains() == []


def test_ports_are_unique_skip_what_the_host_uses_and_come_back_when_a_vm_goes(net_app, ports):
    app, b = net_app
    for name in ("one", "two"):
        assert b.create(name=name, network="user").status_code == 201
        b.wait_state(name, "running")
    assert _forwards(app, "one") == [("127.0.0.1", ports[0], 22)]
    assert _forwards(app, "two") == [("127.0.0.1", ports[1], 22)]

    # The API and the Details page say how to reach the guest.
    vm = b.client.get(f"/vms/{uuid_of(app, 'two')}").text
    assert f"ssh -p {ports[1]} &lt;user&gt;@127.0.0.1" in vm

    # Deleting a VM frees its port; a port another program listens on is passed over.
    assert b.htmx_post(f"/vms/{uuid_of(app, 'one')}/delete").status_code == 202
    b.wait_state("one", None)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[0]))
        squatter.listen()
        assert b.create(name="three", network="user").status_code == 201
        b.wait_state("three", "running")
        assert _forwards(app, "three") == [("127.0.0.1", ports[2], 22)]

        # The range is used up: the create is refused, with the range named, and leaves nothing.
        response = b.create(name="four", network="user")
        assert response.status_code == 409
        assert f"Every host port from {ports.start} to {ports.stop - 1} is taken" in response.text
        with app.app_context():
            assert db.session.scalar(select(VM.id).where(VM.name == "four")) is None
    assert b.create(name="four", network="user").status_code == 201  # the port is free again
    b.wait_state("four", "running")
    assert _forwards(app, "four") == [("127.0.0.1", ports[0], 22)]


def test_a_running_vms_nics_and_address_show_in_the_table_the_details_and_the_api(net_app):
    """The test driver answers every address source with the next address of the NIC's network (lab: 192.0.2.2); its domains
    have no connected agent, so LIMEN falls to libvirt's DHCP leases and says so."""
    app, b = net_app
    assert b.create(name="addressed", network="network:lab").status_code == 201
    b.wait_state("addressed", "running")
    wait_until(lambda: "192.0.2.2" in b.row_html("addressed"), what="the address in the row")
    uuid = uuid_of(app, "addressed")
    mac = _nic(app, "addressed").find("mac").get("address")
    api = Api(app, token_for(app, "admin", admin_password(app)))

    vm = api("GET", f"/vms/{uuid}").json
    assert vm["address"] == "192.0.2.2"
    assert vm["address_source"] == "lease"
    assert vm["guest_agent"] == "disconnected"
    assert vm["interfaces"] == [{"mac": mac, "model": "virtio", "network": "network:lab",
                                 "addresses": ["192.0.2.2/24"]}]
    page = b.client.get(f"/vms/{uuid}").text
    card = page.split('id="guest"')[1].split("</section>")[0]
    assert "addresses from libvirt&#39;s DHCP leases" in card
    assert mac in card and "192.0.2.2/24" in card and "network:lab" in card
    assert "not connected" in card
    assert 'id="guest" hx-get=' in page  # the card polls itself while the VM runs

    b.htmx_post(f"/vms/{uuid}/force-off")
    b.wait_state("addressed", "shutoff")
    wait_until(lambda: not _guest_row(app, uuid)["interfaces"][0]["addresses"],
               what="the addresses to go once it stopped")
    assert "192.0.2.2" not in b.row_html("addressed")
    vm = api("GET", f"/vms/{uuid}").json
    assert (vm["address"], vm["address_source"], vm["guest_agent"]) == (None, None, None)
    assert vm["interfaces"][0]["mac"] == mac  # the NIC is still there
    card = b.client.get(f"/vms/{uuid}/guest").text
    assert "shown while it runs" in card and "hx-get" not in card  # a stopped VM's card stops polling


def test_a_vm_without_a_nic_lists_none(net_app):
    app, b = net_app
    assert b.create(name="offline", network="none").status_code == 201
    b.wait_state("offline", "running")
    uuid = uuid_of(app, "offline")
    wait_until(lambda: _guest_row(app, uuid) is not None, what="the guest watch to read it")
    vm = Api(app, token_for(app, "admin", admin_password(app)))("GET", f"/vms/{uuid}").json
    assert (vm["interfaces"], vm["address"]) == ([], None)


def _guest_row(app, uuid: str):
    with app.app_context():
        return db.session.scalar(select(VM.guest).where(VM.uuid == uuid))


def test_an_owner_forwards_more_guest_ports_and_removes_them(net_app, ports):
    app, b = net_app
    assert b.create(name="web", network="user").status_code == 201
    b.wait_state("web", "running")
    uuid = uuid_of(app, "web")
    api = Api(app, token_for(app, "admin", admin_password(app)))
    [ssh] = _forwards(app, "web")

    # The page's form: a host port from the range, shown with its Remove button.
    response = b.client.post(f"/vms/{uuid}/forwards", data={"csrf_token": b.csrf, "guest_port": "80"})
    assert response.status_code == 302
    page = b.client.get(response.headers["Location"]).text
    [web] = [f for f in _forwards(app, "web") if f[2] == 80]
    assert web[1] in ports and web[1] != ssh[1]
    assert f"127.0.0.1:{web[1]} → guest port 80/tcp" in page and "Stop forwarding host port" in page

    # Refused, and nothing changes: a port forwarded already, a port that is no port, a protocol.
    for body, field in (({"guest_port": 80}, "guest_port"), ({"guest_port": 0}, "guest_port"),
                        ({"guest_port": 65536}, "guest_port"), ({"guest_port": 53, "protocol": "sctp"}, "protocol")):
        refused = api("POST", f"/vms/{uuid}/forwards", body)
        assert refused.status_code == 422, body
        assert field in refused.json["error"]["details"]["fields"], body
    form = b.client.post(f"/vms/{uuid}/forwards", data={"csrf_token": b.csrf, "guest_port": "eighty"})
    assert form.status_code == 422 and "A guest port is a whole number" in form.text
    assert sorted(_forwards(app, "web")) == sorted([ssh, web])

    # The API: the last port of the range, then none is left.
    dns = api("POST", f"/vms/{uuid}/forwards", {"guest_port": 53, "protocol": "udp"})
    assert dns.status_code == 201
    assert (dns.json["protocol"], dns.json["guest_port"], dns.json["host_address"]) == ("udp", 53, "127.0.0.1")
    full = api("POST", f"/vms/{uuid}/forwards", {"guest_port": 443})
    assert (full.status_code, full.json["error"]["code"]) == (409, "PORT_IN_USE")
    assert len(_forwards(app, "web")) == 3

    # Removing one frees its host port for the next.
    assert api("DELETE", f"/vms/{uuid}/forwards/{dns.json['id']}").status_code == 204
    assert api("DELETE", f"/vms/{uuid}/forwards/{dns.json['id']}").status_code == 404
    again = api("POST", f"/vms/{uuid}/forwards", {"guest_port": 443})
    assert (again.status_code, again.json["host_port"]) == (201, dns.json["host_port"])
    listed = {f["guest_port"]: f["host_port"] for f in api("GET", f"/vms/{uuid}").json["forwards"]}
    assert listed == {22: ssh[1], 80: web[1], 443: dns.json["host_port"]}


def test_only_a_user_mode_vm_takes_forwards(net_app):
    app, b = net_app
    assert b.create(name="bridged", network="network:lab").status_code == 201
    b.wait_state("bridged", "running")
    api = Api(app, token_for(app, "admin", admin_password(app)))
    refused = api("POST", f"/vms/{uuid_of(app, 'bridged')}/forwards", {"guest_port": 80})
    assert refused.status_code == 422
    assert "Only a user-mode VM" in refused.json["error"]["details"]["fields"]["guest_port"]
    assert _forwards(app, "bridged") == []


def test_a_vm_has_at_most_forwards_per_vm_ports(make_net_app):
    app, b = make_net_app(FORWARDS_PER_VM=2)
    assert b.create(name="capped", network="user").status_code == 201
    b.wait_state("capped", "running")
    api = Api(app, token_for(app, "admin", admin_password(app)))
    uuid = uuid_of(app, "capped")
    assert api("POST", f"/vms/{uuid}/forwards", {"guest_port": 80}).status_code == 201
    refused = api("POST", f"/vms/{uuid}/forwards", {"guest_port": 443})
    assert refused.status_code == 422
    assert "at most 2 forwarded ports" in refused.json["error"]["details"]["fields"]["guest_port"]
    assert sorted(f[2] for f in _forwards(app, "capped")) == [22, 80]
