"""The JSON Schemas of what a VM is given after it is made, and of its parts: a clone, its
settings (PATCH), its disks and NICs, its snapshots. ``api_schema`` gathers them with the rest."""

from ..vms.create import NAME_RE
from ..vms.snapshots import MAX_DESCRIPTION
from ..vms.snapshots import NAME_RE as SNAPSHOT_NAME_RE

STAMP = {"type": ["string", "null"], "format": "date-time"}
NAME = {
    "type": "string",
    "pattern": NAME_RE.pattern,
    "description": "1 to 63 lower-case letters, digits and hyphens, not starting with a hyphen",
}
VM_CLONE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": NAME,
        "disk": {
            "enum": ["full", "linked"],
            "description": "full (a copy, the default) or linked (an overlay on the source's disk: the source "
            "may not start, change or be deleted while linked clones exist)",
        },
        "ci_password": {
            "type": "string",
            "description": "a VM made from a cloud image: the clone's account password (the source's is not kept)",
        },
    },
    "examples": [{"name": "web-2", "disk": "linked"}],
}
DISK = {
    "type": "object",
    "required": ["dev", "bus", "volume", "capacity_bytes", "allocation_bytes", "backing"],
    "properties": {
        "dev": {"type": "string", "description": "the guest's name for it (vda, vdb, sda …): how LIMEN names it"},
        "bus": {"type": "string"},
        "volume": {"type": ["string", "null"], "description": "its volume in LIMEN's pool"},
        "capacity_bytes": {"type": ["integer", "null"], "description": "what the guest sees"},
        "allocation_bytes": {"type": ["integer", "null"], "description": "what its file really takes"},
        "backing": {"type": ["string", "null"], "description": "the file it reads through to"},
    },
}
DISK_SIZE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["gib"],
    "properties": {
        "gib": {
            "type": "integer",
            "minimum": 1,
            "description": "a new disk's size, or the size to grow one to (never less than it has)",
        }
    },
    "examples": [{"gib": 10}],
}
NIC_MODEL = {"enum": ["virtio", "e1000e", "e1000"], "description": "what the guest sees (it needs a driver for it)"}
NIC = {
    "type": "object",
    "required": ["mac", "network", "model", "link"],
    "properties": {
        "mac": {"type": "string", "description": "libvirt chose it; LIMEN names the NIC by it"},
        "network": {"type": "string", "description": '"user", "network:NAME" or "bridge:NAME"'},
        "model": {"type": "string"},
        "link": {"enum": ["up", "down"]},
    },
}
NIC_ADD = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "network": {"type": "string", "description": "as at create; the configured NETWORK unless said"},
        "model": {**NIC_MODEL, "description": "the VM's OS profile's model unless said"},
    },
    "examples": [{"network": "user"}],
}
NIC_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "link": {"enum": ["up", "down"], "description": "at once while the VM runs"},
        "model": {**NIC_MODEL, "description": "the VM shut off"},
    },
    "examples": [{"link": "down"}],
}
VM_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {**NAME, "description": NAME["description"] + "; the VM shut off (its seed's hostname stays)"},
        "description": {"type": "string", "description": "free text, up to 1000 characters"},
        "autostart": {"type": "boolean", "description": "whether it starts when the host does"},
        "boot_order": {
            "type": "array",
            "items": {"type": "string"},
            "minItems": 1,
            "description": "the drives (disk and CD-ROM devs: vda, sdb …) it boots from, in order, from its next start",
        },
        "vcpus": {
            "type": "integer",
            "minimum": 1,
            "description": "within the host and the quota; a running VM gets more at once up to its maximum, "
            "else at its next start (the VM's pending says so)",
        },
        "memory_mib": {
            "type": "integer",
            "minimum": 1,
            "description": "within the host and the quota; a running VM's balloon gives or takes at once up to "
            "what it started with, else at its next start",
        },
    },
    "description": "any of the fields: all are checked before any is changed, and a change that fails gives "
    "the VM its definition back",
    "examples": [{"memory_mib": 2048, "vcpus": 2}, {"name": "web-old", "autostart": False}],
}
SNAPSHOT_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": SNAPSHOT_NAME_RE.pattern,
            "description": "1 to 63 letters, digits, dots, hyphens and underscores",
        },
        "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
    },
    "examples": [{"name": "before-upgrade", "description": "apt full-upgrade next"}],
}
SNAPSHOT = {
    "type": "object",
    "required": ["name", "description", "created_at", "vm_state", "memory", "parent", "current"],
    "properties": {
        "name": {"type": "string"},
        "description": {"type": "string"},
        "created_at": STAMP,
        "vm_state": {"type": "string", "description": "the VM's state when it was taken (running, shutoff)"},
        "memory": {"type": "boolean", "description": "it holds the VM's memory: reverting resumes the guest"},
        "parent": {"type": ["string", "null"], "description": "the snapshot it was taken after"},
        "current": {"type": "boolean", "description": "the one the VM was last taken or reverted to"},
    },
}


_SERIES = {"type": "array", "items": {"type": ["number", "null"]}}
STATS = {
    "type": "object",
    "description": "The VM's recent past, a point per interval while it ran, oldest first (null: not known); "
    "kept in LIMEN's memory, so the series starts anew when LIMEN restarts",
    "properties": {
        "interval": {"type": "number", "description": "seconds between samples"},
        "t": {
            "type": "array",
            "items": {"type": "number"},
            "description": "each point's time, seconds since the epoch",
        },
        "cpu_percent": {**_SERIES, "description": "of all its vCPUs"},
        "memory_mib": {**_SERIES, "description": "in use, as the guest reports it (else QEMU's resident memory)"},
        "disk_read_bps": {**_SERIES, "description": "bytes a second, all its disks"},
        "disk_write_bps": _SERIES,
        "net_rx_bps": {**_SERIES, "description": "bytes a second, all its NICs"},
        "net_tx_bps": _SERIES,
    },
}
