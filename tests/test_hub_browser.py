"""A VM's page as its hub, in headless Chromium (browser tier): a picture of its screen, and
its actions, whose answers the page shows in place."""
import pytest
from playwright.sync_api import expect

from helpers import Api, admin_password, sign_in_page, token_for

pytestmark = pytest.mark.browser


@pytest.fixture
def running_vm(make_app, node_xml, live_server, page):
    """(app, api, base URL, the VM's uuid): a running VM "hubbed", and the table signed in as
    admin, polling twice a second."""
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", POLL_INTERVAL=0.5)
    api = Api(app, token_for(app, "admin", admin_password(app)))
    created = api("POST", "/vms", {"name": "hubbed", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    base = live_server(app)
    sign_in_page(page, base, app)
    return app, api, base, created.json["vm"]["uuid"]


def test_the_vm_page_shows_its_screen_and_acts_in_place(running_vm, page):
    _app, _api, base, _vm = running_vm
    page.get_by_role("link", name="hubbed").click()  # the table's name leads to the page

    thumbnail = page.locator("#thumbnail img")
    expect(thumbnail).to_be_visible()
    assert thumbnail.evaluate("img => img.naturalWidth") > 0
    expect(page.locator("#thumbnail figcaption")).to_contain_text("The screen at")

    caption = page.locator("#thumbnail figcaption")
    first = caption.text_content()
    expect(caption).not_to_have_text(first, timeout=15_000)  # a new picture, some seconds later
    expect(caption).to_contain_text("The screen at")

    loads = []
    page.on("load", lambda _page: loads.append(1))
    head = page.locator("#vm-head")
    head.get_by_role("button", name="Pause").click()
    expect(head.locator(".badge")).to_have_text("paused")
    expect(head.get_by_role("button", name="Resume")).to_be_visible()
    head.get_by_role("button", name="Resume").click()
    expect(head.locator(".badge")).to_have_text("running")
    assert loads == [], "the page reloaded"

    page.get_by_role("link", name="Operations", exact=True).click()
    rows = page.locator("#task-rows tr")
    expect(rows.first).to_contain_text("resume")
    expect(rows.nth(1)).to_contain_text("pause")
    expect(rows.nth(2)).to_contain_text("create")


def test_a_vm_shut_off_from_its_page_offers_what_a_shut_off_vm_allows(running_vm, page):
    _app, _api, base, vm = running_vm
    page.goto(f"{base}/vms/{vm}")
    name = page.get_by_role("textbox", name="Name", exact=True).first
    expect(name).to_have_attribute("readonly", "")  # renamed while shut off only
    page.on("dialog", lambda dialog: dialog.accept())  # Force off asks first
    page.locator("#vm-head").get_by_role("button", name="Force off").click()
    expect(page.locator("#vm-head .badge")).to_have_text("shutoff")
    expect(name).not_to_have_attribute("readonly", "", timeout=10_000)  # without a reload by hand
    expect(page.locator("section.clone")).to_be_visible()
