"""The VM table's cost as the fleet grows: polls against renders, all measured side by side in
one run through the whole Flask stack (session, user loading, template) on libvirt's test
driver.

1,000 VMs (defined on the test driver, half running, settled by the state sync), the admin's
table (its first page of 50):
  unchanged poll   a poll with the page's version when nothing changed: 204 (goal < 2% of a
                   full render's time)
  one changed      a poll with the page's version after one VM of the page changed: that row
                   alone (goals <= 5% of a full render's time, <= 2% of its bytes, where the full
                   render is the whole table of 1,000 rows as LIMEN drew it before pages: the
                   cost a poll had then; the page of 50's full render is printed beside it)
10,000 VMs against 1,000 (rows in the database alone, each with three Operations done behind it:
the table reads no domain):
  a page of 50, searched and sorted   goal < 50 ms
  the first page, 10,000 against 1,000   goal <= 1.5x: the cost grows with the page, not the fleet

Stats sampling: 1,000 VMs on the test driver, all of them running, sampled for their graphs as
LIMEN does every 5 s (limen.stats): the CPU time one sample costs (libvirt's call, in-process
for the test driver, and the rates), as a share of one core over the interval (goal < 2%).

Each round: renders, then one VM of the page changes, then a burst of polls with the page's
version from before the change and one with the version after it (a round in which something
else wrote the page is not counted, and said so). A benchmark reports and does not fail: exit
status 0 whether the goals are met or missed.

    .venv/bin/python bench/table_poll.py [--vms 1000] [--rounds 30]
"""
import argparse
import re
import statistics
import sys
import tempfile
import time
import uuid as uuidlib
from pathlib import Path

import libvirt

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limen import create_app, runtime  # noqa: E402
from limen.extensions import db  # noqa: E402
from limen.models import VM, Operation, User  # noqa: E402

HISTORY = ("create", "start", "shutdown")  # the Operations each VM of the scaling rounds has behind it


def setup(tmp: Path, count: int):
    (tmp / "node.xml").write_text("<node/>")
    app = create_app({"INSTANCE_PATH": str(tmp / "instance"), "LIBVIRT_URI": f"test://{tmp}/node.xml",
                      "STORAGE_DIR": str(tmp / "pool"), "NETWORK": "none", "INITIAL_ADMIN": False})
    hv = runtime.get(app).hypervisor
    with app.app_context():
        admin = User(username="admin", role="admin")
        admin.set_password("bench-password")
        db.session.add(admin)
        db.session.commit()
        for i in range(count):
            vm_uuid = str(uuidlib.uuid4())
            name = f"vm-{i:04d}"
            hv.disks.create_volume(f"{vm_uuid}.qcow2", 1)
            hv.domains.define(uuid=vm_uuid, name=name, vcpus=1, memory_mib=64, volume=f"{vm_uuid}.qcow2")
            if i % 2:
                hv.domains.start(vm_uuid)
            db.session.add(VM(uuid=vm_uuid, name=name, owner_id=admin.id, vcpus=1, memory_mib=64,
                              disk_gib=1, state="creating"))
        db.session.commit()
        db.session.execute(db.update(VM).values(state="nostate"))
        db.session.commit()
    runtime.start(app)
    with app.app_context():
        runtime.get(app).sync.resync_all()
    return app


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def signed_in(app):
    client = app.test_client()
    token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
    client.post("/login", data={"username": "admin", "password": "bench-password", "csrf_token": token})
    return client


def rows_only(tmp: Path, count: int):
    """An app whose database holds ``count`` VM rows and whose libvirt holds nothing: what a
    page costs to read and draw, without the state sync (it is not started)."""
    (tmp / "node.xml").write_text("<node/>")
    app = create_app({"INSTANCE_PATH": str(tmp / "instance"), "LIBVIRT_URI": f"test://{tmp}/node.xml",
                      "STORAGE_DIR": str(tmp / "pool"), "NETWORK": "none", "INITIAL_ADMIN": False})
    with app.app_context():
        admin = User(username="admin", role="admin")
        admin.set_password("bench-password")
        db.session.add(admin)
        db.session.commit()
        states = ("running", "shutoff", "paused")
        vms = [dict(uuid=str(uuidlib.uuid4()), name=f"vm-{i:05d}", owner_id=admin.id, vcpus=1 + i % 8, memory_mib=64,
                    disk_gib=1, state=states[i % 3]) for i in range(count)]
        db.session.execute(db.insert(VM), vms)
        # A history: each VM was made, started and shut down (Operations done, as the
        # retention keeps them), so a page shows whether it reads only its own VMs' Operations.
        db.session.execute(db.insert(Operation), [
            dict(kind=kind, vm_uuid=vm["uuid"], user_id=admin.id, state="done", steps=[])
            for vm in vms for kind in HISTORY])
        db.session.commit()
    return app


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1e3


def polls(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = setup(Path(tmp), args.vms)
        client = signed_in(app)

        def version_of(answer) -> str:
            return re.search(r'rows\?v=([^"&]+)', answer.text).group(1)

        def one_changed(n: int) -> str:
            """The page's version now, then one VM of the page changes: a poll with that version
            brings that row alone (each round makes its own, so a write elsewhere in the
            meantime cannot make every later round's measure another)."""
            before = version_of(client.get("/vms/rows"))
            with app.app_context():
                db.session.execute(db.update(VM).where(VM.name == "vm-0007").values(state_reason=f"benchmarked {n}"))
                db.session.commit()
            runtime.get(app).changes.bump()
            return before

        def every_row():
            """The table before pages: every row, which is what each changed poll drew then."""
            app.config["TABLE_PAGE_SIZE"] = args.vms
            try:
                return client.get("/vms/rows")
            finally:
                app.config["TABLE_PAGE_SIZE"] = 50

        page = client.get("/vms/rows")
        assert page.status_code == 200 and page.text.count('<tr id="vm-') == 50, page.status_code
        changed = client.get(f"/vms/rows?v={one_changed(0)}")
        whole_bytes = len(every_row().data)
        render, page_render, poll, delta, odd = [], [], [], [], 0
        for n in range(1, args.rounds + 1):  # interleaved, so all see the same machine
            render.append(timed(every_row))
            page_render.append(timed(lambda: client.get("/vms/rows")))
            version = one_changed(n)
            answer = client.get(f"/vms/rows?v={version}")
            unchanged = version_of(answer)
            # What is timed is what it claims: one row, then nothing.
            if answer.text.count('<tr id="vm-') != 1 or client.get(f"/vms/rows?v={unchanged}").status_code != 204:
                odd += 1  # something else wrote the page meanwhile: not counted
                continue
            delta.extend(timed(lambda: client.get(f"/vms/rows?v={version}")) for _ in range(args.burst))
            poll.extend(timed(lambda: client.get(f"/vms/rows?v={unchanged}")) for _ in range(args.burst))
        runtime.stop(app)
    if odd:
        print(f"  ({odd} of {args.rounds} rounds not counted: the page changed under them)")
    render_ms, page_ms, poll_ms, delta_ms = (median_ms(x) for x in (render, page_render, poll, delta))
    print(f"table of {args.vms} VMs, medians of {args.rounds} rounds")
    print(f"  full render, every row   {render_ms:8.2f} ms, {whole_bytes:8d} bytes (the table before pages)")
    print(f"  full render, a page      {page_ms:8.2f} ms, {len(page.data):8d} bytes")
    print(f"  unchanged poll           {poll_ms:8.3f} ms   ratio to the full render {poll_ms / render_ms:.2%}"
          f" (goal < 2%: {'met' if poll_ms / render_ms < 0.02 else 'MISSED'})")
    time_ratio, byte_ratio = delta_ms / render_ms, len(changed.data) / whole_bytes
    print(f"  one row changed          {delta_ms:8.3f} ms, {len(changed.data):8d} bytes")
    print(f"    time  ratio {time_ratio:.2%} (goal <= 5%: {'met' if time_ratio <= 0.05 else 'MISSED'});"
          f" against the page's render {delta_ms / page_ms:.2%}")
    print(f"    bytes ratio {byte_ratio:.2%} (goal <= 2%: {'met' if byte_ratio <= 0.02 else 'MISSED'});"
          f" against the page's render {len(changed.data) / len(page.data):.2%}")


def scaling(args) -> None:
    with tempfile.TemporaryDirectory() as small_dir, tempfile.TemporaryDirectory() as big_dir:
        small, big = rows_only(Path(small_dir), 1000), rows_only(Path(big_dir), 10_000)
        small_client, big_client = signed_in(small), signed_in(big)
        searched = "/vms/rows?q=vm-0&state=running&sort=created&dir=desc&page=3"
        answer = big_client.get(searched)
        assert answer.status_code == 200 and answer.text.count('<tr id="vm-') == 50, answer.status_code
        small_page, big_page, big_searched = [], [], []
        for _ in range(args.rounds):
            small_page.append(timed(lambda: small_client.get("/vms/rows")))
            big_page.append(timed(lambda: big_client.get("/vms/rows")))
            big_searched.append(timed(lambda: big_client.get(searched)))
    small_ms, big_ms, searched_ms = (median_ms(x) for x in (small_page, big_page, big_searched))
    print("pages of 50 as the fleet grows, medians")
    print(f"  10,000 VMs, searched, filtered and sorted, page 3   {searched_ms:7.2f} ms"
          f" (goal < 50 ms: {'met' if searched_ms < 50 else 'MISSED'})")
    print(f"  first page: 10,000 VMs {big_ms:.2f} ms against 1,000 VMs {small_ms:.2f} ms: ratio {big_ms / small_ms:.2f}"
          f" (goal <= 1.5: {'met' if big_ms / small_ms <= 1.5 else 'MISSED'})")


def sampling(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        app = setup(Path(tmp), args.vms)
        conn = runtime.get(app).hypervisor.connection.get()
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_INACTIVE):
            dom.create()  # the sampler reads running VMs only: all of them run
        sampler = runtime.get(app).stats
        sampler.sample()
        costs = []
        for _ in range(args.rounds):
            start = time.thread_time()
            sampler.sample()
            costs.append(time.thread_time() - start)
        running = len(runtime.get(app).hypervisor.counters.running())
        runtime.stop(app)
    share = statistics.median(costs) / sampler.interval
    print(f"stats sampling of {running} running VMs (of {args.vms}), every {sampler.interval:g} s")
    print(f"  CPU per sample {statistics.median(costs) * 1e3:.2f} ms: {share:.3%} of one core"
          f" (goal < 2%: {'met' if share < 0.02 else 'MISSED'})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=10, help="polls after each render")
    args = parser.parse_args()
    polls(args)
    scaling(args)
    sampling(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
