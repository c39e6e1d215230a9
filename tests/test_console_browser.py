"""The console as a person uses it, in headless Chromium against the real libvirtd (browser
tier): open it from the table, see the screen, send Ctrl+Alt+Del, and read a refusal."""
import json
import threading
import urllib.request

import libvirt
import pytest
from playwright.sync_api import expect

from helpers import admin_password, click_console, unique_name, uuid_of, wait_until
from limen import runtime
from test_media_qemu import screen_text

pytestmark = [pytest.mark.browser, pytest.mark.qemu]

NON_BLANK = """() => {
  const canvas = document.querySelector('#screen canvas');
  if (!canvas || !canvas.width) return false;
  const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let lit = 0;
  for (let i = 0; i < pixels.length; i += 4) if (pixels[i] + pixels[i + 1] + pixels[i + 2] > 150) lit++;
  return lit > 200;  // the BIOS's text, not an empty canvas
}"""


@pytest.fixture
def stopped_vm(qemu_admin, live_server, page):
    """A signed-in page on the VM table, with one stopped VM."""
    app, admin = qemu_admin()
    base = live_server(app)
    name = unique_name()
    admin.create_stopped(app, name)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#vm-rows tr", has_text=name)).to_have_attribute("data-state", "shutoff")
    return app, base, name


PHASES = """() => {
  window.phases = [];
  document.addEventListener("DOMContentLoaded", () => {
    const line = document.getElementById("console-status");
    if (!line) return;
    new MutationObserver(() => {
      if (window.phases[window.phases.length - 1] !== line.textContent) window.phases.push(line.textContent);
    }).observe(line, {childList: true, subtree: true, characterData: true});
  });
}"""


def test_the_console_of_a_stopped_vm_shows_its_screen_and_sends_ctrl_alt_del(stopped_vm, page):
    app, base, name = stopped_vm
    page.add_init_script(f"({PHASES})()")
    click_console(page.locator("#vm-rows tr", has_text=name))
    status = page.locator("#console-status")
    expect(status).to_have_text("Connected", timeout=60_000)
    page.wait_for_function(NON_BLANK, timeout=30_000)
    phases = page.evaluate("window.phases")
    assert "Starting VM…" in phases and phases[-1] == "Connected", phases
    assert set(phases) <= {"Asking for access…", "Starting VM…", "Waiting for the display…", "Connected"}, phases

    uuid = uuid_of(app, name)
    conn = runtime.get(app).hypervisor.connection.get()
    rebooted = threading.Event()
    callback = conn.domainEventRegisterAny(conn.lookupByUUIDString(uuid), libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
                                           lambda *_: rebooted.set(), None)
    try:
        # SeaBIOS sets up the keyboard after its banner shows, and a key pressed during that
        # can make it give the keyboard up: wait until it is trying to boot, as a person would,
        # then press until it resets, with a deadline.
        dom = conn.lookupByUUIDString(uuid)
        wait_until(lambda: "Boot" in screen_text(dom), 30, "SeaBIOS to try booting")
        button = page.get_by_role("button", name="Ctrl+Alt+Del")
        for _ in range(20):
            button.click()
            if rebooted.wait(1.5):
                break
        assert rebooted.is_set(), "the guest did not reset after Ctrl+Alt+Del within 30 s"
    finally:
        conn.domainEventDeregisterAny(callback)
    expect(status).to_have_text("Connected")


def test_a_refused_ticket_shows_its_sentence(stopped_vm, page):
    app, base, name = stopped_vm

    def spoil(route):
        """Let LIMEN issue the ticket, then hand the page a WebSocket URL with a bad one."""
        request = route.request
        headers = {k: v for k, v in request.headers.items() if k in ("cookie", "x-csrftoken", "origin")}
        with urllib.request.urlopen(urllib.request.Request(request.url, method="POST", headers=headers)) as r:
            body = json.load(r)
        body["ws_url"] = body["ws_url"].replace(body["ticket"], "not-a-ticket")
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route("**/console/ticket?kind=screen", spoil)
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    click_console(page.locator("#vm-rows tr", has_text=name))
    status = page.locator("#console-status")
    expect(status).to_have_attribute("data-code", "TICKET_INVALID", timeout=30_000)
    expect(status).to_contain_text("This console link has expired or was already used. Press Reconnect")
    expect(status).not_to_contain_text("unknown")
    # Reconnect gets a fresh ticket (no longer spoiled) and starts the VM.
    page.unroute("**/console/ticket?kind=screen")
    page.get_by_role("button", name="Reconnect").click()
    expect(status).to_have_text("Connected", timeout=60_000)
    assert len(sockets) == 2  # one per attempt: no reconnect loop


def test_a_vm_that_cannot_start_says_why_in_the_page(stopped_vm, page, qemu_host):
    app, base, name = stopped_vm
    uuid = uuid_of(app, name)
    qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"]).storageVolLookupByName(
        f"{uuid}.qcow2").delete(0)
    click_console(page.locator("#vm-rows tr", has_text=name))
    status = page.locator("#console-status")
    expect(status).to_have_attribute("data-code", "VM_START_FAILED", timeout=60_000)
    expect(status).to_contain_text("The hypervisor could not start the VM")
    expect(status.locator(".detail")).to_contain_text(f"{uuid}.qcow2")  # libvirt's reason


def test_a_paused_vms_console_says_why_and_resume_connects_it(stopped_vm, page, qemu_host):
    app, base, name = stopped_vm
    dom = qemu_host.lookupByUUIDString(uuid_of(app, name))
    dom.create()
    dom.suspend()  # paused by another tool: LIMEN's row follows, and the console must say so
    row = page.locator("#vm-rows tr", has_text=name)
    expect(row).to_have_attribute("data-state", "paused", timeout=30_000)
    expect(row.locator(".state")).to_contain_text("paused by a user")
    click_console(row)
    status = page.locator("#console-status")
    expect(status).to_have_attribute("data-code", "VM_PAUSED", timeout=30_000)
    expect(status).to_contain_text("The VM is paused. Resume it to use its console.")
    expect(status.locator(".detail")).to_have_text("paused: paused by a user")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED  # nothing was started or resumed behind the user's back
    page.get_by_role("button", name="Resume").click()
    expect(status).to_have_text("Connected", timeout=60_000)
    expect(page.get_by_role("button", name="Resume")).to_be_hidden()
    assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def test_one_console_over_the_users_limit_names_the_limit(stopped_vm, page):
    app, base, name = stopped_vm
    app.config["CONSOLES_PER_USER"] = 1
    row = page.locator("#vm-rows tr", has_text=name)
    click_console(row)
    status = page.locator("#console-status")
    expect(status).to_have_text("Connected", timeout=60_000)
    second = page.context.new_page()  # the same user, a second tab
    second.goto(page.url)
    refused = second.locator("#console-status")
    expect(refused).to_have_attribute("data-code", "CONSOLE_LIMIT", timeout=30_000)
    expect(refused).to_contain_text("Too many consoles are open. Close one, then try again.")
    expect(refused.locator(".detail")).to_have_text("at most 1 per user")
    page.close()  # the first console ends: the second tab may reconnect
    from limen.console import standing
    wait_until(lambda: standing.slots.open() == 0, 10, "the first console to give its place back")
    second.get_by_role("button", name="Reconnect").click()
    expect(refused).to_have_text("Connected", timeout=60_000)
