"""Where a new VM goes: the host the form names, or ("auto", the default) the enabled host with
the most free memory among those that can take it: reachable, with room in LIMEN's storage pool
for the disk asked for, offering the network asked for, and, for a VM built on install media,
the local host (the media library lives there)."""

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from .. import runtime
from ..errors import LimenError
from ..extensions import db
from ..models import LOCAL_HOST, Host
from . import network

AUTO = "auto"


def choices() -> list[str]:
    """The hosts a new VM may be put on by name (the form offers "auto" first)."""
    return list(db.session.scalars(select(Host.name).where(Host.enabled).order_by(Host.id)))


def _fit(host: runtime.HostRuntime, form: Mapping[str, Any], disk_bytes: int) -> tuple[str | None, str]:
    """(why ``host`` cannot take the VM now, or None; the network choice there): it cannot be
    reached, lacks the network, or its pool (made at the first need) cannot be used or has no
    room for ``disk_bytes``."""
    if host.sync.problem:
        return host.sync.problem, ""
    found: dict[str, str] = {}
    chosen = network.validate(form, found, host.hypervisor)
    if found:
        return found["network"], chosen
    try:
        free = host.hypervisor.disks.free_bytes()
    except LimenError as e:
        return f"its storage pool cannot be used ({e.message})", chosen
    if free < disk_bytes:
        return f"its storage pool has {free // 2**30} GiB free", chosen
    return None, chosen


def place(
    form: Mapping[str, Any], errors: dict[str, str], *, uses_media: bool, disk_bytes: int
) -> tuple[runtime.HostRuntime, str]:
    """(the host, the network choice) for a new VM with a disk of ``disk_bytes``; what is wrong
    goes into ``errors`` ("host" or "network"), and then the local host is returned for the
    rest of the checks (which name a pool too small, or the host's own problem)."""
    wanted = str(form.get("host", "") or AUTO).strip()
    rt = runtime.get()
    if wanted != AUTO:
        host_id = db.session.scalar(select(Host.id).where(Host.name == wanted, Host.enabled))
        if host_id is None:
            errors["host"] = (
                f'There is no enabled host named {wanted}; choose one of {", ".join(choices())}, or "auto".'
            )
            return rt.local, network.validate(form, errors, rt.local.hypervisor)
        if uses_media and host_id != LOCAL_HOST:
            errors["host"] = "Install media live on the local host: a VM built on one is made there."
        host = rt.host(host_id)
        return host, network.validate(form, errors, host.hypervisor)
    if uses_media or len(rt.hosts) == 1:
        return rt.local, network.validate(form, errors, rt.local.hypervisor)
    reasons, free, chosen = {}, {}, {}
    for host in list(rt.hosts.values()):
        reason, chosen[host.id] = _fit(host, form, disk_bytes)
        if reason is None:
            try:
                free[host.id] = host.hypervisor.host.free_memory_mib()
                continue
            except LimenError as e:
                reason = e.message
        reasons[host.name] = reason
    if free:
        best = min(free, key=lambda i: (-free[i], i))  # most free memory; the older host on a tie
        return rt.hosts[best], chosen[best]
    errors["host"] = "No host can take this VM now: " + "; ".join(f"{n}: {r}" for n, r in reasons.items()) + "."
    return rt.local, network.validate(form, errors, rt.local.hypervisor)
