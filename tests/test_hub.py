"""A VM's page as its hub, and the operations page (fast tier): the state and every action it
allows, kept true by a poll; what was done to the VM lately; and each user's own operations."""
import re

from helpers import add_user, signed_in, uuid_of

HTMX = {"HX-Request": "true"}


def buttons(markup: str) -> list[str]:
    return re.findall(r'class="a-([a-z-]+)"', markup)


def test_the_vm_page_offers_what_its_state_allows_and_acts_in_place(admin, app):
    admin.create(name="hub")
    admin.wait_state("hub", "running")
    uuid = uuid_of(app, "hub")
    page = admin.client.get(f"/vms/{uuid}").text
    head = page[page.index('<div id="vm-head"'):page.index("</form>", page.index('<div id="vm-head"'))]
    assert buttons(head) == ["shutdown", "force-off", "reboot", "pause", "delete"]
    assert 'id="hub-console"' in head and 'id="hub-serial"' in head

    # From the page, with htmx: its head comes back, with the paused VM's actions.
    answer = admin.client.post(f"/vms/{uuid}/pause", data={"back": "detail"}, headers={**HTMX, "X-CSRFToken": admin.csrf})
    assert answer.status_code == 202 and answer.text.lstrip().startswith('<div id="vm-head"')
    admin.wait_state("hub", "paused")
    polled = admin.client.get(f"/vms/{uuid}/head", headers=HTMX).text
    assert 'badge s-paused' in polled and buttons(polled) == ["force-off", "resume", "delete"]
    # Without JavaScript the form comes back to the page.
    plain = admin.client.post(f"/vms/{uuid}/resume", data={"back": "detail", "csrf_token": admin.csrf})
    assert plain.status_code == 302 and plain.headers["Location"] == f"/vms/{uuid}"
    admin.wait_state("hub", "running")

    # What was done, newest first: the Operations with their steps, and the audit log's entries.
    page = admin.client.get(f"/vms/{uuid}").text
    history = page[page.index('id="history"'):]
    assert re.findall(r'<li data-kind="([a-z-]+)" data-state="done">', history) == ["resume", "pause", "create"]
    assert "<li>Creating the disk</li>" in history
    assert "<code>vm.resume</code> accepted" in history and "<code>vm.create</code>" in history

    # Delete from the page goes back to the table (htmx follows HX-Redirect).
    admin.htmx_post(f"/vms/{uuid}/force-off", {"back": "detail"})
    admin.wait_state("hub", "shutoff")
    gone = admin.client.post(f"/vms/{uuid}/delete", data={"back": "detail"}, headers={**HTMX, "X-CSRFToken": admin.csrf})
    assert gone.status_code == 202 and gone.headers["HX-Redirect"] == "/"
    admin.wait_state("hub", None)
    # A page left open on it hears once that it is gone, and stops asking (htmx: 286).
    last = admin.client.get(f"/vms/{uuid}/head", headers=HTMX)
    assert last.status_code == 286 and "This VM is gone" in last.text
    assert admin.client.get(f"/vms/{uuid}/head").status_code == 404


def test_the_operations_page_lists_the_users_own_with_steps_and_results(admin, app):
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    bob.create(name="bobs")
    bob.wait_state("bobs", "running")
    admin.create(name="admins")
    admin.wait_state("admins", "running")
    bob.htmx_post(f"/vms/{uuid_of(app, 'bobs')}/resume")  # refused: it runs (no Operation)
    bob.htmx_post(f"/vms/{uuid_of(app, 'bobs')}/force-off")
    bob.wait_state("bobs", "shutoff")
    bob.htmx_post(f"/vms/{uuid_of(app, 'bobs')}/delete")
    bob.wait_state("bobs", None)

    page = bob.client.get("/tasks").text
    rows = re.findall(r'<tr id="task-\d+" data-state="(\w+)">\s*<td>.*?</td>\s*<td>(.*?)</td>\s*<td>([a-z-]+)</td>', page, re.S)
    assert [(state, vm, kind) for state, vm, kind in rows] == [
        ("done", "bobs (gone)", "delete"), ("done", "bobs (gone)", "force-off"), ("done", "bobs (gone)", "create")]
    assert "<li>Defining the VM</li>" in page and "admins" not in page
    assert "admins" in admin.client.get("/tasks").text


def test_a_vm_page_shows_its_owner_what_was_done_to_it_not_what_others_were_refused(admin, app):
    add_user(app, "alice", "alice-password-1")
    add_user(app, "bob", "bob-password-1")
    alice, bob = signed_in(app, "alice", "alice-password-1"), signed_in(app, "bob", "bob-password-1")
    alice.create(name="alices")
    alice.wait_state("alices", "running")
    uuid = uuid_of(app, "alices")
    assert bob.htmx_post(f"/vms/{uuid}/force-off").status_code == 404  # a probe, audited as refused
    assert admin.htmx_post(f"/vms/{uuid}/pause").status_code == 202  # an admin acts on it
    admin.wait_state("alices", "paused")
    history = alice.client.get(f"/vms/{uuid}").text
    history = history[history.index('id="history"'):]
    assert "<code>vm.pause</code> accepted" in history and "<code>vm.create</code>" in history
    assert "bob" not in history and "VM_NOT_FOUND" not in history
    everything = admin.client.get(f"/vms/{uuid}").text  # the audit log's readers see the refusal
    assert "bob <code>vm.force-off</code> VM_NOT_FOUND" in everything


def test_the_screen_is_a_png_while_the_vm_runs(admin, app, libvirt_conn):
    admin.create(name="shown")
    admin.wait_state("shown", "running")
    uuid = uuid_of(app, "shown")
    shot = admin.client.get(f"/vms/{uuid}/screen.png")
    assert shot.status_code == 200 and shot.mimetype == "image/png" and shot.data.startswith(b"\x89PNG\r\n\x1a\n")
    assert shot.headers["Cache-Control"] == "no-store"
    libvirt_conn.lookupByName("shown").destroy()
    admin.wait_state("shown", "shutoff")
    refused = admin.client.get(f"/vms/{uuid}/screen.png")
    assert refused.status_code == 409 and b"VM_NOT_RUNNING" in refused.data


def test_a_ppm_screen_becomes_the_same_pixels_in_a_png():
    import struct
    import zlib

    from limen.hypervisor.display import png_from_ppm

    pixels = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90])  # 3 x 2
    png = png_from_ppm(b"P6\n# QEMU\n3 2\n255\n" + pixels)
    width, height, depth, colour = struct.unpack(">IIBB", png[16:26])
    assert (width, height, depth, colour) == (3, 2, 8, 2)
    idat = png.index(b"IDAT")
    size = struct.unpack(">I", png[idat - 4:idat])[0]
    rows = zlib.decompress(png[idat + 4:idat + 4 + size])
    assert rows == b"\x00" + pixels[:9] + b"\x00" + pixels[9:]
    assert png.endswith(b"IEND\xaeB`\x82")


def test_a_ppm_that_is_not_whole_is_refused():
    import pytest

    from limen.hypervisor.display import png_from_ppm

    for bad in (b"P6\n3 2\n255\n" + bytes(17), b"P6\n3\n", b"P5\n3 2\n255\n" + bytes(6), b"P6\n3 2\n65535\n"):
        with pytest.raises(ValueError):
            png_from_ppm(bad)
