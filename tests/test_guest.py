"""The guest tier: a real Debian 12 cloud image obeys LIMEN. One VM is made through LIMEN's
HTTP interface and booted (under TCG, tens of seconds); the tests run in order on it: its seed
and agent, its graphs under a CPU burst, the serial console, pause, a live migration to a second host and
back, a memory snapshot, reboot and shutdown, a shut-off
snapshot, a clone of it, run beside it, and last what is changed while it runs: a vCPU and
memory, a disk, a NIC's link."""
import re
import select
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest
from playwright.sync_api import expect

from helpers import Api, admin_password, click_console, find_row, unique_name, wait_until

pytestmark = pytest.mark.guest
PASSWORD = "serial-line-4-tester"  # the account's password, for a sign-in on the serial console


@pytest.fixture(scope="module")
def vm(guest_limen):
    """(name, uuid) of the module's guest, booted and reachable over SSH."""
    name = unique_name("guest")
    vm_uuid = guest_limen.create(name, ci_password=PASSWORD)
    guest_limen.wait_ssh(vm_uuid)
    # cloud-init's last stage restarts sshd (the password setting): wait for it to be done, so
    # that no test's SSH meets the restart.
    wait_until(lambda: "status: done" in guest_limen.ssh(vm_uuid, "cloud-init status --wait", timeout=300).stdout,
               360, "cloud-init to finish in the guest")
    return name, vm_uuid


def test_cloud_init_applies_the_seed_and_ssh_reaches_the_guest_through_its_forward(guest_limen, vm):
    name, vm_uuid = vm
    # The hostname and the account (with the test's key) come from LIMEN's seed.
    hostname = guest_limen.ssh(vm_uuid, "hostname")
    assert (hostname.returncode, hostname.stdout.strip()) == (0, name), hostname.stderr
    status = guest_limen.ssh(vm_uuid, "cloud-init status --wait --long", timeout=180)
    assert "status: done" in status.stdout, status.stdout + status.stderr
    # The Details page gives the command that got the test in.
    port = guest_limen.ssh_port(vm_uuid)
    page = guest_limen.admin.client.get(f"/vms/{vm_uuid}").text
    assert f"ssh -p {port} tester@127.0.0.1" in page


def test_the_agent_reports_the_address_hostname_and_os(guest_limen, vm, qemu_host):
    name, vm_uuid = vm
    vm_json = wait_until(lambda: (v := guest_limen.api_vm(vm_uuid))["address"] and v, 60,
                         "LIMEN to show the address the guest agent reports")
    mac = ET.fromstring(qemu_host.lookupByUUIDString(vm_uuid).XMLDesc(0)).find("./devices/interface/mac").get("address")
    # QEMU's user-mode network gives its one guest 10.0.2.15.
    assert (vm_json["address"], vm_json["address_source"], vm_json["guest_agent"]) == ("10.0.2.15", "agent", "connected")
    assert vm_json["hostname"] == name
    assert vm_json["os"].startswith("Debian GNU/Linux 12")
    [nic] = vm_json["interfaces"]
    assert (nic["mac"], nic["model"], nic["network"]) == (mac, "virtio", "user")
    assert "10.0.2.15/24" in nic["addresses"]
    # What the guest itself says it has.
    assert "10.0.2.15/24" in guest_limen.ssh(vm_uuid, "ip -4 -o addr show").stdout

    row = find_row(guest_limen.admin.rows(), name)
    assert row is not None and "10.0.2.15" in row.cells
    card = guest_limen.admin.client.get(f"/vms/{vm_uuid}/guest").text
    assert "connected" in card and "Debian GNU/Linux 12" in card and "addresses from the guest agent" in card


def cpu_now(page) -> float | None:
    """The CPU the VM's page says its guest uses now, in %."""
    found = re.search(r"now ([\d.]+) %", page.locator("#readout-cpu").text_content() or "")
    return float(found.group(1)) if found else None


def test_the_graphs_follow_a_cpu_burst_made_in_the_guest(guest_limen, vm, live_server, page):
    name, vm_uuid = vm
    api = Api(guest_limen.app, guest_limen.token)
    base = live_server(guest_limen.app)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(guest_limen.app))
    page.get_by_role("button", name="Sign in").click()
    page.goto(f"{base}/vms/{vm_uuid}")
    expect(page.locator("#graph-cpu canvas")).to_have_count(1)  # the line is drawn
    # SSH's handshake is work for a guest under TCG: the session is open before the burst.
    burst = subprocess.Popen(guest_limen.ssh_args(vm_uuid, "read go && timeout 5 sh -c 'while :; do :; done'; echo done"),
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        def idle() -> bool:
            cpu = api("GET", f"/vms/{vm_uuid}/stats").json["cpu_percent"]
            return len(cpu) >= 2 and all(c is not None and c < 50 for c in cpu[-2:])

        wait_until(idle, 120, "the guest to be idle for two samples")
        wait_until(lambda: (now := cpu_now(page)) is not None and now < 50, 30, "the page to show the idle guest")
        started = time.time()
        burst.stdin.write("go\n")
        burst.stdin.flush()
        wait_until(lambda: (cpu_now(page) or 0) >= 50, 30, "the page to show the burst")
        assert burst.communicate(timeout=60)[0].strip() == "done"
    finally:
        burst.kill()
    ended = time.time()
    series = api("GET", f"/vms/{vm_uuid}/stats").json
    during = [c for t, c in zip(series["t"], series["cpu_percent"]) if started < t <= ended + series["interval"]]
    assert max(during) >= 50, (series["t"], series["cpu_percent"], started, ended)
    assert all(m is not None and m > 100 for m in series["memory_mib"][-3:])  # memory in use, in MiB
    wait_until(lambda: (now := cpu_now(page)) is not None and now < 50, 30, "the page to show the guest idle again")


def test_a_person_signs_in_on_the_serial_console_in_the_browser(guest_limen, vm, live_server, page):
    name, vm_uuid = vm
    base = live_server(guest_limen.app)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    page.goto(f"{base}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", admin_password(guest_limen.app))
    page.get_by_role("button", name="Sign in").click()
    click_console(page.locator("#vm-rows tr", has_text=name))
    page.get_by_role("navigation", name="Console").get_by_role("link", name="Serial").click()
    expect(page.locator("#console-status")).to_have_text("Connected. Press Enter for a prompt.", timeout=60_000)
    screen = page.locator("#terminal .xterm-rows")
    page.locator("#terminal").click()

    # The getty on ttyS0 asks; a fresh prompt comes with Enter (the last was written at boot).
    def prompt_shows(text: str, timeout: float = 60):
        def shown():
            page.keyboard.press("Enter")
            try:
                expect(screen).to_contain_text(text, timeout=3_000)
                return True
            except AssertionError:
                return False
        wait_until(shown, timeout, f"{text!r} on the serial console")

    prompt_shows(f"{name} login:")
    page.keyboard.type("tester\n")
    expect(screen).to_contain_text("Password:", timeout=30_000)
    page.keyboard.type(PASSWORD + "\n")
    expect(screen).to_contain_text(f"tester@{name}", timeout=60_000)  # the shell's prompt
    page.keyboard.type("uname -a\n")
    # Its output (the login banner has a uname line too, without "GNU/Linux"), then the prompt.
    expect(screen).to_contain_text(re.compile(rf"Linux {name} .*x86_64 GNU/Linux\s*tester@{name}:~\$"),
                                   timeout=30_000)

    # Paste from the clipboard into the line, and copy the screen back out.
    page.evaluate("text => navigator.clipboard.writeText(text)", "echo pasted-$((6*7))\n")
    page.get_by_role("button", name="Paste").click()
    # bash takes a paste as typed text (bracketed paste): it runs when the person presses Enter.
    expect(screen).to_contain_text(re.compile(rf"tester@{name}:~\$ echo pasted-\$\(\(6\*7\)\)"), timeout=30_000)
    page.keyboard.press("Enter")
    expect(screen).to_contain_text(re.compile(rf"pasted-42\s*tester@{name}:~\$"), timeout=30_000)
    page.get_by_role("button", name="Copy").click()
    expect(page.locator("#console-status")).to_have_text("Copied the screen.")
    copied = page.evaluate("() => navigator.clipboard.readText()")
    assert "pasted-42" in copied and "GNU/Linux" in copied, copied
    page.keyboard.type("exit\n")  # the next person gets a login prompt, not this shell


ECHO = 'while read line; do echo "got $line"; done'


class Echo:
    """An SSH session (the ssh command line ``args``) running ECHO in the guest: each line sent
    comes back as "got <line>", as long as the one TCP connection lives."""

    def __init__(self, args: list[str]):
        self.session = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)

    def answer(self, text: str, timeout: float = 30) -> str:
        self.session.stdin.write(text + "\n")
        self.session.stdin.flush()
        ready, _, _ = select.select([self.session.stdout], [], [], timeout)
        assert ready, f"the SSH session did not answer {text!r} within {timeout:g} s"
        return self.session.stdout.readline().strip()

    def close(self) -> None:
        self.session.kill()
        self.session.wait()


def test_pause_and_resume_keep_an_open_ssh_session(guest_limen, vm):
    name, vm_uuid = vm
    session = Echo(guest_limen.ssh_args(vm_uuid, ECHO))
    answer = session.answer
    try:
        assert answer("before", 60) == "got before"
        assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/pause").status_code == 202
        guest_limen.admin.wait_state(name, "paused", 30)
        assert guest_limen.api_vm(vm_uuid)["state_reason"] == "paused by a user"
        assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/resume").status_code == 202
        guest_limen.admin.wait_state(name, "running", 30)
        assert answer("after") == "got after"  # the same TCP session, through the pause
    finally:
        session.close()


def test_the_guest_migrates_live_to_another_host_and_back_with_an_ssh_session_open(
        guest_limen, vm, qemu_host, second_host, shared_link):
    """The guest moves with its memory and disk, and runs on: the same boot, the same processes,
    and an SSH session over a network both hosts share stays open. (User-mode networking ends a
    guest's TCP connections in its QEMU, which the move ends: the forward the harness uses is
    put into the new QEMU, and sessions through it are made again.)"""
    from limen import remote

    name, vm_uuid = vm
    app, admin = guest_limen.app, guest_limen.admin
    second_host.authorize(remote.public_key(app.instance_path))
    added = admin.client.post("/admin/hosts", data={"csrf_token": admin.csrf, "name": "second",
                                                    "uri": second_host.uri, "host_key": second_host.host_key})
    assert added.status_code == 302, added.text[-2000:]
    boot_id = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    pid = guest_limen.ssh(vm_uuid, "nohup sleep 100000 >/dev/null 2>&1 & echo $!").stdout.strip()
    assert pid.isdigit()
    api = Api(app, guest_limen.token)
    pool = qemu_host.storagePoolLookupByName(app.config["STORAGE_POOL"])
    session = shared_session(guest_limen, vm_uuid, shared_link)
    answer = session.answer
    try:
        assert answer("before", 60) == "got before"
        for host in ("second", "local"):
            op = finished(guest_limen, api("POST", f"/vms/{vm_uuid}/migrate", {"host": host}))
            assert any(s["step"].startswith(f"Migrating live to {host}") for s in op["steps"])
            assert any(s["step"].startswith("Moved in ") for s in op["steps"])  # with its downtime
            moved = api("GET", f"/vms/{vm_uuid}").json
            assert (moved["host"], moved["state"]) == (host, "running")
            assert answer(f"on {host}") == f"got on {host}"  # the same TCP session, through the move
            check_moved(guest_limen, vm_uuid, host, qemu_host, pool, boot_id, pid)
    finally:
        session.close()
    assert guest_limen.ssh(vm_uuid, f"kill {pid}").returncode == 0


def plugged_in(guest_limen, vm_uuid: str, network: str) -> tuple[str, str]:
    """(MAC, the guest's name for it) of a NIC on ``network`` plugged in through LIMEN's API
    while the guest runs, and brought up in the guest."""
    added = Api(guest_limen.app, guest_limen.token)("POST", f"/vms/{vm_uuid}/nics", {"network": network})
    assert added.status_code == 201, added.json
    mac = added.json["mac"]

    def interface() -> str | None:
        found = guest_limen.ssh(vm_uuid, f"grep -l {mac} /sys/class/net/*/address").stdout.strip()
        return found.split("/")[-2] if found else None

    iface = wait_until(interface, 60, "the guest to see the plugged-in NIC")
    assert guest_limen.ssh(vm_uuid, f"sudo ip link set {iface} up").returncode == 0
    return mac, iface


def shared_session(guest_limen, vm_uuid: str, link) -> Echo:
    """An Echo session into the guest over ``link`` (a NIC on it plugged in through LIMEN's API,
    brought up in the guest), from the link's own namespace."""
    _mac, iface = plugged_in(guest_limen, vm_uuid, f"bridge:{link.bridge}")

    def link_local() -> str | None:  # once duplicate address detection let it be used
        shown = guest_limen.ssh(vm_uuid, f"ip -6 -o addr show dev {iface} scope link -tentative").stdout.split()
        return shown[shown.index("inet6") + 1].split("/")[0] if "inet6" in shown else None

    address = wait_until(link_local, 60, "the guest's link-local address on the shared link")
    args = guest_limen.ssh_args(vm_uuid, ECHO)
    port = args.index("-p")
    del args[port:port + 2]  # port 22, on the guest's own address
    args[-2] = f"tester@{address}%{link.interface}"
    return Echo([*link.run(), *args])


def check_moved(guest_limen, vm_uuid: str, host: str, qemu_host, pool, boot_id: str, pid: str) -> None:
    """The guest runs on ``host`` in the same boot, with the process started before, and
    nothing of it is left on the host it left."""
    guest_limen.wait_ssh(vm_uuid, 120)  # its forward, in its QEMU on that host
    after = guest_limen.ssh(vm_uuid, f"cat /proc/sys/kernel/random/boot_id; kill -0 {pid} && echo alive")
    assert after.stdout.split() == [boot_id, "alive"], after.stderr
    pool.refresh(0)
    here = {d.UUIDString() for d in qemu_host.listAllDomains()}
    if host == "second":  # nothing of it is left on this host
        assert vm_uuid not in here
        assert not [v for v in pool.listVolumes() if v.startswith(vm_uuid)]
    else:
        assert vm_uuid in here and f"{vm_uuid}.qcow2" in pool.listVolumes()
        _type, capacity, allocation = pool.storageVolLookupByName(f"{vm_uuid}.qcow2").info()
        assert allocation < capacity / 2  # copied into a sparse disk, not a preallocated one


def finished(guest_limen, response, timeout: float = 300) -> dict:
    """Wait for the Operation an API request started (a snapshot of a guest under TCG takes a while)."""
    assert response.status_code == 202, response.json
    api = Api(guest_limen.app, guest_limen.token)
    op = wait_until(lambda: (r := api("GET", f"/operations/{response.json['operation']['id']}").json)["state"]
                    in ("done", "failed") and r, timeout, "the operation to end")
    assert op["state"] == "done", op["error"]
    return op


def test_a_memory_snapshot_brings_back_a_deleted_file_without_a_reboot(guest_limen, vm):
    name, vm_uuid = vm
    api = Api(guest_limen.app, guest_limen.token)
    boot_id = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert guest_limen.ssh(vm_uuid, "echo kept > proof && sync").returncode == 0
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/snapshots", {"name": "with-proof"}))
    assert guest_limen.ssh(vm_uuid, "rm proof && sync && ls").stdout.split() == []
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/snapshots/with-proof/revert"))
    assert api("GET", f"/vms/{vm_uuid}").json["state"] == "running"
    # The guest resumed where the snapshot left it: the same boot, and the file back.
    guest_limen.wait_ssh(vm_uuid, 120)
    after = guest_limen.ssh(vm_uuid, "cat proof; cat /proc/sys/kernel/random/boot_id").stdout.split()
    assert after == ["kept", boot_id]
    [snap] = api("GET", f"/vms/{vm_uuid}/snapshots").json
    assert (snap["name"], snap["memory"], snap["current"]) == ("with-proof", True, True)
    assert api("GET", f"/vms/{vm_uuid}").json["snapshot_mib"] > 0  # the memory it holds, on the quota


def test_reboot_boots_the_guest_again(guest_limen, vm):
    name, vm_uuid = vm
    boot_id = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert len(boot_id) == 36
    assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/reboot").status_code == 202

    rows_seen = set()

    def booted_again():
        rows_seen.add(guest_limen.admin.row_state(name))
        run = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id")
        return run.returncode == 0 and run.stdout.strip() not in ("", boot_id)

    wait_until(booted_again, 300, "the guest to come back with a new boot_id")
    # libvirt reports a rebooting guest as running throughout; so does the table.
    assert rows_seen == {"running"}
    # The reboot ends once QEMU reports the guest's reset: done, not failed (REBOOT_TIMEOUT).
    vm_json = wait_until(lambda: (v := guest_limen.api_vm(vm_uuid))["operation"] is None and v, 30,
                         "the reboot to end without an error")
    assert vm_json["state"] == "running"


def test_shutdown_powers_the_guest_off(guest_limen, vm):
    name, vm_uuid = vm
    assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/shutdown").status_code == 202
    guest_limen.admin.wait_state(name, "shutoff", 150)
    vm_json = guest_limen.api_vm(vm_uuid)
    # libvirt's reason: the guest shut itself down; LIMEN did not pull the plug.
    assert (vm_json["state"], vm_json["state_reason"]) == ("shutoff", "shut down")
    assert vm_json["operation"] is None  # the shutdown finished; it did not fail


def test_a_shut_off_snapshot_brings_back_the_disk(guest_limen, vm):
    name, vm_uuid = vm  # shut off by the test before
    api = Api(guest_limen.app, guest_limen.token)
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/snapshots", {"name": "cold"}))
    [cold] = [s for s in api("GET", f"/vms/{vm_uuid}/snapshots").json if s["name"] == "cold"]
    assert (cold["memory"], cold["vm_state"], cold["parent"]) == (False, "shutoff", "with-proof")
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/actions/start"))
    guest_limen.wait_ssh(vm_uuid)
    assert guest_limen.ssh(vm_uuid, "rm proof && sync").returncode == 0
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/actions/force-off"))
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/snapshots/cold/revert"))
    assert api("GET", f"/vms/{vm_uuid}").json["state"] == "shutoff"  # as it was taken
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/actions/start"))
    guest_limen.wait_ssh(vm_uuid)
    assert guest_limen.ssh(vm_uuid, "cat proof").stdout.strip() == "kept"


def test_a_clone_and_its_source_run_side_by_side(guest_limen, vm):
    name, vm_uuid = vm  # running again since the test before
    api = Api(guest_limen.app, guest_limen.token)
    finished(guest_limen, api("POST", f"/vms/{vm_uuid}/actions/force-off"))
    clone_name = f"{name}-clone"
    cloned = api("POST", f"/vms/{vm_uuid}/clone", {"name": clone_name})
    finished(guest_limen, cloned, 600)  # a full copy of the disk, read through its image
    clone = cloned.json["vm"]["uuid"]
    for uuid in (vm_uuid, clone):
        finished(guest_limen, api("POST", f"/vms/{uuid}/actions/start"))
    for uuid in (vm_uuid, clone):
        guest_limen.wait_ssh(uuid)
    # Each its own: hostname (the clone's seed), MAC (libvirt's choice) and forwarded port.
    # (cloud-init may still be setting the clone up when its sshd first answers)
    for uuid, hostname in ((vm_uuid, name), (clone, clone_name)):
        wait_until(lambda u=uuid, h=hostname: guest_limen.ssh(u, "hostname").stdout.strip() == h, 180,
                   f"the hostname {hostname} over SSH")
    macs = [wait_until(lambda u=u: guest_limen.ssh(u, "cat /sys/class/net/e*/address").stdout.strip(), 120,
                       "the guest's MAC over SSH") for u in (vm_uuid, clone)]
    assert macs[0] != macs[1], macs
    assert guest_limen.ssh_port(vm_uuid) != guest_limen.ssh_port(clone)
    boot_ids = {wait_until(lambda u=u: guest_limen.ssh(u, "cat /proc/sys/kernel/random/boot_id").stdout.strip(),
                           120, "the guest's boot_id over SSH") for u in (vm_uuid, clone)}
    assert len(boot_ids) == 2


# -- changes to the running guest, last: a snapshot cannot hold a vCPU plugged in ----------
def mem_total_mib(guest_limen, vm_uuid: str) -> int:
    line = guest_limen.ssh(vm_uuid, "grep MemTotal /proc/meminfo").stdout
    return int(line.split()[1]) // 1024


def test_a_vcpu_plugged_in_and_memory_ballooned_show_inside_the_guest(guest_limen, vm):
    name, vm_uuid = vm  # running since the clone test
    api = Api(guest_limen.app, guest_limen.token)
    assert guest_limen.ssh(vm_uuid, "nproc").stdout.strip() == "1"
    started_with = mem_total_mib(guest_limen, vm_uuid)
    assert 600 < started_with <= 768  # 768 MiB, less what the kernel keeps for itself

    plugged = api("PATCH", f"/vms/{vm_uuid}", {"vcpus": 2})
    assert (plugged.status_code, plugged.json["vcpus"], plugged.json["pending"]) == (200, 2, None), plugged.json
    wait_until(lambda: guest_limen.ssh(vm_uuid, "nproc").stdout.strip() == "2", 60,
               "the guest to put the plugged-in vCPU to use")
    # QEMU cannot bring back a memory snapshot holding a vCPU plugged in since the start: refused, said why.
    refused = api("POST", f"/vms/{vm_uuid}/snapshots", {"name": "after-plugging"})
    assert (refused.status_code, refused.json["error"]["code"]) == (409, "SNAPSHOT_UNSUPPORTED"), refused.json
    assert "vCPU" in refused.json["error"]["message"]

    ballooned = api("PATCH", f"/vms/{vm_uuid}", {"memory_mib": 512})
    assert (ballooned.json["memory_mib"], ballooned.json["pending"]) == (512, None), ballooned.json
    wait_until(lambda: started_with - 256 - 16 <= mem_total_mib(guest_limen, vm_uuid) <= started_with - 256 + 16,
               60, "the guest's MemTotal to lose the 256 MiB the balloon took")
    given_back = api("PATCH", f"/vms/{vm_uuid}", {"memory_mib": 768})
    assert (given_back.json["memory_mib"], given_back.json["pending"]) == (768, None), given_back.json
    wait_until(lambda: mem_total_mib(guest_limen, vm_uuid) == started_with, 60,
               "the balloon to give the guest its memory back")
    row = find_row(guest_limen.admin.rows(), name)
    assert row is not None and "at next start" not in row.html


def lsblk_bytes(guest_limen, vm_uuid: str) -> dict[str, int]:
    """name -> size in bytes of the guest's whole disks, as lsblk says."""
    out = guest_limen.ssh(vm_uuid, "lsblk -b -d -n -o NAME,SIZE,TYPE").stdout
    return {name: int(size) for name, size, kind in (line.split() for line in out.splitlines()) if kind == "disk"}


def test_a_disk_plugged_in_and_the_boot_disk_grown_show_in_lsblk(guest_limen, vm):
    name, vm_uuid = vm
    api = Api(guest_limen.app, guest_limen.token)
    for snap in api("GET", f"/vms/{vm_uuid}/snapshots").json:  # the snapshot tests' (they hold the disks)
        finished(guest_limen, api("DELETE", f"/vms/{vm_uuid}/snapshots/{snap['name']}"))
    assert lsblk_bytes(guest_limen, vm_uuid) == {"vda": 3 * 1024**3}
    added = api("POST", f"/vms/{vm_uuid}/disks", {"gib": 1})
    assert added.status_code == 201, added.json
    wait_until(lambda: lsblk_bytes(guest_limen, vm_uuid).get(added.json["dev"]) == 1024**3, 60,
               "the guest to see the plugged-in disk")
    grown = api("PATCH", f"/vms/{vm_uuid}/disks/vda", {"gib": 4})
    assert grown.status_code == 200, grown.json
    wait_until(lambda: lsblk_bytes(guest_limen, vm_uuid)["vda"] == 4 * 1024**3, 60,
               "the guest to see its boot disk grown")
    assert guest_limen.api_vm(vm_uuid)["disk_gib"] == 5


def test_a_nic_set_link_down_loses_its_carrier(guest_limen, vm):
    name, vm_uuid = vm
    api = Api(guest_limen.app, guest_limen.token)
    mac, iface = plugged_in(guest_limen, vm_uuid, "user")  # SSH keeps to the first NIC

    def carrier() -> str:
        return guest_limen.ssh(vm_uuid, f"cat /sys/class/net/{iface}/carrier").stdout.strip()

    wait_until(lambda: carrier() == "1", 30, "the new NIC's carrier")
    assert api("PATCH", f"/vms/{vm_uuid}/nics/{mac}", {"link": "down"}).json["link"] == "down"
    wait_until(lambda: carrier() == "0", 30, "the guest to lose the NIC's carrier")
    assert api("PATCH", f"/vms/{vm_uuid}/nics/{mac}", {"link": "up"}).json["link"] == "up"
    wait_until(lambda: carrier() == "1", 30, "the guest to get the NIC's carrier back")
