"""/metrics and /healthz (fast tier): what a monitor scrapes, from the database and from the
state sync, with no sign-in and no names."""
from prometheus_client.parser import text_string_to_metric_families

from helpers import uuid_of, wait_until


def scrape(client) -> dict[tuple, float]:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.mimetype == "text/plain"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_metrics_count_vms_operations_and_consoles(app, admin, anon, libvirt_conn):
    assert admin.create(name="counted").status_code == 201
    admin.wait_state("counted", "running")
    vm_uuid = uuid_of(app, "counted")
    assert admin.htmx_post(f"/vms/{vm_uuid}/force-off").status_code == 202
    admin.wait_state("counted", "shutoff")
    assert admin.htmx_post(f"/vms/{vm_uuid}/shutdown").status_code == 409  # refused: no operation

    metrics = scrape(anon.client)  # no sign-in needed
    assert metrics[("limen_vms", (("state", "shutoff"),))] == 1
    assert metrics[("limen_operations_total", (("kind", "create"), ("result", "done")))] == 1
    assert metrics[("limen_operations_total", (("kind", "force-off"), ("result", "done")))] == 1
    assert not any(name == "limen_operations_active" for name, _ in metrics)
    assert metrics[("limen_console_sessions_open", ())] == 0
    assert metrics[("limen_libvirt_reachable", (("host", "local"),))] == 1
    assert metrics[("limen_libvirt_reconnects_total", (("host", "local"),))] == 0
    assert "counted" not in anon.client.get("/metrics").text  # counts, never names


def test_the_event_lag_is_measured_as_events_are_applied(app, admin, libvirt_conn, anon):
    assert admin.create(name="lagged").status_code == 201
    admin.wait_state("lagged", "running")
    libvirt_conn.lookupByName("lagged").destroy()  # behind LIMEN's back: only the event tells
    admin.wait_state("lagged", "shutoff")
    count = wait_until(lambda: scrape(anon.client).get(("limen_event_lag_seconds_count", ())), 5,
                       "an event lag to be observed")
    assert count >= 1
    assert scrape(anon.client)[("limen_event_lag_seconds_sum", ())] < 5
