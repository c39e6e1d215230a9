"""The README's API session, run as it stands against LIMEN served by gunicorn on the real
libvirtd (qemu tier): token, create, poll the operation, console ticket, the RFB banner over
the WebSocket, delete."""
import re
import subprocess
from pathlib import Path

import pytest

from helpers import receive_exactly, wait_until, open_console

pytestmark = pytest.mark.qemu
README = Path(__file__).resolve().parent.parent / "README.md"


def session_blocks() -> list[str]:
    section = README.read_text().split("## JSON API", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.S)


def test_the_readmes_api_session(limen, qemu_host):
    limen.start()
    env = {"PATH": "/usr/bin:/bin", "LIMEN": limen.base, "LIMEN_USER": "admin",
           "LIMEN_PASSWORD": (limen.instance / "initial-admin-password").read_text().strip()}
    create, delete = session_blocks()
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", create + 'echo "VM=$VM"\necho "AUTH=$AUTH"\n'],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    state, ws_url, serial_url, vm_line, auth_line = run.stdout.strip().splitlines()[-5:]
    assert state == "running"
    assert "/serial/ws?ticket=" in serial_url
    assert qemu_host.lookupByName("test-vm").isActive()

    ws = open_console(ws_url, origin=None)  # a script, not a browser: no Origin
    assert receive_exactly(ws, 12) == b"RFB 003.008\n"
    ws.close()

    env.update(VM=vm_line.removeprefix("VM="), AUTH=auth_line.removeprefix("AUTH="))
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", delete], env=env, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0 and run.stdout.strip() in ("pending", "running"), run.stderr
    wait_until(lambda: not limen.db("SELECT uuid FROM vm"), 30, "the VM to be deleted")
    assert "test-vm" not in [d.name() for d in qemu_host.listAllDomains()]
