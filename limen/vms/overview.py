"""The host overview, for admins: each host's CPUs and memory against what LIMEN's VMs there
take (those running, and all of them: what is committed) and what is busy now, each storage
pool's use, the VMs by state, the versions of libvirt and the hypervisor, and whether new VMs
run on KVM (and why not). A host that cannot be read now says why, and still counts its VMs."""

from dataclasses import dataclass, field

from sqlalchemy import func, select

from .. import runtime
from ..access import authorize
from ..errors import HostDisabled, HypervisorUnavailable
from ..extensions import db
from ..hypervisor import HostOverview
from ..models import LOCAL_HOST, VM, Host, User
from .queries import host_problems, hypervisor_problem

_RUNNING = ("running", "paused")  # a paused VM's QEMU holds its memory still


@dataclass
class HostUse:
    id: int
    name: str
    problem: str | None = None  # why the host cannot be read now
    host: HostOverview | None = None
    cpu_percent: float | None = None  # its CPUs busy over the sampler's last interval
    by_state: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=lambda: {"vcpus": 0, "memory_mib": 0})
    committed: dict[str, int] = field(default_factory=lambda: {"vcpus": 0, "memory_mib": 0})


def host_overview(user: User) -> dict[str, object]:
    authorize(user, "host.view")
    hosts = {id_: HostUse(id_, name) for id_, name in db.session.execute(select(Host.id, Host.name).order_by(Host.id))}
    # What a VM is set to counts, as on the quota: the larger of what it has and what it waits for.
    vcpus = func.max(VM.vcpus, func.coalesce(VM.pending_vcpus, 0))
    memory = func.max(VM.memory_mib, func.coalesce(VM.pending_memory_mib, 0))
    query = select(VM.host_id, VM.state, func.count(VM.id), func.sum(vcpus), func.sum(memory))
    for host_id, state, count, state_vcpus, state_memory in db.session.execute(query.group_by(VM.host_id, VM.state)):
        use = hosts[host_id or LOCAL_HOST]
        use.by_state[state] = count
        for total in (use.committed, use.running) if state in _RUNNING else (use.committed,):
            total["vcpus"] += int(state_vcpus or 0)
            total["memory_mib"] += int(state_memory or 0)
    problems = {LOCAL_HOST: hypervisor_problem(), **host_problems()}
    for use in hosts.values():
        use.by_state = dict(sorted(use.by_state.items()))
        use.problem = problems.get(use.id)
        if use.problem:
            continue
        try:
            parts = runtime.get().host(use.id)
            use.host, use.cpu_percent = parts.hypervisor.host.overview(), parts.stats.host_cpu_percent
        except (HostDisabled, HypervisorUnavailable) as e:
            use.problem = e.message
    return dict(hosts=list(hosts.values()))
