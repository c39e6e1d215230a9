"""LIMEN served as `make run` serves it (nginx in front of gunicorn) keeps serving under hostile
load from 127.0.0.1: 500 slow connections, a 200 MiB body and 100 console WebSockets at once
(bench/load.py's load, asserted here; the benchmark prints the figures). On the test driver,
whose domain's display is an echoing TCP source. Here, with the faults, because it runs alone:
a signed-in page must answer within 1 s, and two busy cores would make that a coin toss."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import load  # noqa: E402


def test_slow_clients_a_huge_body_and_a_hundred_consoles_starve_no_page(tmp_path):
    source = load.Source()
    try:
        limen, vm_uuid = load.serve(tmp_path, source, consoles=100)
        try:
            figures = load.load(limen, vm_uuid, slow=500, consoles=100, body_mib=200, requests=20)
        finally:
            limen.stop()
    finally:
        source.stop()
    # The table and /healthz answered every time, each within 1 s, with all of this open:
    assert figures.unanswered == []
    assert figures.slow_held == figures.slow_opened == 500  # held by nginx, not by LIMEN's threads
    assert figures.consoles_echoing == figures.consoles_opened == 100  # the consoles kept streaming
    # The body was refused from its Content-Length, long before it was all sent.
    assert figures.body_answer.startswith("HTTP/1.1 413") and figures.body_sent_mib < 200
