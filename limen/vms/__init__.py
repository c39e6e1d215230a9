"""VM use cases, one module per seam: ``queries`` (a row, one VM and what it did), ``table`` (the
table as a person browses it: search, sort, pages, polls of what changed), ``create``
(validation and the request), ``actions`` (start … delete, the CD-ROM, adopt and forget),
``edit`` (name, description, autostart, vCPUs and memory), ``disks``, ``nics``, ``network`` (NICs and forwarded
ports), ``snapshots`` (take, revert, delete), ``clone``, ``migrate`` (to another host), ``placement``
(where a new VM goes) and ``jobs`` (the background work those
requests queue). ``lifecycle`` holds what they share: which state allows
which action, and the one way an action is queued.

Views call these functions and render; importing the package registers the job handlers.
"""

from . import (
    disks,
    jobs,  # noqa: F401  (registers the Operation handlers)
    migrate,  # noqa: F401  (its views reach it as vms.migrate)
    nics,
    table,
)
from .actions import adopt, eject, forget, insert_iso, request_action, request_bulk, request_delete, start_or_join
from .clone import request_clone
from .create import create_choices, request_create, validate
from .edit import change as edit
from .edit import settings
from .network import add_forward, remove_forward
from .overview import host_overview
from .queries import (
    Row,
    detail,
    get_vm,
    history,
    host_names,
    host_problems,
    hypervisor_problem,
    operation,
    owners,
    row,
    screen,
    stats,
    tasks,
    unmanaged,
)
from .snapshots import card as snapshot_card
from .snapshots import list_snapshots, request_revert, request_snapshot, request_snapshot_delete, tree

__all__ = [
    "Row",
    "add_forward",
    "adopt",
    "create_choices",
    "detail",
    "disks",
    "edit",
    "eject",
    "forget",
    "get_vm",
    "history",
    "host_names",
    "host_overview",
    "host_problems",
    "hypervisor_problem",
    "insert_iso",
    "list_snapshots",
    "nics",
    "operation",
    "owners",
    "remove_forward",
    "request_action",
    "request_bulk",
    "request_clone",
    "request_create",
    "request_delete",
    "request_revert",
    "request_snapshot",
    "request_snapshot_delete",
    "row",
    "screen",
    "settings",
    "snapshot_card",
    "start_or_join",
    "stats",
    "table",
    "tasks",
    "tree",
    "unmanaged",
    "validate",
]
