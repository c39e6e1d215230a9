"""libvirtd killed and started again under a running LIMEN (qemu tier): LIMEN stays up,
shows the last known state under a banner, answers actions with 503, and is back on its own
within 5 s of libvirtd answering again."""
import json
import os
import signal
import subprocess
import time
from urllib.parse import urlencode

import pytest

from helpers import unique_name, wait_until

pytestmark = pytest.mark.qemu
SYSTEMD = os.path.isdir("/run/systemd/system")


def libvirtd_pids() -> list[int]:
    """Live libvirtd processes (a killed one may linger as a zombie without an init to reap it)."""
    out = subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True, text=True).stdout
    pids = []
    for pid in map(int, out.split()):
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    pids.append(pid)
        except FileNotFoundError:
            pass
    return pids


def libvirtd_answers() -> bool:
    return subprocess.run(["virsh", "-c", "qemu:///system", "version"], capture_output=True).returncode == 0


def start_libvirtd() -> None:
    if SYSTEMD:
        subprocess.run(["systemctl", "start", "libvirtd"], check=True)
    elif not libvirtd_pids():
        subprocess.run(["libvirtd", "-d"], check=True)


@pytest.fixture
def libvirtd():
    """libvirtd may be killed by the test; it runs again afterwards whatever happened."""
    yield
    start_libvirtd()
    wait_until(libvirtd_answers, 30, "libvirtd to answer again")


def health(limen) -> int:
    return limen.get("/healthz")[0]


def serving_a_running_vm(limen) -> tuple[str, str]:
    """LIMEN served and signed in to, with a VM of its own running: (name, UUID)."""
    limen.start()
    limen.sign_in()
    name = unique_name("f")
    assert limen.create(name) == 302
    wait_until(lambda: limen.row_state(name) == "running" and limen.settled(), 60, f"{name} to run, created")
    uuid, = limen.db("SELECT uuid FROM vm WHERE name = ?", name)[0]
    return name, uuid


def test_limen_rides_out_a_libvirtd_restart(limen, libvirtd):
    name, uuid = serving_a_running_vm(limen)

    killed = libvirtd_pids()
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not set(killed) & set(libvirtd_pids()), 10, "libvirtd to be gone")
    wait_until(lambda: health(limen) == 503, 10, "/healthz to answer 503")
    _, rows = limen.get("/vms/rows")
    assert "Hypervisor unreachable — reconnecting" in rows
    assert limen.row_state(name) == "running"  # the last state seen, not a guess
    assert limen.post(f"/vms/{uuid}/force-off") == 503
    assert limen.post(f"/vms/{uuid}/delete") == 503  # not a delete that cannot run
    assert limen.create(unique_name("f")) == 503
    status, page = limen.get("/")
    assert status == 200 and name in page  # pages still render

    start_libvirtd()
    wait_until(libvirtd_answers, 30, "libvirtd to answer")
    back = time.monotonic()
    wait_until(lambda: health(limen) == 200, 5, "/healthz to answer 200 within 5 s of libvirtd")
    wait_until(lambda: "Hypervisor unreachable" not in limen.get("/vms/rows")[1], 5, "the banner to go")
    assert time.monotonic() - back < 5
    metrics = limen.get("/metrics")[1]
    assert 'limen_libvirt_reconnects_total{host="local"} 1.0' in metrics and 'limen_libvirt_reachable{host="local"} 1.0' in metrics
    assert limen.post(f"/vms/{uuid}/force-off") == 302  # actions work again
    wait_until(lambda: limen.row_state(name) == "shutoff", 15, f"{name} to show shutoff")
    # Events flow again: a change behind LIMEN's back shows without waiting for a resync.
    subprocess.run(["virsh", "-q", "-c", "qemu:///system", "start", name], check=True, capture_output=True)
    wait_until(lambda: limen.row_state(name) == "running", 2, f"{name} to show running")


def within(limen, seconds: float, method: str, path: str) -> tuple[int, str]:
    """A request that must be answered within ``seconds`` (a socket deadline, not a measure)."""
    import urllib.error
    import urllib.request
    data = urlencode({"csrf_token": limen.csrf}).encode() if method == "POST" else None
    try:
        response = limen.opener.open(f"{limen.base}{path}", data=data, timeout=seconds)
        return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_a_libvirtd_that_stops_answering_gives_503_within_5_s(limen, libvirtd):
    """SIGSTOP: the socket still accepts, nothing answers. No request waits on it past the
    deadline; when it is continued, LIMEN is back on its own."""
    name, uuid = serving_a_running_vm(limen)
    stopped = libvirtd_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        status, body = within(limen, 5, "GET", "/healthz")
        assert status == 503 and json.loads(body)["checks"]["libvirt"] == "failed: HYPERVISOR_UNAVAILABLE"
        assert within(limen, 5, "POST", f"/vms/{uuid}/force-off")[0] == 503
        status, rows = within(limen, 5, "GET", "/vms/rows")
        assert status == 200 and limen.row_state(name) == "running"  # the table still answers
        assert within(limen, 5, "GET", "/")[0] == 200
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: health(limen) == 200, 15, "/healthz to answer 200 once libvirtd is continued")
    assert limen.post(f"/vms/{uuid}/force-off") == 302  # actions work again
    wait_until(lambda: limen.row_state(name) == "shutoff", 15, f"{name} to show shutoff")


def clients_of_this_process() -> int:
    """How many connections libvirtd has from this process, as libvirtd lists them."""
    listed = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True, text=True,
                            timeout=10, check=True).stdout.splitlines()[2:]
    mine = 0
    for client in (line.split()[0] for line in listed if line.strip()):
        info = subprocess.run(["virt-admin", "client-info", "libvirtd", client], capture_output=True, text=True,
                              timeout=10)  # one that left meanwhile is not found
        mine += f"unix_process_id: {os.getpid()}\n" in info.stdout + "\n"
    return mine


def test_limen_stops_while_libvirtd_does_not_answer_and_lets_go_of_the_connection_later(qemu_app):
    """A worker shutting down (runtime.stop) while libvirtd is stopped: deregistering and
    closing are calls to libvirtd, which held the stopping thread until keepalive gave up (and
    libvirt 9.0's client, closing a connection a call waits on, can leave it waiting for good).
    LIMEN stops within its deadline; libvirtd sees the connection closed once it answers again."""
    import threading

    from limen import runtime

    before = clients_of_this_process()
    app = qemu_app()
    connection = runtime.get(app).local.hypervisor.connection
    connection.get()
    assert clients_of_this_process() > before
    stopped = libvirtd_pids()
    for pid in stopped:
        os.kill(pid, signal.SIGSTOP)
    try:
        wait_until(lambda: not connection.answering(), 10, "LIMEN to see libvirtd not answering")
        stopping = threading.Thread(target=runtime.stop, args=(app,), name="stopping")
        stopping.start()
        stopping.join(5)
        assert not stopping.is_alive(), "runtime.stop waited on a libvirtd that does not answer"
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
    wait_until(lambda: clients_of_this_process() == before, 15, "libvirtd to see LIMEN's connection closed")
