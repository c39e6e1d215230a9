"""Cost of an unchanged table poll against a full render of the table, with 1,000 VMs.

Both are measured side by side in one run, through the whole Flask stack (session, user
loading, template), on libvirt's test driver. Goals: the unchanged poll costs under 2% of a full
render, and a full render of 1,000 rows takes under 100 ms.

Each round is what a server with many idle tabs sees: one full render (the table changed), then
a burst of unchanged polls. The first poll after a render runs on caches the render has just
evicted; it is printed on its own line so that this cost stays visible.

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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from limen import create_app, runtime  # noqa: E402
from limen.extensions import db  # noqa: E402
from limen.models import VM, User  # noqa: E402


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--burst", type=int, default=10, help="unchanged polls after each render")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        app = setup(Path(tmp), args.vms)
        client = app.test_client()
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        client.post("/login", data={"username": "admin", "password": "bench-password", "csrf_token": token})
        full = client.get("/vms/rows")
        rows = full.text.count('<tr id="vm-')
        assert full.status_code == 200 and rows == args.vms, (full.status_code, rows)
        version = re.search(r'rows\?v=([^"]+)"', full.text).group(1)
        assert client.get(f"/vms/rows?v={version}").status_code == 204

        render, poll, first_poll = [], [], []
        for _ in range(args.rounds):  # interleaved, so both see the same machine
            render.append(timed(lambda: client.get("/vms/rows")))
            burst = [timed(lambda: client.get(f"/vms/rows?v={version}")) for _ in range(args.burst)]
            first_poll.append(burst[0])
            poll.extend(burst)
        runtime.stop(app)

    render_ms, poll_ms = statistics.median(render) * 1e3, statistics.median(poll) * 1e3
    first_ms = statistics.median(first_poll) * 1e3
    ratio = poll_ms / render_ms
    print(f"table of {args.vms} VMs, medians of {args.rounds} rounds of 1 render + {args.burst} polls")
    print(f"  full render     {render_ms:8.2f} ms   goal < 100 ms: {'met' if render_ms < 100 else 'MISSED'}")
    print(f"  unchanged poll  {poll_ms:8.3f} ms   (the first after a render: {first_ms:.3f} ms)")
    print(f"  ratio poll/render {ratio:.4f} ({ratio:.2%})   goal < 2%: {'met' if ratio < 0.02 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
