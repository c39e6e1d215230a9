"""An admin uploads an ISO in headless Chromium and watches the progress bar (browser tier,
on the real libvirtd: the file goes through libvirt's volume upload)."""
import pytest
from playwright.sync_api import expect

from helpers import admin_password
from test_media import iso_bytes

pytestmark = [pytest.mark.browser, pytest.mark.qemu]


def test_an_upload_shows_its_progress_up_to_100_percent(qemu_app, qemu_host, live_server, page, tmp_path):
    app = qemu_app()
    base = live_server(app)
    iso = tmp_path / "netinst.iso"
    data = iso_bytes(8 * 1024 * 1024)
    iso.write_bytes(data)

    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(app))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("link", name="Media").click()
    expect(page.locator("h1")).to_have_text("Install media")

    page.set_input_files("#upload input[name=file]", str(iso))
    expect(page.locator("#upload input[name=name]")).to_have_value("netinst")  # from the file name
    page.select_option("#upload select[name=os_kind]", "linux")
    # Every value the percentage shows, as it shows it.
    page.evaluate("""() => {
        const out = document.querySelector('#upload output');
        window.seen = [];
        new MutationObserver(() => seen.push(out.textContent)).observe(out, {childList: true, characterData: true, subtree: true});
    }""")
    # Uploads at 4 MiB/s (Chromium's own throttle), so the bar has something to show on the way.
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0, "downloadThroughput": -1,
                                                  "uploadThroughput": 4 * 1024 * 1024})
    page.get_by_role("button", name="Upload").click()

    expect(page.locator("#upload progress")).to_have_attribute("value", "100", timeout=60_000)
    expect(page.locator(".upload-status")).to_have_text("Uploaded netinst.")
    expect(page.locator("#upload output")).to_have_text("100 %")
    seen = page.evaluate("window.seen")
    assert seen[-1] == "100 %" and all(s.endswith(" %") for s in seen), seen
    percents = [int(s.split()[0]) for s in seen]
    assert percents == sorted(percents), "the bar went backwards"
    assert any(0 < p < 100 for p in percents), f"no progress shown on the way: {percents}"

    # The library shows it without a reload, and libvirt has every byte.
    row = page.locator("#library tr[data-medium=netinst]")
    expect(row).to_contain_text("ISO image")
    expect(row).to_contain_text("8.0 MiB")
    pool = qemu_host.storagePoolLookupByName(app.config["MEDIA_POOL"])
    pool.refresh(0)
    [volume] = pool.listAllVolumes()
    assert volume.info()[1] == len(data)
