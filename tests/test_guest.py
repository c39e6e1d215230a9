"""The guest tier: a real Debian 12 cloud image obeys LIMEN. One VM is made through LIMEN's
HTTP interface and booted once (under TCG, tens of seconds); the tests run in order on it,
and the last one shuts it down."""
import pytest

from helpers import unique_name, wait_until

pytestmark = pytest.mark.guest


@pytest.fixture(scope="module")
def vm(guest_limen):
    """(name, uuid) of the module's guest, booted and reachable over SSH."""
    name = unique_name("guest")
    vm_uuid = guest_limen.create(name)
    guest_limen.wait_ssh(vm_uuid)
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


def test_reboot_boots_the_guest_again(guest_limen, vm):
    _name, vm_uuid = vm
    boot_id = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert len(boot_id) == 36
    assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/reboot").status_code == 202

    def booted_again():
        run = guest_limen.ssh(vm_uuid, "cat /proc/sys/kernel/random/boot_id")
        return run.returncode == 0 and run.stdout.strip() not in ("", boot_id)

    wait_until(booted_again, 300, "the guest to come back with a new boot_id")
    assert guest_limen.api_vm(vm_uuid)["state"] == "running"


def test_shutdown_powers_the_guest_off(guest_limen, vm):
    name, vm_uuid = vm
    assert guest_limen.admin.htmx_post(f"/vms/{vm_uuid}/shutdown").status_code == 202
    guest_limen.admin.wait_state(name, "shutoff", 150)
    vm_json = guest_limen.api_vm(vm_uuid)
    # libvirt's reason: the guest shut itself down; LIMEN did not pull the plug.
    assert (vm_json["state"], vm_json["state_reason"]) == ("shutoff", "shut down")
    assert vm_json["operation"] is None  # the shutdown finished; it did not fail
