"""The serial console as a person uses it, in headless Chromium against the real libvirtd
(browser tier): the Serial tab starts the VM and shows what the firmware writes, and a second
page gets the named choice to take the line over or stay out. The guest tier signs in
through it (test_guest_serial)."""
import re

import pytest
from playwright.sync_api import expect

from helpers import click_console
from test_console_browser import stopped_vm  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.browser, pytest.mark.qemu]


def terminal_text(page) -> str:
    return page.locator("#terminal .xterm-rows").inner_text()


def test_the_serial_tab_shows_the_line_and_a_second_page_may_take_it_over(stopped_vm, page):  # noqa: F811
    app, base, name = stopped_vm
    click_console(page.locator("#vm-rows tr", has_text=name))
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Serial").click()
    expect(page).to_have_title(f"{name} · serial console · LIMEN")
    status = page.locator("#console-status")
    expect(status).to_have_text("Connected. Press Enter for a prompt.", timeout=60_000)
    # The VM was started for it; SeaBIOS writes on the serial line too.
    expect(page.locator("#terminal .xterm-rows")).to_contain_text("SeaBIOS", timeout=60_000)

    second = page.context.new_page()  # the same user, another tab
    second.goto(page.url)
    other = second.locator("#console-status")
    expect(other).to_have_attribute("data-code", "SERIAL_BUSY", timeout=30_000)
    expect(other.locator(".detail")).to_have_text("Held by admin.")
    second.get_by_role("button", name="Stay out").click()
    expect(other).to_contain_text("You stayed out")
    expect(status).to_have_text("Connected. Press Enter for a prompt.")  # the first keeps the line

    second.get_by_role("button", name="Reconnect").click()
    expect(other).to_have_attribute("data-code", "SERIAL_BUSY", timeout=30_000)
    second.get_by_role("button", name="Take over").click()
    expect(other).to_have_text("Connected. Press Enter for a prompt.", timeout=30_000)
    expect(status).to_have_attribute("data-code", "SERIAL_TAKEN_OVER", timeout=30_000)
    expect(status.locator(".detail")).to_have_text("Taken over by admin.")
    expect(page.get_by_role("button", name="Take over")).to_be_visible()
    assert "SeaBIOS" in terminal_text(page)  # the lines stay after the connection ends


def test_the_terminal_fits_its_window(stopped_vm, page):  # noqa: F811
    app, base, name = stopped_vm
    page.set_viewport_size({"width": 800, "height": 600})
    click_console(page.locator("#vm-rows tr", has_text=name))
    page.get_by_role("link", name="Serial").click()
    terminal = page.locator("#terminal")
    expect(terminal).to_have_attribute("data-cols", re.compile(r"\d+"))
    small = int(terminal.get_attribute("data-cols")), int(terminal.get_attribute("data-rows"))
    page.set_viewport_size({"width": 1400, "height": 1000})
    expect(terminal).not_to_have_attribute("data-cols", str(small[0]))
    large = int(terminal.get_attribute("data-cols")), int(terminal.get_attribute("data-rows"))
    assert large[0] > small[0] and large[1] > small[1], (small, large)
    expect(page.locator("#term-size")).to_have_text(f"{large[0]}×{large[1]}")
