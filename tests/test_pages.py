"""What every page does for a person (fast tier): a failed sign-in keeps the username, an
error page speaks plainly and keeps its code small, and the site has an icon."""
from helpers import Api, Browserless, add_user, admin_password, signed_in, token_for


def test_a_failed_sign_in_keeps_the_username_and_asks_for_the_password(app):
    b = Browserless(app.test_client())
    refused = b.login("admin", "not-the-password")
    assert refused.status_code == 401
    assert 'name="username" autocomplete="username" required value="admin"' in refused.text
    assert 'type="password" autocomplete="current-password" required autofocus' in refused.text


def test_an_error_page_says_what_happened_in_plain_words(app):
    admin = signed_in(app, "admin", admin_password(app))
    page = admin.client.get("/no/such/page")
    assert page.status_code == 404
    assert "<h1>Not found</h1>" in page.text
    assert "There is nothing at this address" in page.text and "requested URL" not in page.text
    assert "<code>NOT_FOUND</code>" in page.text
    assert admin.client.get("/api/v1/nope", headers={"Accept": "application/json"}).json["error"]["code"] == "NOT_FOUND"


def test_every_page_has_the_sites_icon(app):
    page = Browserless(app.test_client()).client.get("/login").text
    assert '<link rel="icon" href="/static/img/favicon.svg" type="image/svg+xml">' in page
    icon = app.test_client().get("/static/img/favicon.svg")
    assert icon.status_code == 200 and icon.data.startswith(b"<svg")


def test_the_create_form_shows_the_quota_and_starts_within_it(app):
    add_user(app, "bob", "bob-password-1", quota_memory_mib=300, quota_disk_gib=4, quota_vcpus=None)
    page = signed_in(app, "bob", "bob-password-1").client.get("/").text
    assert "0 MiB of 300 MiB memory" in page and "0 GiB of 4 GiB disk" in page
    assert 'name="memory_mib" type="number" value="300"' in page  # not 512: it would not fit
    assert 'name="disk_gib" type="number" value="4"' in page
    assert 'name="vcpus" type="number" value="1"' in page


def test_the_api_docs_show_the_schemas_as_json_reads(app):
    page = signed_in(app, "admin", admin_password(app)).client.get("/api/docs").text
    assert "\\u0027" not in page and "\\u003c" not in page
    assert "the VM&#39;s pending says so" in page  # an apostrophe, escaped as text in the page


def test_the_host_overview_shows_capacity_against_what_the_vms_take(app):
    api = Api(app, token_for(app, "admin", admin_password(app)))
    for name, vcpus, memory in (("runs", 2, 128), ("rests", 1, 64)):
        created = api("POST", "/vms", {"name": name, "vcpus": vcpus, "memory_mib": memory, "disk_gib": 1})
        api.wait_op(created.json["operation"]["id"])
    api.wait_op(api("POST", f"/vms/{created.json['vm']['uuid']}/actions/force-off").json["operation"]["id"])
    admin = signed_in(app, "admin", admin_password(app))
    page = admin.client.get("/host").text
    cpus = 16  # the test driver's node
    assert '<h2 id="host-1">local</h2>' in page
    assert f'<tr data-resource="cpus"><th>vCPUs</th><td>{cpus}</td><td>2</td><td>3</td>' in page
    # The test driver's CPU times never move, so no share of them is busy (the qemu tier sees one).
    assert "<td>not known yet</td>" in page
    assert "<td>128 MiB</td><td>192 MiB</td>" in page  # running, and committed
    assert f'data-pool="{app.config["STORAGE_POOL"]}"' in page
    assert '<span class="badge s-running">running</span> 1' in page and '<span class="badge s-shutoff">shutoff</span> 1' in page
    assert "libvirt 9." in page and "New VMs run" in page
    add_user(app, "bob", "bob-password-1")
    bob = signed_in(app, "bob", "bob-password-1")
    assert bob.client.get("/host").status_code == 403
    # Asked by htmx, the refusal goes to the message area, about what was read: it replaces an
    # older refusal of that read only, and leaves the page's answers (a bulk summary) alone.
    refused = bob.client.get("/host", headers={"HX-Request": "true"})
    assert refused.status_code == 403 and refused.headers["HX-Retarget"] == "#flash"
    assert 'data-about="/host"' in refused.text
