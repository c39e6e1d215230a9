"""The host overview, for admins: the host's CPUs and memory against what LIMEN's VMs take
(those running, and all of them: what is committed), each storage pool's use, the VMs by state,
the versions of libvirt and the hypervisor, and whether new VMs run on KVM (and why not)."""

from sqlalchemy import func, select

from .. import runtime
from ..access import authorize
from ..extensions import db
from ..models import VM, User

_RUNNING = ("running", "paused")  # a paused VM's QEMU holds its memory still


def host_overview(user: User) -> dict[str, object]:
    authorize(user, "host.view")
    host = runtime.get().hypervisor.host.overview()
    # What a VM is set to counts, as on the quota: the larger of what it has and what it waits for.
    vcpus = func.max(VM.vcpus, func.coalesce(VM.pending_vcpus, 0))
    memory = func.max(VM.memory_mib, func.coalesce(VM.pending_memory_mib, 0))
    by_state = {}
    running = {"vcpus": 0, "memory_mib": 0}
    committed = {"vcpus": 0, "memory_mib": 0}
    query = select(VM.state, func.count(VM.id), func.sum(vcpus), func.sum(memory)).group_by(VM.state)
    for state, count, state_vcpus, state_memory in db.session.execute(query):
        by_state[state] = count
        for total in (committed, running) if state in _RUNNING else (committed,):
            total["vcpus"] += int(state_vcpus or 0)
            total["memory_mib"] += int(state_memory or 0)
    return dict(host=host, by_state=dict(sorted(by_state.items())), running=running, committed=committed)
