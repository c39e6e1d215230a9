"""The VM table as a person browses it: a search, filters and a sort kept in the URL, pages (of
TABLE_PAGE_SIZE), and polls that cost what changed.

Each VM row carries a version the database bumps when the row or one of its Operations
changes (``VM.row_version``). A page remembers the largest version it shows and a digest of
which rows it shows in which order; a poll then reads only the page's uuids and versions, and
answers with the rows whose version passed the page's and those that came or left (``moves``),
or with the whole page when its rows moved. Versions are times, so they tell nobody how often anything else changed.
"""

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from flask import current_app
from sqlalchemy import Select, func, select
from sqlalchemy.orm import joinedload, selectinload

from .. import runtime
from ..access import visible_vms
from ..extensions import db
from ..models import VM, Host, User
from .queries import Row, rows_for

SORTS = {
    "name": VM.name,
    "owner": User.username,
    "state": VM.state,
    "host": Host.name,
    "address": VM.address_key,
    "vcpus": VM.vcpus,
    "memory": VM.memory_mib,
    "disk": VM.disk_gib,
    "created": VM.created_at,
}
SEARCH_MAX = 63  # a name is at most 63 characters
SETTLED = ("running", "paused", "shutoff")


@dataclass(frozen=True)
class View:
    """What the table shows: a name search, a state, an owner (admins), a sort and a page. A
    value the table cannot use (a column that does not exist, a page past the end) is read as
    its default, as a link someone shortened by hand should still show a table."""

    q: str = ""
    state: str = ""
    owner: str = ""
    host: str = ""
    sort: str = "name"
    desc: bool = False
    page: int = 1

    @classmethod
    def parse(cls, args: Mapping[str, str], user: User) -> "View":
        sort = args.get("sort", "name")
        if sort not in SORTS or (sort == "owner" and not user.is_admin):
            sort = "name"
        page = args.get("page", "1")
        return cls(
            q=args.get("q", "").strip()[:SEARCH_MAX],
            state=args.get("state", "")[:16],
            owner=args.get("owner", "")[:80] if user.is_admin else "",
            host=args.get("host", "")[:63],
            sort=sort,
            desc=args.get("dir") == "desc",
            page=int(page) if page.isascii() and page.isdigit() and 0 < int(page) < 10**6 else 1,
        )

    def args(self, **changes: object) -> dict[str, str]:
        """The view's query parameters, without those at their default (``changes`` first)."""
        view = replace(self, **changes)  # type: ignore[arg-type]
        every = dict(
            q=view.q,
            state=view.state,
            owner=view.owner,
            host=view.host,
            sort=view.sort,
            dir="desc" if view.desc else "",
        )
        every["page"] = str(view.page) if view.page != 1 else ""
        every["sort"] = "" if view.sort == "name" else view.sort
        return {k: v for k, v in every.items() if v}

    def query(self, **changes: object) -> str:
        """The view as a query string ("" or "?…"), for links and forms."""
        args = self.args(**changes)
        return f"?{urlencode(args)}" if args else ""

    def sorted_by(self, column: str) -> "View":
        """The view sorted by ``column``: ascending, or the other way when it already is."""
        return replace(self, sort=column, desc=not self.desc if self.sort == column else False, page=1)


class _Window:
    """What a page of the table shows, as its count and its pager say it."""

    view: View
    total: int

    @property
    def members(self) -> list[str]:
        raise NotImplementedError

    @property
    def pages(self) -> int:
        return _pages(self.total)

    @property
    def first(self) -> int:
        return (self.view.page - 1) * _per_page() + 1 if self.members else 0

    @property
    def last(self) -> int:
        return self.first + len(self.members) - 1 if self.members else 0


@dataclass
class Page(_Window):
    view: View
    rows: list[Row]
    total: int
    states: list[str]  # the states the search and owner leave, for the state filter

    @property
    def since(self) -> int:
        """The largest version the page shows."""
        return max((r.vm.row_version for r in self.rows), default=0)

    @property
    def members(self) -> list[str]:
        return [r.vm.uuid for r in self.rows]


def _per_page() -> int:
    return max(1, int(current_app.config["TABLE_PAGE_SIZE"]))


def _filtered(user: User, view: View, state: bool = True) -> Select[tuple[VM]]:
    query = visible_vms(user)
    if view.owner or view.sort == "owner":
        query = query.join(VM.owner)
    if view.owner:
        query = query.where(User.username == view.owner)
    if view.host or view.sort == "host":
        query = query.join(VM.host)
    if view.host:
        query = query.where(Host.name == view.host)
    if view.q:
        query = query.where(VM.name.contains(view.q, autoescape=True))
    if state and view.state:
        query = query.where(VM.state == view.state)
    return query


def _ordered(query: Select, view: View) -> Select:
    column = SORTS[view.sort]
    ordered = column.desc() if view.desc else column.asc()
    return query.order_by(ordered.nulls_last(), VM.name.desc() if view.desc else VM.name)


def _count(query: Select) -> int:
    return db.session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0


def _pages(total: int) -> int:
    return max(1, math.ceil(total / _per_page()))


def _window(user: User, view: View) -> tuple[Select, int, View]:
    """The query of what ``view`` finds, how many it finds, and the view with its page within
    their pages (a page past the end is the last)."""
    query = _filtered(user, view)
    total = _count(query)
    if view.page > _pages(total):
        view = replace(view, page=_pages(total))
    return _ordered(query, view).limit(_per_page()).offset((view.page - 1) * _per_page()), total, view


def page(user: User, view: View) -> Page:
    """One page of the rows ``user`` may see, as ``view`` asks."""
    query, total, view = _window(user, view)
    found = db.session.scalars(query.options(selectinload(VM.owner), selectinload(VM.host)))
    states = db.session.scalars(_filtered(user, view, state=False).with_only_columns(VM.state).distinct())
    # The states a VM settles in are always offered (the filter is drawn with the page, and a
    # VM may come to one later); the others only while some VM is in them.
    return Page(view, rows_for(user, list(found)), total, sorted({*SETTLED, *states, view.state} - {""}))


def api_page(
    user: User, *, owner: str = "", state: str = "", number: int = 1, per_page: int = 100
) -> tuple[list[Row], int]:
    """One page of the API's list: the rows ``user`` may see by name (an admin's narrowed to
    ``owner``), and how many there are in all. A page past the end is empty."""
    view = View(state=state, owner=owner if user.is_admin else "")
    query = _filtered(user, view)
    found = db.session.scalars(
        _ordered(query, view).options(selectinload(VM.owner)).limit(per_page).offset((number - 1) * per_page)
    )
    return rows_for(user, list(found)), _count(query)


@dataclass
class Versions(_Window):
    """A page as a poll sees it: each row's uuid and version, in order, and the count."""

    view: View
    found: list[tuple[str, int]]
    total: int

    @property
    def members(self) -> list[str]:
        return [uuid for uuid, _ in self.found]

    @property
    def since(self) -> int:
        return max((version for _, version in self.found), default=0)

    def changed(self, since: int) -> list[str]:
        return [uuid for uuid, version in self.found if version > since]


def versions(user: User, view: View) -> Versions:
    """The uuid and version of each row on the page ``view`` asks for, and how many there are
    in all: what a poll compares, without reading the rows."""
    query, total, view = _window(user, view)
    found = db.session.execute(query.with_only_columns(VM.uuid, VM.row_version))
    return Versions(view, [(uuid, version) for uuid, version in found], total)


def changed_rows(user: User, uuids: list[str], problems: dict[int, str] | None = None) -> list[Row]:
    """The rows of ``uuids`` (that ``user`` may see), for a poll that sends only them: a few rows
    by uuid, read with their owners and hosts in one query (``problems``: the hosts' as the poll
    read them)."""
    found = db.session.scalars(
        visible_vms(user).where(VM.uuid.in_(uuids)).options(joinedload(VM.owner), joinedload(VM.host))
    )
    by_uuid = {vm.uuid: vm for vm in found}
    return rows_for(user, [by_uuid[u] for u in uuids if u in by_uuid], problems)


@dataclass(frozen=True)
class Moves:
    """How the rows of a page became those of a newer one, by rows coming and leaving alone."""

    came: dict[str, str | None]  # each row that came: the row it goes before (None: the last)
    left: list[str]


def moves(before: list[str], after: list[str]) -> Moves | None:
    """The rows that came and left between ``before`` and ``after`` (uuids, in order); None
    when the rows that stayed are not in the same order (a sort moved one)."""
    old, new = set(before), set(after)
    if [u for u in before if u in new] != [u for u in after if u in old]:
        return None
    came: dict[str, str | None] = {}
    following = None
    for uuid in reversed(after):
        if uuid in old:
            following = uuid
        else:
            came[uuid] = following
    return Moves(dict(reversed(came.items())), [u for u in before if u not in new])


@dataclass(frozen=True)
class _Drawn:
    """What a page drawn for a user showed, as the server remembers it by its digest."""

    members: list[str]
    page: int
    extras: tuple


def remember(user: User, drawn: _Window, shown: str, extras: tuple) -> None:
    """Keep which rows the page of digest ``shown`` showed, for ``came_and_left`` at its next poll."""
    runtime.get().changes.show((user.id, shown), _Drawn(drawn.members, drawn.view.page, extras))


def came_and_left(user: User, shown: str, now: Versions, extras: tuple) -> Moves | None:
    """How the page a poll has (by its digest, ``shown``) became ``now`` by rows coming and
    leaving, when the server drew it lately for ``user`` and nothing else on it changed; else
    None (the page comes whole). A page with no rows, or with rows after the VMs' (domains
    LIMEN does not manage: ``extras[0]``), comes whole too: where rows go is then more than
    "before the next one"."""
    before = runtime.get().changes.shown((user.id, shown))
    if not isinstance(before, _Drawn) or not before.members or not now.members or extras[0]:
        return None
    if (before.page, before.extras) != (now.view.page, extras):
        return None
    return moves(before.members, now.members)


def digest(shown: "Page | Versions", *extra: object) -> str:
    """A short digest of what a page shows beyond its rows' contents (which rows, in which
    order, how many in all, the page, and ``extra``: a banner), to tell a poll whether only
    rows changed."""
    parts = (shown.members, shown.total, shown.view.page, extra)
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]
