"""A person changes a shut-off VM's memory on its Details page, in headless Chromium; the VM
table, open in another tab, shows the new value without a reload (browser tier)."""
import pytest
from playwright.sync_api import expect

from helpers import Api, admin_password, token_for

pytestmark = pytest.mark.browser


def test_memory_changed_on_the_details_page_shows_in_the_table_without_a_reload(app, live_server, page):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    created = api("POST", "/vms", {"name": "resized", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    vm = created.json["vm"]["uuid"]
    api.wait_op(api("POST", f"/vms/{vm}/actions/force-off").json["operation"]["id"])

    base = live_server(app)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    row = page.locator("#vm-rows tr", has_text="resized")
    expect(row.locator("td.memory")).to_have_text("64 MiB")
    page.wait_for_load_state("load")
    loads = []
    page.on("load", lambda _page: loads.append(1))

    details = page.context.new_page()
    details.goto(f"{base}/vms/{vm}")
    settings = details.locator("section.settings")
    settings.get_by_label("Memory (MiB)").fill("96")
    settings.get_by_role("button", name="Change").click()
    expect(details.get_by_role("status")).to_have_text("Saved.")
    expect(details.locator("table.details td.memory")).to_have_text("96 MiB")
    # A value beyond the host is refused next to its field, and changes nothing.
    details.locator("section.settings").get_by_label("Memory (MiB)").fill("99999999")
    details.locator("section.settings").get_by_role("button", name="Change").click()
    expect(details.locator("section.settings .field-error")).to_contain_text("Choose from 64 to")

    expect(row.locator("td.memory")).to_have_text("96 MiB", timeout=15_000)  # the table's poll
    assert loads == [], "the table reloaded"
