"""Every page on a phone and on a laptop, in headless Chromium (browser tier): nothing is wider
than the window (a wide table scrolls in its own box), and axe-core finds nothing, in the light
scheme and the dark one."""
from pathlib import Path

import pytest
from playwright.sync_api import expect

from helpers import Api, admin_password, token_for

pytestmark = pytest.mark.browser
WIDTHS = (360, 1366)


def test_no_page_is_wider_than_the_window(app, live_server, page):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    created = api("POST", "/vms", {"name": "a-vm-with-a-rather-long-name-for-a-phone", "vcpus": 1,
                                   "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    vm = created.json["vm"]["uuid"]
    api("PATCH", f"/vms/{vm}", {"description": "a-description-without-any-space-" * 8})
    base = live_server(app)
    pages = ["/", f"/vms/{vm}", f"/vms/{vm}/console", f"/vms/{vm}/serial", "/media/", "/account", "/admin/users", "/admin/users/admin",
             "/admin/audit", "/admin/hosts", "/host", "/tasks", "/api/docs", "/no/such/page"]
    wide = []
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{base}/login")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", admin_password(app))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/")
        for path in pages:
            page.goto(base + path)
            scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
            if scroll > inner:
                wide.append(f"{path} at {width} px: {scroll} px wide")
        page.goto(f"{base}/account")
        page.locator("form.who button").click()  # signed out: the sign-in page too
        page.wait_for_url(f"{base}/login")
        scroll, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        if scroll > inner:
            wide.append(f"/login at {width} px: {scroll} px wide")
    assert wide == []


AXE = Path(__file__).parent / "vendor" / "axe-core-4.14.1" / "axe.min.js"


def axe_violations(page) -> list[str]:
    """What axe-core finds on the page as it is (its rules by default: WCAG 2 A and AA, and best
    practices). Evaluated through the browser's debugging protocol, which the page's CSP does
    not govern: LIMEN serves no such script."""
    page.evaluate(AXE.read_text())
    found = page.evaluate("axe.run(document).then(r => r.violations.map(v => "
                          "v.id + ' (' + v.nodes.length + '): ' + v.nodes[0].target.join(' ')))")
    return found


def test_axe_finds_nothing_on_any_page(app, live_server, page):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    created = api("POST", "/vms", {"name": "checked", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    vm = created.json["vm"]["uuid"]
    api.wait_op(api("POST", f"/vms/{vm}/actions/pause").json["operation"]["id"])  # the paused badge too
    base = live_server(app)
    found = []
    for scheme, width in [(scheme, width) for scheme in ("light", "dark") for width in WIDTHS]:
        page.emulate_media(color_scheme=scheme)  # the page follows prefers-color-scheme
        page.set_viewport_size({"width": width, "height": 800})
        page.goto(f"{base}/login")
        found += [f"/login at {width} px, {scheme}: {v}" for v in axe_violations(page)]
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", admin_password(app))
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base}/")
        for path in ("/", f"/vms/{vm}", f"/vms/{vm}/console", f"/vms/{vm}/serial", "/media/", "/account",
                     "/admin/users", "/admin/users/admin", "/admin/audit", "/admin/hosts", "/host", "/tasks", "/api/docs", "/no/such/page"):
            page.goto(base + path)
            found += [f"{path} at {width} px, {scheme}: {v}" for v in axe_violations(page)]
        # The table as a person leaves it: a row's menu open, an answer and a bulk summary shown.
        page.goto(f"{base}/")
        row = page.locator("#vm-rows tr[data-name=checked]")
        row.locator("summary").click()
        row.locator("button.a-resume").evaluate("b => b.setAttribute('formaction', b.formAction.replace('/resume', '/start'))")
        row.locator("button.a-resume").click()  # a start of a paused VM: refused, and said so
        page.locator("#flash [data-code=VM_STATE_CONFLICT]").wait_for()
        row.locator("input[type=checkbox]").check()
        page.locator("#bulk-start").click()
        page.locator("#flash [data-code=BULK_PARTIAL]").wait_for()
        row.locator("summary").click()  # (an action closes its menu): open again
        expect(row.locator("details.menu")).to_have_attribute("open", "")
        found += [f"/ (menu and answers) at {width} px, {scheme}: {v}" for v in axe_violations(page)]
        page.goto(f"{base}/account")
        page.locator("form.who button").click()
        page.wait_for_url(f"{base}/login")
    assert found == [], "\n".join(found)
