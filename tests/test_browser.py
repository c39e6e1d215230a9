"""A person in headless Chromium: sign in, create a VM, watch it come up (browser tier, on the
real libvirtd)."""
import pytest
from playwright.sync_api import expect

from helpers import admin_password, free_port_range, unique_name

pytestmark = [pytest.mark.browser, pytest.mark.qemu]


def test_sign_in_create_and_watch_the_row_turn_running_without_a_reload(qemu_app, live_server, page):
    app = qemu_app()
    base = live_server(app)
    page.goto(f"{base}/")
    expect(page).to_have_url(f"{base}/login?next=/")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("h2")).to_have_text("New VM")
    page.wait_for_load_state("load")  # the signed-in page has loaded: a later load is a reload

    loads = []
    page.on("load", lambda _page: loads.append(1))
    name = unique_name()
    page.fill("input[name=name]", name)
    page.fill("input[name=memory_mib]", "128")
    page.fill("input[name=disk_gib]", "1")
    page.get_by_role("button", name="Create and start").click()

    row = page.locator("#vm-rows tr", has_text=name)
    expect(row).to_have_count(1)
    expect(page.get_by_text(name, exact=True)).to_have_count(1)  # in the table, nowhere else
    expect(page.locator("main > *")).to_have_count(5)  # message area, heading, form, owner filter, table
    expect(row).to_have_attribute("data-state", "running", timeout=60_000)
    expect(row.locator(".badge")).to_have_text("running")
    expect(page.locator("input[name=name]")).to_have_value("")  # a fresh form for the next one
    assert loads == [], "the page reloaded"

    # Delete asks first: "cancel" keeps the VM; "OK" deletes it, still without a reload.
    page.once("dialog", lambda dialog: dialog.dismiss())
    row.get_by_text("More").click()  # the row's menu holds all but its first action
    row.locator("button", has_text="Delete").click()
    expect(row).to_have_attribute("data-state", "running")
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("button", has_text="Delete").click()
    expect(row).to_have_count(0, timeout=30_000)
    assert loads == []


def test_a_bad_name_shows_its_error_next_to_the_field(app, live_server, page):
    base = live_server(app)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    page.fill("input[name=name]", "Bad Name!")
    page.get_by_role("button", name="Create and start").click()
    expect(page.locator("#err-name")).to_contain_text("lower-case letters")
    expect(page.locator("input[name=name]")).to_have_value("Bad Name!")
    expect(page.locator("#vm-rows tr.empty")).to_have_count(1)


def test_a_hostile_vm_name_is_only_text_in_the_browser(app, live_server, page):
    """A VM named by another tool as markup, with markup in libvirt's reason: shown as text,
    on the first render and after polls swap the rows in; no script runs."""
    import uuid

    from limen.extensions import db
    from limen.models import VM, User

    hostile = "<img src=x onerror=alert(1)>"
    with app.app_context():
        admin = db.session.scalar(db.select(User).where(User.username == "admin"))
        db.session.add(VM(uuid=str(uuid.uuid4()), name=hostile, owner_id=admin.id, vcpus=1,
                          memory_mib=64, disk_gib=1, state="error", state_reason=f"said {hostile}"))
        db.session.commit()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    base = live_server(app)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    row = page.locator("#vm-rows tr").first
    expect(row.locator("td.name")).to_have_text(hostile)
    expect(row.locator(".reason")).to_have_text(f"said {hostile}")
    expect(page.locator("#vm-rows img")).to_have_count(0)
    with app.app_context():  # a change: the next poll swaps the rows in
        vm = db.session.scalar(db.select(VM).where(VM.name == hostile))
        vm.state_reason = f"now {hostile}"
        db.session.commit()
    expect(row.locator(".reason")).to_have_text(f"now {hostile}")
    expect(page.locator("#vm-rows img")).to_have_count(0)
    assert dialogs == []


def test_the_row_shows_the_address_without_a_reload_and_the_details_the_ssh_command(make_app, node_xml, live_server,
                                                                                  page):
    """On the test driver, whose user-mode NICs report 192.168.0.1 (the guest tier proves a real
    guest's address)."""
    ports = free_port_range(2)
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", NETWORK="user", FORWARD_PORTS=f"{ports.start}-{ports.stop - 1}",
                   GUEST_POLL_INTERVAL=0.5)
    base = live_server(app)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_load_state("load")
    loads = []
    page.on("load", lambda _page: loads.append(1))
    page.fill("input[name=name]", "reachable")
    page.get_by_role("button", name="Create and start").click()
    row = page.locator("#vm-rows tr", has_text="reachable")
    expect(row.locator("td.address")).to_have_text("192.168.0.1", timeout=20_000)
    assert loads == [], "the page reloaded"

    row.get_by_role("link", name="reachable").click()  # its name leads to its page
    expect(page.locator(".ssh-command")).to_have_text(f"ssh -p {ports.start} <user>@127.0.0.1")
    nic = page.locator("#guest table.nics tbody tr")
    expect(nic).to_have_count(1)
    expect(nic.locator(".addresses")).to_have_text("192.168.0.1/24")
    expect(page.locator("#guest caption")).to_contain_text("addresses from libvirt's DHCP leases")

    # A second port, through the page's form: listed with its own host port.
    page.fill("input[name=guest_port]", "8080")
    page.get_by_role("button", name="Forward", exact=True).click()
    expect(page.locator(".notice")).to_contain_text("The port is forwarded")
    expect(page.locator(".forwards li[data-guest-port='8080']")).to_contain_text(
        f"127.0.0.1:{ports.start + 1} → guest port 8080/tcp")
