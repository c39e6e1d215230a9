"""The test session: the fixtures (fixtures/), the tests' cheap password hash, and the tier guard.
Helpers that tests import are in helpers.py.

fast    libvirt's test driver, one node file per test (``test:///<tmp>/node.xml``)
qemu    the real libvirtd on qemu:///system, in a storage pool of the test's own
guest   a real Debian 12 cloud image, booted under TCG by LIMEN on the real libvirtd
browser headless Chromium (Debian's /usr/bin/chromium) through Playwright, against a live server

``make test`` (scripts/run-tests) names the tiers each pytest run must hold in
LIMEN_REQUIRE_TIERS ("all", or e.g. "fast,qemu,browser"): then one of them that ran no passing
test, or any skipped test, fails the run.
"""
import os
import time
from collections import Counter

TIERS = ("fast", "qemu", "guest", "browser")
# Passwords are hashed with a cheap method in every LIMEN the tests start, in this process and
# in the servers and commands it starts (they inherit the environment); scrypt costs ~0.1 s.
# tests/test_hashing.py proves that LIMEN itself uses scrypt.
CHEAP_HASH = "pbkdf2:sha256:1"
os.environ.setdefault("LIMEN_PASSWORD_HASH_METHOD", CHEAP_HASH)
_STARTED = time.monotonic()

pytest_plugins = ["fixtures.apps", "fixtures.qemu", "fixtures.served", "fixtures.browser", "fixtures.consoles",
                  "fixtures.guest", "fixtures.hosts"]


# -- the tier guard -----------------------------------------------------------------------
_outcomes: Counter = Counter()


def _tier(item) -> str:
    for tier in ("browser", "guest", "qemu"):
        if item.get_closest_marker(tier):
            return tier
    return "fast"


def pytest_collection_modifyitems(items):
    for item in items:
        item.user_properties.append(("tier", _tier(item)))


def pytest_runtest_logreport(report):
    tier = dict(report.user_properties).get("tier", "fast")
    if report.skipped:
        _outcomes[(tier, "skipped")] += 1
    elif report.when == "call" and report.passed:
        _outcomes[(tier, "passed")] += 1


def required_tiers() -> tuple[str, ...]:
    named = os.environ.get("LIMEN_REQUIRE_TIERS", "")
    if named == "all":
        return TIERS
    tiers = tuple(t for t in named.split(",") if t)
    unknown = set(tiers) - set(TIERS)
    assert not unknown, f"LIMEN_REQUIRE_TIERS names no such tier: {sorted(unknown)}"
    return tiers


def pytest_sessionfinish(session, exitstatus):
    required = required_tiers()
    if not required:
        return
    problems = [f"the {t} tier ran no passing test" for t in required if not _outcomes[(t, "passed")]]
    problems += [f"{n} {t} test(s) skipped" for (t, kind), n in _outcomes.items() if kind == "skipped"]
    if problems:
        session.config._limen_tier_problems = problems
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter, config):
    counts = ", ".join(f"{t}: {_outcomes[(t, 'passed')]} passed" for t in TIERS)
    wall = time.monotonic() - _STARTED
    terminalreporter.write_line(f"LIMEN tiers — {counts}; the suite took {wall:.0f} s of wall time")
    for problem in getattr(config, "_limen_tier_problems", []):
        terminalreporter.write_line(f"TIER GUARD FAILED: {problem}", red=True)
