"""Each user's quotas (VMs, vCPUs, memory, disk), what their VMs take, and the atomic claim a
create makes."""

import math
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import Select, func, select, update

from ..errors import QuotaExceeded
from ..extensions import db
from ..models import VM, User

QUOTA_FIELDS = {
    "quota_vms": "QUOTA_VMS",
    "quota_vcpus": "QUOTA_VCPUS",
    "quota_memory_mib": "QUOTA_MEMORY_MIB",
    "quota_disk_gib": "QUOTA_DISK_GIB",
}
MAX_QUOTA = 10**9


@dataclass(frozen=True)
class Usage:
    vms: int = 0
    vcpus: int = 0
    memory_mib: int = 0
    disk_gib: int = 0


@dataclass(frozen=True)
class Quota:
    """Each limit, or None for no limit."""

    vms: int | None
    vcpus: int | None
    memory_mib: int | None
    disk_gib: int | None


@dataclass(frozen=True)
class Account:
    user: User
    quota: Quota
    usage: Usage


def quota_of(user: User) -> Quota:
    cfg = current_app.config
    values = [getattr(user, f) if getattr(user, f) is not None else cfg[key] for f, key in QUOTA_FIELDS.items()]
    return Quota(*values)


def _usage_query() -> Select[int, int, int, int, int]:
    return select(
        VM.owner_id,
        func.count(VM.id),
        # A running VM set to more than it has counts what it is set to (its next start brings it).
        func.coalesce(func.sum(func.max(VM.vcpus, func.coalesce(VM.pending_vcpus, 0))), 0),
        func.coalesce(func.sum(func.max(VM.memory_mib, func.coalesce(VM.pending_memory_mib, 0))), 0),
        # A VM's disk, and what its snapshots added to its file (MiB, rounded up to GiB).
        func.coalesce(func.sum(VM.disk_gib), 0) + (func.coalesce(func.sum(VM.snapshot_mib), 0) + 1023) // 1024,
    ).group_by(VM.owner_id)


def usage_by_owner() -> dict[int, Usage]:
    return {row[0]: Usage(*row[1:]) for row in db.session.execute(_usage_query())}


def usage_of(user: User) -> Usage:
    """What the user's VMs take, whatever their state: a stopped VM keeps its disk and its
    claim to memory and vCPUs."""
    row = db.session.execute(_usage_query().where(VM.owner_id == user.id)).first()
    return Usage(*row[1:]) if row else Usage()


def account_of(user: User) -> Account:
    return Account(user, quota_of(user), usage_of(user))


def _locked(user_id: int) -> User:
    """The user's row, read under the database's write lock: the first statement writes it (a
    column no key refers to, so no foreign-key checks run), which holds the lock (a row lock
    elsewhere) until the caller's transaction ends, so two claims cannot both slip under a
    limit. The caller has no transaction open."""
    db.session.execute(
        update(User)
        .where(User.id == user_id)
        .values(quota_vms=User.quota_vms)
        .execution_options(synchronize_session=False)
    )
    user = db.session.get(User, user_id, populate_existing=True)
    assert user is not None, "the claimant exists: their request was authorised"
    return user


def claim_disk(user_id: int, mib: int, what: str) -> None:
    """Check, atomically, that ``mib`` more disk (what a snapshot is expected to add) fits the
    user's disk quota; the caller records the claim before its transaction ends."""
    user = _locked(user_id)
    quota, used = quota_of(user), usage_of(user)
    want = math.ceil(mib / 1024)
    if quota.disk_gib is not None and used.disk_gib + want > quota.disk_gib:
        raise QuotaExceeded(
            {"disk_gib": f"disk quota: {used.disk_gib} of {quota.disk_gib} GiB used, {want} requested ({what})"}
        )


def claim(user_id: int, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    """Check that one more VM of this size fits the user's quota, atomically (``_locked``).
    Raises QuotaExceeded naming each limit, with the numbers."""
    _claim(user_id, 1, vcpus, memory_mib, disk_gib)


def claim_growth(user_id: int, vcpus: int, memory_mib: int) -> None:
    """Check, atomically, that this many more vCPUs and MiB (a VM made bigger) fit the user's
    quota; the caller records the claim before its transaction ends."""
    _claim(user_id, 0, vcpus, memory_mib, 0)


def _claim(user_id: int, vms: int, vcpus: int, memory_mib: int, disk_gib: int) -> None:
    """Only what grows is checked: a user over a lowered limit may still shrink a VM."""
    user = _locked(user_id)
    quota, used = quota_of(user), usage_of(user)
    problems = {}
    for field, limit, have, want, unit in (
        ("name", quota.vms, used.vms, vms, "VMs"),
        ("vcpus", quota.vcpus, used.vcpus, vcpus, "vCPUs"),
        ("memory_mib", quota.memory_mib, used.memory_mib, memory_mib, "MiB"),
        ("disk_gib", quota.disk_gib, used.disk_gib, disk_gib, "GiB"),
    ):
        if limit is not None and want > 0 and have + want > limit:
            what = {"name": "VM", "vcpus": "vCPU", "memory_mib": "memory", "disk_gib": "disk"}[field]
            problems[field] = f"{what} quota: {have} of {limit} {unit} used, {want} {'' if vms else 'more '}requested"
    if problems:
        raise QuotaExceeded(problems)
