"""The VM table for a person, in headless Chromium (browser tier): what an action answers
stays on the page while the table polls, and so does the keyboard's focus."""
import pytest
from playwright.sync_api import expect

from helpers import Api, admin_password, make_fleet, sign_in_page, token_for

pytestmark = pytest.mark.browser


@pytest.fixture
def table(make_app, node_xml, live_server, page):
    """(page, api, uuid of a second VM): the table, signed in as admin, polling twice a second,
    with two running VMs: "steady", and "busy" that the test pauses and resumes so that polls
    bring new rows."""
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", POLL_INTERVAL=0.5)
    api = Api(app, token_for(app, "admin", admin_password(app)))
    for name in ("steady", "busy"):
        created = api("POST", "/vms", {"name": name, "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
        api.wait_op(created.json["operation"]["id"])
    base = live_server(app)
    sign_in_page(page, base, app)
    expect(page.locator("#vm-rows tr", has_text="steady")).to_have_attribute("data-state", "running")
    return page, api, created.json["vm"]["uuid"]


def changed_polls(page, api, busy: str, count: int) -> None:
    """``count`` polls that each bring new rows: "busy" is paused or resumed before each."""
    for n in range(count):
        action = "pause" if n % 2 == 0 else "resume"
        with page.expect_response(lambda r: "/vms/rows" in r.url and r.status == 200, timeout=10_000):
            api.wait_op(api("POST", f"/vms/{busy}/actions/{action}").json["operation"]["id"])
        page.wait_for_function("state => document.querySelector('#vm-rows tr[data-name=busy]')?.dataset.state "
                               "=== state", arg="paused" if action == "pause" else "running")


def test_an_actions_error_survives_three_polls(table):
    page, api, busy = table
    row = page.locator("#vm-rows tr", has_text="steady")
    # A button for an action the row does not offer now (as a row a moment old would): Resume.
    row.locator("button.a-shutdown").evaluate("b => b.setAttribute('formaction', b.formAction.replace('/shutdown', '/resume'))")
    row.locator("summary").click()
    row.locator("button.a-shutdown").click()
    message = page.locator("#flash")
    expect(message).to_contain_text("Cannot resume a VM that is running")
    changed_polls(page, api, busy, 3)
    expect(message).to_contain_text("Cannot resume a VM that is running")
    message.get_by_role("button", name="Dismiss").click()  # until the person dismisses it
    expect(message).to_be_empty()


def stale_resume(page, name: str) -> None:
    """Press what a row a moment old would offer: Resume, on a VM that runs (answered 409)."""
    row = page.locator(f"#vm-rows tr[data-name={name}]")
    if row.locator("details.menu[open]").count() == 0:
        row.locator("summary").click()
    row.locator("button.a-shutdown").evaluate("b => b.setAttribute('formaction', b.formAction.replace('/shutdown', '/resume'))")
    row.locator("button.a-shutdown").click()


def test_an_answer_stays_until_a_newer_one_about_the_same_vm(table):
    page, api, busy = table
    answers = page.locator("#flash > *")
    stale_resume(page, "steady")
    expect(answers).to_have_count(1)
    expect(answers.first).to_contain_text("Cannot resume a VM that is running")
    busy_row = page.locator("#vm-rows tr[data-name=busy]")
    busy_row.locator("summary").click()
    busy_row.locator("button.a-pause").click()  # an action on another VM: steady's answer stays
    expect(busy_row).to_have_attribute("data-state", "paused")
    expect(answers).to_have_count(1)
    expect(answers.first).to_contain_text("Cannot resume a VM that is running")
    stale_resume(page, "steady")  # a newer answer about steady takes the place of the older
    expect(answers).to_have_count(1)
    steady = page.locator("#vm-rows tr[data-name=steady]")
    steady.locator("summary").click()  # (an action closes its menu)
    steady.locator("button.a-pause").click()  # and one that succeeds leaves none
    expect(steady).to_have_attribute("data-state", "paused")
    expect(answers).to_have_count(0)


def test_an_answer_is_not_lost_to_polls_that_come_due_while_it_is_awaited(table):
    """A poll would swap in the row whose form waits for its answer (its VM changed
    meanwhile), and htmx would drop the answer: polls wait until the answer is in."""
    page, api, busy = table
    held = []
    page.route("**/start*", lambda route: held.append(route))  # the server is slow to answer
    page.evaluate("window.duePolls = 0; document.addEventListener('htmx:beforeRequest', "
                  "e => { if (e.detail.elt.hasAttribute('data-poll')) window.duePolls++; })")
    row = page.locator("#vm-rows tr[data-name=steady]")
    row.locator("summary").click()
    row.locator("button.a-shutdown").evaluate("b => b.setAttribute('formaction', b.formAction.replace('/shutdown', '/start'))")
    row.locator("button.a-shutdown").click()
    steady = next(vm for vm in api("GET", "/vms").json["items"] if vm["name"] == "steady")
    api.wait_op(api("POST", f"/vms/{steady['uuid']}/actions/pause").json["operation"]["id"])
    page.wait_for_function("() => window.duePolls >= 3", timeout=10_000)
    assert len(held) == 1
    held[0].continue_()
    expect(page.locator("#flash")).to_contain_text("Cannot start a VM that is paused")
    expect(row).to_have_attribute("data-state", "paused")  # and the polls go on


def focused(page) -> list:
    """What has the keyboard's focus: its tag, its class, and the name of its row."""
    return page.evaluate("document.activeElement && [document.activeElement.tagName, "
                         "document.activeElement.className, document.activeElement.closest('tr')?.dataset.name]")


def test_focus_survives_a_poll(table):
    page, api, busy = table
    # On the row the polls bring anew: its element is replaced each time.
    page.locator("#vm-rows tr[data-name=busy] a.details-link").focus()
    before = page.evaluate_handle("document.querySelector('#vm-rows tr[data-name=busy]')")
    changed_polls(page, api, busy, 3)
    assert page.evaluate("b => b !== document.querySelector('#vm-rows tr[data-name=busy]')", before)
    assert focused(page) == ["A", "details-link", "busy"]


def test_rows_that_come_and_leave_take_their_places_and_the_rest_of_the_table_stays(table):
    page, api, busy = table
    body = page.evaluate_handle("document.getElementById('vm-rows')")
    order = "[...document.querySelectorAll('#vm-rows tr[data-name]')].map(r => r.dataset.name).join(' ')"
    made = {}
    for name in ("alpha", "zulu"):  # made elsewhere (the API): the polls bring them
        created = api("POST", "/vms", {"name": name, "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
        made[name] = created.json["vm"]["uuid"]
        api.wait_op(created.json["operation"]["id"])
    page.wait_for_function(f"() => {order} === 'alpha busy steady zulu'", timeout=10_000)
    expect(page.locator("#vm-count")).to_contain_text("1–4 of 4 VMs")
    expect(page.locator("#quota-left")).to_contain_text("4 of 10 VMs")
    api.wait_op(api("POST", f"/vms/{made['alpha']}/actions/force-off").json["operation"]["id"])
    api.wait_op(api("DELETE", f"/vms/{made['alpha']}").json["operation"]["id"])
    page.wait_for_function(f"() => {order} === 'busy steady zulu'", timeout=10_000)
    expect(page.locator("#vm-count")).to_contain_text("1–3 of 3 VMs")
    # Each came and went alone: the table's body is the element it was.
    assert page.evaluate("b => b === document.getElementById('vm-rows')", body)


def test_an_action_chosen_by_keyboard_leaves_the_focus_on_its_row(table):
    page, api, busy = table
    row = page.locator("#vm-rows tr[data-name=busy]")
    row.locator("summary").focus()
    page.keyboard.press("Enter")
    row.locator("button.a-pause").focus()
    page.keyboard.press("Enter")  # Pause: its button gives way to Resume
    expect(row).to_have_attribute("data-state", "paused")
    expect(row.locator("details.menu")).not_to_have_attribute("open", "")  # the menu closed
    # The focus stays on the row (its menu's button, or its name while the action runs), not
    # the top of the page: the next action is a few keys away.
    page.wait_for_function("() => document.activeElement.closest('tr')?.dataset.name === 'busy'", timeout=5_000)
    row.locator("summary").focus()
    page.keyboard.press("Enter")
    expect(row.locator("button.a-resume")).to_be_visible()


@pytest.fixture
def fleet_page(make_app, node_xml, live_server, page):
    """The table of 60 VMs (vm-000 …, the even ones running), signed in as admin."""
    app = make_app(LIBVIRT_URI=f"test://{node_xml}")
    make_fleet(app, 60)
    base = live_server(app)
    sign_in_page(page, base, app)
    expect(page.locator("#vm-count")).to_contain_text("1–50 of 60 VMs")
    return page, base


def shows(page, names: list[str]) -> None:
    """Wait until the table's first rows are ``names``."""
    page.wait_for_function("names => JSON.stringify([...document.querySelectorAll('#vm-rows tr[data-name]')]"
                           ".slice(0, names.length).map(r => r.dataset.name)) === JSON.stringify(names)",
                           arg=names, timeout=10_000)


def test_search_sort_and_page_are_kept_in_the_url_and_back_and_forward_walk_them(fleet_page):
    page, base = fleet_page
    page.keyboard.press("/")  # "/" goes to the search
    expect(page.locator("#vm-search")).to_be_focused()
    page.keyboard.type("vm-0")
    expect(page).to_have_url(f"{base}/?q=vm-0")
    expect(page.locator("#vm-count")).to_contain_text("1–50 of 60 VMs match this search")
    page.select_option("#vm-state-filter", "running")
    expect(page).to_have_url(f"{base}/?q=vm-0&state=running")
    expect(page.locator("#vm-count")).to_contain_text("1–30 of 30")
    page.locator("#sort-name").click()  # by name, the other way
    expect(page).to_have_url(f"{base}/?q=vm-0&state=running&dir=desc")
    shows(page, ["vm-058", "vm-056", "vm-054"])

    page.select_option("#vm-state-filter", "")  # the sort stays with a new filter
    expect(page).to_have_url(f"{base}/?q=vm-0&dir=desc")
    page.locator("#page-next").click()
    expect(page).to_have_url(f"{base}/?q=vm-0&dir=desc&page=2")
    expect(page.locator("#vm-count")).to_contain_text("51–60 of 60")
    shows(page, [f"vm-{i:03d}" for i in range(9, -1, -1)])

    page.go_back()
    expect(page).to_have_url(f"{base}/?q=vm-0&dir=desc")
    expect(page.locator("#vm-count")).to_contain_text("1–50 of 60")
    page.go_back()
    expect(page).to_have_url(f"{base}/?q=vm-0&state=running&dir=desc")
    expect(page.locator("#vm-state-filter")).to_have_value("running")
    shows(page, ["vm-058", "vm-056", "vm-054"])
    page.go_forward()
    page.go_forward()
    expect(page).to_have_url(f"{base}/?q=vm-0&dir=desc&page=2")
    expect(page.locator("#vm-count")).to_contain_text("51–60 of 60")
    expect(page.locator("#vm-search")).to_have_value("vm-0")
    page.reload()  # a link shows the same table
    expect(page.locator("#vm-count")).to_contain_text("51–60 of 60")
    shows(page, [f"vm-{i:03d}" for i in range(9, -1, -1)])


def in_view(page, locator) -> bool:
    box = locator.bounding_box()
    return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= page.viewport_size["height"]


@pytest.mark.parametrize("width", [390, 1366])
def test_an_answer_to_an_action_far_down_the_page_shows_where_the_person_is(fleet_page, width):
    page, base = fleet_page
    page.set_viewport_size({"width": width, "height": 800})
    stale_resume(page, "vm-048")  # far down the page: the window scrolls to it
    answer = page.locator("#flash [data-code=VM_STATE_CONFLICT]")
    expect(answer).to_be_visible()
    assert page.evaluate("window.scrollY") > 800
    assert in_view(page, answer), answer.bounding_box()


def test_on_a_phone_a_rows_name_stays_in_sight_beside_its_actions(fleet_page):
    page, base = fleet_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("table.vms").evaluate("t => { t.scrollLeft = t.scrollWidth; }")  # to the actions
    row = page.locator("#vm-rows tr[data-name=vm-000]")
    row.scroll_into_view_if_needed()
    name, actions = row.locator("td.name").bounding_box(), row.locator("td.actions").bounding_box()
    assert page.locator("table.vms").evaluate("t => t.scrollLeft") > 0  # it did scroll
    assert 0 <= name["x"] < 100 and actions["x"] + actions["width"] <= 390
    assert name["x"] + name["width"] <= actions["x"]  # side by side, not one over the other
    # What is at the name's place on the screen is the name.
    at = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('td')?.className",
                       [name["x"] + 10, name["y"] + name["height"] / 2])
    assert at == "name"


def test_bulk_shutdown_of_three_vms_says_what_became_of_each(fleet_page):
    page, base = fleet_page
    for name in ("vm-000", "vm-002", "vm-004", "vm-001"):  # three running, and one shut off
        page.locator(f"#vm-rows tr[data-name={name}] input[type=checkbox]").check()
    page.locator("#bulk-shutdown").click()
    message = page.locator("#flash")
    expect(message).to_contain_text("Shutting down 3 VMs: vm-000, vm-002, vm-004.")
    expect(message).to_contain_text("Left alone, already shutoff: vm-001.")
    for name in ("vm-000", "vm-002", "vm-004"):
        expect(page.locator(f"#vm-rows tr[data-name={name}]")).to_have_attribute("data-state", "shutoff")
    expect(page.locator("#vm-rows tr[data-name=vm-006]")).to_have_attribute("data-state", "running")
    expect(page.locator("#vm-rows input[type=checkbox]:checked")).to_have_count(0)  # done with them
    expect(message).to_contain_text("Shutting down 3 VMs")  # the polls since leave it


def test_a_ticked_box_and_an_open_menu_survive_their_rows_update(table):
    page, api, busy = table
    row = page.locator("#vm-rows tr[data-name=busy]")
    row.locator("input[type=checkbox]").check()
    row.locator("summary").focus()
    page.keyboard.press("Enter")  # a menu opens with Enter
    expect(row.locator("details.menu")).to_have_attribute("open", "")
    changed_polls(page, api, busy, 2)  # each brings this very row anew
    expect(row.locator("input[type=checkbox]")).to_be_checked()
    expect(row.locator("details.menu")).to_have_attribute("open", "")
    assert focused(page) == ["SUMMARY", "", "busy"]  # the focus stayed on its menu's toggle
    page.keyboard.press("Escape")  # and closes with Escape
    expect(row.locator("details.menu")).not_to_have_attribute("open", "")
    expect(row.locator("summary")).to_be_focused()
