"""The VM table as a person browses it (fast tier): a search, filters and a sort in the URL,
pages of 50, and polls that answer with only the rows that changed."""
import re

import pytest

from helpers import add_user, find_row, make_fleet, signed_in, uuid_of, wait_until
from limen import runtime
from limen.extensions import db
from limen.models import VM, Operation, address_key
from limen.vms.table import moves

HTMX = {"HX-Request": "true"}
ROW_IDS = re.compile(r'<tr id="vm-([0-9a-f-]{36})"')


def names(markup: str) -> list[str]:
    return re.findall(r'<tr id="vm-[^"]+" data-name="([^"]+)"', markup)


def poll_url(markup: str) -> str:
    return re.search(r'<div id="vm-poll"[^>]* hx-get="([^"]+)"', markup).group(1).replace("&amp;", "&")


@pytest.fixture
def fleet(app, admin):
    make_fleet(app, 120)
    return admin


def test_a_search_a_state_and_a_sort_come_from_the_url_and_a_page_holds_50(fleet):
    page = fleet.client.get("/").text
    assert names(page) == [f"vm-{i:03d}" for i in range(50)]
    assert "1–50 of 120 VMs" in page and "Page 1 of 3" in page
    assert names(fleet.client.get("/?q=VM-01").text) == [f"vm-{i:03d}" for i in range(10, 20)]  # any case

    running = fleet.client.get("/?state=running&sort=name&dir=desc").text
    assert names(running) == [f"vm-{i:03d}" for i in range(118, 18, -2)]
    assert "1–50 of 60 VMs match this search" in running
    assert 'aria-sort="descending"' in running
    # The next page keeps the search and the sort, and so does the poll.
    next_page = re.search(r'id="page-next" href="([^"]+)"', running).group(1).replace("&amp;", "&")
    assert set(next_page.partition("?")[2].split("&")) == {"state=running", "dir=desc", "page=2"}  # name: the default
    second = fleet.client.get(next_page).text
    assert names(second) == [f"vm-{i:03d}" for i in range(18, -1, -2)]
    assert "51–60 of 60" in second
    assert {"state=running", "dir=desc", "page=2"} <= set(poll_url(second).partition("?")[2].split("&"))
    stale = re.sub(r"v=[^&]+", "v=stale", poll_url(second))  # a page of another time: all of it
    assert names(fleet.client.get(stale, headers=HTMX).text) == names(second)

    by_vcpus = names(fleet.client.get("/?sort=vcpus&dir=desc").text)
    assert by_vcpus[:30] == sorted((f"vm-{i:03d}" for i in range(3, 120, 4)), reverse=True)
    # What the table cannot use reads as its default: a page past the end is the last one.
    assert names(fleet.client.get("/?sort=nonsense&page=99").text) == [f"vm-{i:03d}" for i in range(100, 120)]
    assert "No VMs match this search" in fleet.client.get("/?q=nothing-like-it").text


def test_the_state_filter_offers_the_settled_states_before_any_vm_is_in_them(app, admin):
    """The filter is drawn with the page: a VM that comes to be paused later can be found."""
    page = admin.client.get("/").text
    offered = re.findall(r"<option(?: selected)?>([a-z-]+)</option>", page.split('id="vm-state-filter"')[1].split("</select>")[0])
    assert offered == ["paused", "running", "shutoff"]


def test_addresses_sort_by_number(app, admin):
    assert address_key("10.0.0.2") < address_key("10.0.0.10") < address_key("192.168.1.1") < address_key("::1")
    assert address_key("fe80::1") > address_key("::1") and address_key("not an ip").startswith("9")
    make_fleet(app, 4)
    with app.app_context():  # as the guest watch writes what a guest told
        for name, address in (("vm-000", "10.0.0.10"), ("vm-001", "10.0.0.9"), ("vm-002", "10.0.0.2")):
            db.session.execute(db.update(VM).where(VM.name == name).values(address=address,
                                                                           address_key=address_key(address)))
        db.session.commit()
    # By number, and a VM with no address last either way.
    assert names(admin.client.get("/?sort=address").text) == ["vm-002", "vm-001", "vm-000", "vm-003"]
    assert names(admin.client.get("/?sort=address&dir=desc").text) == ["vm-000", "vm-001", "vm-002", "vm-003"]


def test_a_poll_answers_exactly_the_rows_that_changed(app, admin, libvirt_conn):
    make_fleet(app, 5)
    url = poll_url(admin.client.get("/").text)
    assert admin.client.get(url, headers=HTMX).status_code == 204

    libvirt_conn.lookupByName("vm-002").destroy()  # behind LIMEN's back
    answer = wait_until(lambda: (r := admin.client.get(url, headers=HTMX)).status_code == 200 and r,
                        what="the poll to bring the change")
    assert ROW_IDS.findall(answer.text) == [uuid_of(app, "vm-002")]
    assert find_row(answer.text, "vm-002").attrs["data-state"] == "shutoff"
    assert 'id="vm-rows"' not in answer.text  # not the whole body
    # The answer's poller carries the new version: nothing has changed since.
    assert admin.client.get(poll_url(answer.text), headers=HTMX).status_code == 204

    # An Operation changes its row too: the old version now gets both rows.
    assert admin.htmx_post(f"/vms/{uuid_of(app, 'vm-004')}/pause").status_code == 202
    admin.wait_state("vm-004", "paused")
    again = admin.client.get(url, headers=HTMX).text
    assert 'id="vm-rows"' not in again, "the whole page came"
    assert sorted(ROW_IDS.findall(again)) == sorted([uuid_of(app, "vm-002"), uuid_of(app, "vm-004")])


def test_another_users_activity_gives_a_poll_204_and_tells_nothing(app, admin, libvirt_conn):
    """The change counter moves for every tenant; what a poll answers follows only the rows its
    user may see, and the version it carries tells nothing of how often others' changed."""
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.create(name="bobs").status_code == 201
    bob.wait_state("bobs", "running")
    url = poll_url(bob.client.get("/").text)
    assert bob.client.get(url, headers=HTMX).status_code == 204

    make_fleet(app, 2)  # the admin's VMs come, and one of them changes
    libvirt_conn.lookupByName("vm-000").destroy()
    admin.wait_state("vm-000", "shutoff")
    assert bob.client.get(url, headers=HTMX).status_code == 204
    assert poll_url(bob.client.get("/").text) == url  # the same version after all that

    libvirt_conn.lookupByName("bobs").destroy()  # bob's own changes: his row comes
    answer = wait_until(lambda: (r := bob.client.get(url, headers=HTMX)).status_code == 200 and r,
                        what="bob's poll to bring his row")
    assert ROW_IDS.findall(answer.text) == [uuid_of(app, "bobs")]


def test_a_row_that_comes_or_leaves_comes_alone_with_where_it_goes(app, admin):
    make_fleet(app, 3)
    url = poll_url(admin.client.get("/").text)
    assert admin.create(name="newcomer").status_code == 201
    answer = admin.client.get(url, headers=HTMX).text
    # Only the row that came, before the row it now precedes, with the count: not the page.
    assert 'id="vm-rows"' not in answer and names(answer) == ["newcomer"]
    assert f'<tbody hx-swap-oob="beforebegin:#vm-{uuid_of(app, "vm-000")}">' in answer
    assert 'id="vm-count" aria-live="polite" hx-swap-oob="true">1–4 of 4 VMs' in answer
    # What the admin has used of their quota comes with it.
    assert re.search(r'id="quota-left" hx-swap-oob="true">Your quota:\s*4 of 10 VMs,', answer)

    admin.wait_state("newcomer", "running")
    assert admin.htmx_post(f"/vms/{uuid_of(app, 'newcomer')}/force-off").status_code == 202
    admin.wait_state("newcomer", "shutoff")
    url, gone = poll_url(admin.client.get("/").text), uuid_of(app, "newcomer")
    assert admin.htmx_post(f"/vms/{gone}/delete").status_code == 202
    admin.wait_state("newcomer", None)
    answer = admin.client.get(url, headers=HTMX).text
    assert 'id="vm-rows"' not in answer and names(answer) == []
    assert f'<tr id="vm-{gone}" hx-swap-oob="delete"></tr>' in answer
    assert re.search(r'id="quota-left" hx-swap-oob="true">Your quota:\s*3 of 10 VMs,', answer)


def test_moves_say_where_each_row_that_came_goes_and_which_left():
    assert moves(list("abcd"), list("abcd")).came == {}
    # Several before one row that stayed, in order; those after every one that stayed go last.
    found = moves(list("abcd"), list("xyaczw"))
    assert list(found.came.items()) == [("x", "a"), ("y", "a"), ("z", None), ("w", None)]
    assert found.left == ["b", "d"]
    assert moves(list("ab"), list("cd")).came == {"c": None, "d": None}  # none in common
    assert moves(list("abc"), list("bac")) is None  # two that stayed changed places


def test_a_later_page_shifts_by_the_row_that_came_before_it(app, admin):
    app.config["TABLE_PAGE_SIZE"] = 3
    make_fleet(app, 5)
    page = admin.client.get("/?page=2").text
    assert names(page) == ["vm-003", "vm-004"]
    assert admin.create(name="aaa").status_code == 201  # first by name: page 1 pushes one down
    answer = admin.client.get(poll_url(page), headers=HTMX).text
    assert names(answer) == ["vm-002"] and 'id="vm-rows"' not in answer
    assert f'<tbody hx-swap-oob="beforebegin:#vm-{uuid_of(app, "vm-003")}">' in answer
    assert "4–6 of 6 VMs" in answer


def test_a_row_that_moves_brings_the_whole_page(app, admin, libvirt_conn):
    make_fleet(app, 3)  # vm-000 and vm-002 run
    url = poll_url(admin.client.get("/?sort=state").text)
    assert names(admin.client.get("/?sort=state").text) == ["vm-000", "vm-002", "vm-001"]
    libvirt_conn.lookupByName("vm-000").destroy()  # now shut off: it moves down the sort
    answer = wait_until(lambda: (r := admin.client.get(url, headers=HTMX)).status_code == 200 and r,
                        what="the poll to bring the change")
    assert 'id="vm-rows"' in answer.text and names(answer.text) == ["vm-002", "vm-000", "vm-001"]


def test_a_page_the_server_no_longer_remembers_comes_whole(app, admin):
    make_fleet(app, 2)
    url = poll_url(admin.client.get("/").text)
    runtime.get(app).changes._shown = type(runtime.get(app).changes._shown)()  # as after a restart
    assert admin.create(name="newcomer").status_code == 201
    answer = admin.client.get(url, headers=HTMX).text
    assert 'id="vm-rows"' in answer and names(answer) == ["newcomer", "vm-000", "vm-001"]


def test_the_database_bumps_a_rows_version_on_every_write(app, admin):
    """Triggers do it (the state sync writes with plain UPDATEs): a migration that rebuilds the
    table without them fails here."""
    make_fleet(app, 1)
    with app.app_context():
        before = db.session.scalar(db.select(VM.row_version))
        db.session.execute(db.update(VM).values(state_reason="by hand"))
        db.session.commit()
        after = db.session.scalar(db.select(VM.row_version))
    assert after > before > 0


def test_bulk_force_off_queues_one_operation_each_and_says_what_became_of_each(app, admin):
    make_fleet(app, 6)  # vm-000, 002 and 004 run
    ticked = [uuid_of(app, name) for name in ("vm-000", "vm-002", "vm-001")]
    answer = admin.client.post("/vms/bulk/force-off", data={"vm": ticked}, headers={**HTMX, "X-CSRFToken": admin.csrf})
    assert answer.status_code == 202
    assert "Forcing off 2 VMs: vm-000, vm-002." in answer.text
    # Already where the action takes it: left alone, and no refusal.
    assert "Left alone, already shutoff: vm-001." in answer.text and 'data-code="BULK_DONE"' in answer.text
    for name in ("vm-000", "vm-002"):
        admin.wait_state(name, "shutoff")
    assert admin.row_state("vm-004") == "running"
    with app.app_context():
        ops = db.session.scalars(db.select(Operation).where(Operation.kind == "force-off")).all()
    assert sorted(op.vm_uuid for op in ops) == sorted(ticked[:2])

    def idle():
        with app.app_context():
            return not db.session.scalar(db.select(Operation).where(Operation.state.in_(Operation.ACTIVE)).limit(1))
    wait_until(idle, what="the force-offs to end")
    again = admin.client.post("/vms/bulk/force-off", data={"vm": ticked[:2]}, headers={**HTMX, "X-CSRFToken": admin.csrf})
    assert again.status_code == 200 and "Left alone, already shutoff: vm-000, vm-002." in again.text
    nothing = admin.client.post("/vms/bulk/start", data={}, headers={**HTMX, "X-CSRFToken": admin.csrf})
    assert nothing.status_code == 422 and "Tick at least one VM first." in nothing.text


def test_a_bulk_action_never_reaches_another_users_vm(app, admin, libvirt_conn):
    make_fleet(app, 1)  # the admin's vm-000, running
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    answer = bob.client.post("/vms/bulk/force-off", data={"vm": [uuid_of(app, "vm-000")]},
                             headers={**HTMX, "X-CSRFToken": bob.csrf})
    assert answer.status_code == 404
    assert "a VM that is not there: <strong>VM_NOT_FOUND</strong>" in answer.text and "vm-000" not in answer.text
    assert libvirt_conn.lookupByName("vm-000").isActive()


def test_a_whole_body_answer_brings_the_count_and_the_pages_with_it(app, admin):
    app.config["TABLE_PAGE_SIZE"] = 3
    make_fleet(app, 3)
    page = admin.client.get("/").text
    assert "1–3 of 3 VMs" in page and 'id="vm-pager" aria-label="Pages of VMs" hidden' in page
    url = poll_url(page)
    assert admin.create(name="a-fourth").status_code == 201
    answer = admin.client.get(url, headers=HTMX).text
    assert '<p class="count" id="vm-count" aria-live="polite" hx-swap-oob="true">1–3 of 4 VMs' in answer
    assert 'id="page-next"' in answer and "Page 1 of 2" in answer


def test_an_operation_alone_bumps_its_vms_version(app, admin):
    make_fleet(app, 1)
    with app.app_context():
        vm_uuid, before = db.session.execute(db.select(VM.uuid, VM.row_version)).one()
        db.session.add(Operation(kind="start", vm_uuid=vm_uuid, state="failed", steps=[]))
        db.session.commit()
        after = db.session.scalar(db.select(VM.row_version))
    assert after > before
