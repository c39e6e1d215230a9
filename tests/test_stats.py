"""A VM's graphs' series (fast tier): the rates between two samples of libvirt's counters, a
ring of points per VM, and the API that serves them."""
import pytest

from helpers import Api, add_user, admin_password, signed_in, token_for, uuid_of
from limen import runtime
from limen.hypervisor import Counters
from limen.stats import StatsSampler, point


def counters(uuid="a", at=0.0, cpu_ns=0, vcpus=2, memory_kib=512 * 1024, read=0, write=0, rx=0, tx=0):
    return Counters(uuid, at, vcpus, cpu_ns, memory_kib, read, write, rx, tx)


def test_a_point_is_the_rates_between_two_samples():
    before = counters(at=100.0, cpu_ns=10**9, read=1000, write=0, rx=50, tx=0)
    now = counters(at=105.0, cpu_ns=6 * 10**9, read=11_000, write=5 * 4096, rx=50, tx=500)
    p = point(before, now)
    # 5 s of CPU in 5 s of two vCPUs: half of them.
    assert p.at == 105.0 and p.values == (50.0, 512.0, 2000.0, 4096.0, 0.0, 100.0)
    assert point(now, before) is None  # out of order
    restarted = point(now, counters(at=110.0, cpu_ns=10**8, read=0))
    assert restarted.values[0] is None and restarted.values[2] is None  # counters went back: not a rate
    unknown = point(counters(at=1.0, cpu_ns=None, memory_kib=None), counters(at=2.0, cpu_ns=None, memory_kib=None))
    assert unknown.values[:2] == (None, None)


@pytest.fixture
def sampler():
    """A sampler whose rounds the test hands it (``record``), with a clock at the newest one."""
    now = [0.0]
    stats = StatsSampler(None, None, interval=5, keep=20, clock=lambda: now[0])

    def record(*found: Counters) -> None:
        now[0] = max((c.at for c in found), default=now[0])
        stats.record(list(found))

    return stats, record


def test_the_ring_keeps_what_its_window_holds_and_a_stop_starts_a_new_line(sampler):
    stats, record = sampler
    for n in range(7):  # 4 points fit in 20 s at 5 s
        record(counters("a", at=5.0 * n, cpu_ns=n * 10**9, vcpus=1))
    series = stats.series("a")
    assert series["t"] == [15.0, 20.0, 25.0, 30.0] and series["cpu_percent"] == [20.0] * 4
    assert stats.series("nobody") == {"interval": 5.0, "t": [], **{f: [] for f in series if f not in ("interval", "t")}}

    record(counters("b", at=30.0))  # "a" stopped: its points stay until they age out
    record(counters("a", at=40.0, cpu_ns=0, vcpus=1), counters("b", at=40.0))
    # Started again: no point across the stop; and 15 s is older than the window.
    assert stats.series("a")["t"] == [20.0, 25.0, 30.0]
    record(counters("a", at=45.0, cpu_ns=5 * 10**9, vcpus=1), counters("b", at=45.0))
    assert stats.series("a")["t"][-1] == 45.0 and stats.series("a")["cpu_percent"][-1] == 100.0
    record(counters("b", at=100.0))  # "a"'s last point is older than the window: gone
    assert stats.series("a")["t"] == []


def test_the_hosts_cpus_in_use_are_the_busy_share_between_two_readings(sampler):
    stats, _ = sampler
    stats.record_host((100, 1000))
    assert stats.host_cpu_percent is None  # one reading tells nothing yet
    stats.record_host((400, 2000))  # 300 of 1000 ns busy
    assert stats.host_cpu_percent == 30.0
    stats.record_host((350, 2500))  # the counters went back (the host restarted): not a share
    assert stats.host_cpu_percent is None
    stats.record_host(None)  # a driver that cannot say
    assert stats.host_cpu_percent is None


def test_the_api_and_the_page_serve_a_vms_series_to_those_who_may_see_it(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}")
    api = Api(app, token_for(app, "admin", admin_password(app)))
    created = api("POST", "/vms", {"name": "graphed", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    api.wait_op(created.json["operation"]["id"])
    vm_uuid = uuid_of(app, "graphed")
    sampler = runtime.get(app).stats
    sampler.sample()
    sampler.sample()
    series = api("GET", f"/vms/{vm_uuid}/stats").json
    # The test driver counts no CPU or memory (null), and no bytes.
    assert len(series["t"]) >= 1 and series["cpu_percent"][-1] is None and series["disk_read_bps"][-1] == 0.0
    assert api("GET", "/vms/00000000-0000-0000-0000-000000000000/stats").status_code == 404
    page = signed_in(app, "admin", admin_password(app)).client.get(f"/vms/{vm_uuid}/stats")
    assert page.status_code == 200 and page.json == series
    add_user(app, "bob", "bob-password-1")
    assert signed_in(app, "bob", "bob-password-1").client.get(f"/vms/{vm_uuid}/stats").status_code == 404
