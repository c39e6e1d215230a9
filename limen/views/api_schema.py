"""The JSON API's schemas: the JSON Schemas that validate request bodies and those of what it
answers. ``openapi`` builds the OpenAPI 3.1 document (``GET /api/v1/openapi.json``) from
them: one definition serves the check and the documentation, so they cannot drift apart."""

from jsonschema import Draft202012Validator

from ..accounts.quotas import MAX_QUOTA
from ..accounts.tokens import MAX_DAYS
from ..accounts.users import MAX_PASSWORD, MIN_PASSWORD, USERNAME_RE
from ..errors import ValidationFailed
from ..vms.create import MIN_MEMORY_MIB
from . import api_host_schema as shapes
from .api_vm_schema import (
    DISK,
    DISK_SIZE,
    NAME,
    NIC,
    NIC_ADD,
    NIC_PATCH,
    SNAPSHOT,
    SNAPSHOT_CREATE,
    STAMP,
    STATS,
    VM_CLONE,
    VM_PATCH,
)

# Only a request's shape is checked here (fields, their JSON types); the values are judged by
# the use cases, the same code and words as on the pages. Patterns and bounds below document
# those rules, and are taken from them.
SHAPE = {"type", "required", "additionalProperties", "enum", "minProperties"}

QUOTA = {"type": ["integer", "null"], "minimum": 0, "maximum": MAX_QUOTA, "description": "null: the configured default"}

# -- request bodies --
VM_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "vcpus", "memory_mib", "disk_gib"],
    "properties": {
        "name": NAME,
        "vcpus": {"type": "integer", "minimum": 1},
        "memory_mib": {"type": "integer", "minimum": MIN_MEMORY_MIB},
        "disk_gib": {"type": "integer", "minimum": 1},
        "source": {
            "type": "string",
            "description": '"" (an empty disk, the default), "iso:<id>" '
            '(install from it: in the CD-ROM drive, booted first) or "image:<id>" (a '
            "cloud image: the disk is an overlay on it, with a cloud-init seed); ids from GET /media",
        },
        "os_kind": {
            "type": "string",
            "description": "linux, windows or other (default: the "
            "medium's OS, else linux): the OS profile's devices and machine type",
        },
        "firmware": {"type": "string", "description": "bios (default) or uefi (when OVMF is installed)"},
        "virtio": {"type": "boolean", "description": "windows: virtio disk and network instead of SATA and e1000e"},
        "network": {
            "type": "string",
            "description": 'what its NIC is attached to: "user" (user mode, reached through forwarded host '
            'ports; the default unless the host is set up otherwise), "network:<name>" (a libvirt network), '
            '"bridge:<name>" (a host bridge) or "none"',
        },
        "host": {
            "type": "string",
            "maxLength": 63,
            "description": 'the host to make it on, by name, or "auto" (the default: the enabled host with the most '
            "free memory that has the network asked for; a VM built on install media is made on the local host)",
        },
        "ci_user": {"type": "string", "description": "image only: the account cloud-init makes (default limen)"},
        "ci_ssh_key": {"type": "string", "description": "image only: its OpenSSH public key"},
        "ci_password": {
            "type": "string",
            "description": "image only: its password (stored hashed); a key or a password is required",
        },
    },
    "examples": [
        {"name": "web-1", "vcpus": 1, "memory_mib": 512, "disk_gib": 1},
        {
            "name": "web-2",
            "vcpus": 2,
            "memory_mib": 2048,
            "disk_gib": 20,
            "source": "image:3",
            "ci_user": "alice",
            "ci_ssh_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx8 alice@laptop",
        },
    ],
}
CDROM = {
    "type": "object",
    "additionalProperties": False,
    "required": ["medium"],
    "properties": {
        "medium": {"type": "integer", "description": "an ISO's id, from GET /media"},
        "boot": {"type": "boolean", "description": "boot from it before the disk (from the next start)"},
    },
    "examples": [{"medium": 2, "boot": True}],
}
CONSOLE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "kind": {
            "enum": ["screen", "serial"],
            "description": "screen (VNC, the default) or serial (the VM's first serial line, as bytes). A "
            "serial line takes one client at a time: its ws_url with &take_over=1 disconnects the one holding it",
        }
    },
    "examples": [{"kind": "serial"}],
}
EJECT = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "boot_from_disk": {
            "type": "boolean",
            "description": "and boot from the disk only (from the next start): what finishes an installation",
        }
    },
    "examples": [{"boot_from_disk": True}],
}
TOKEN_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["username", "password", "name"],
    "properties": {
        "username": {"type": "string"},
        "password": {"type": "string"},
        "name": {"type": "string", "minLength": 1, "maxLength": 64},
        "expires_days": {"type": ["integer", "null"], "minimum": 1, "maximum": MAX_DAYS},
    },
    "examples": [{"username": "alice", "password": "…", "name": "backup-script", "expires_days": 90}],
}
USER_CREATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["username", "password"],
    "properties": {
        "username": {
            "type": "string",
            "pattern": USERNAME_RE.pattern,
            "description": "lower-cased before it is checked",
        },
        "password": {"type": "string", "minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD},
        "role": {"enum": ["user", "admin"]},
    },
    "examples": [{"username": "carol", "password": "a-long-password", "role": "user"}],
}
USER_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "minProperties": 1,
    "properties": {
        "role": {"enum": ["user", "admin"]},
        "disabled": {"type": "boolean"},
        "quota_vms": QUOTA,
        "quota_vcpus": QUOTA,
        "quota_memory_mib": QUOTA,
        "quota_disk_gib": QUOTA,
    },
    "examples": [{"quota_memory_mib": 8192, "disabled": False}],
}

# -- answers --
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "details"],
            "properties": {
                "code": {"type": "string", "description": "stable, UPPER_SNAKE (VM_NOT_FOUND …)"},
                "message": {"type": "string"},
                "details": {"type": "object", "description": "fields: what is wrong with each field"},
            },
        }
    },
}
OPERATION = {
    "type": "object",
    "required": ["id", "kind", "vm_uuid", "state", "step", "steps", "error"],
    "properties": {
        "id": {"type": "integer"},
        "kind": {"type": "string"},
        "vm_uuid": {"type": "string"},
        "state": {"enum": ["pending", "running", "done", "failed"]},
        "step": {"type": ["string", "null"]},
        "steps": {"type": "array", "items": {"type": "object"}},
        "error": {"type": ["object", "null"]},
        "created_at": STAMP,
        "finished_at": STAMP,
    },
}
FORWARD = {
    "type": "object",
    "required": ["id", "protocol", "host_address", "host_port", "guest_port"],
    "properties": {
        "id": {"type": "integer"},
        "protocol": {"enum": ["tcp", "udp"]},
        "host_address": {"type": "string"},
        "host_port": {"type": "integer"},
        "guest_port": {"type": "integer"},
    },
}
FORWARD_ADD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["guest_port"],
    "properties": {
        "guest_port": {"type": "integer", "minimum": 1, "maximum": 65535},
        "protocol": {"enum": ["tcp", "udp"], "description": "tcp unless said"},
    },
    "examples": [{"guest_port": 80}],
}
VM = {
    "type": "object",
    "required": ["uuid", "name", "owner", "state", "vcpus", "memory_mib", "disk_gib"],
    "properties": {
        "uuid": {"type": "string"},
        "name": {"type": "string"},
        "owner": {"type": "string"},
        "state": {"type": "string"},
        "state_reason": {"type": ["string", "null"]},
        "vcpus": {"type": "integer"},
        "memory_mib": {"type": "integer"},
        "disk_gib": {"type": "integer"},
        "snapshots": {"type": "integer", "description": "how many snapshots it has"},
        "snapshot_mib": {"type": "integer", "description": "what they added to its disk, on the disk quota"},
        "description": {"type": "string", "description": "free text its owner wrote"},
        "boot_order": {
            "type": ["array", "null"],
            "items": {"type": "string"},
            "description": "one VM's answers: the drives it boots from, in order (null: libvirt cannot say)",
        },
        "pending": {
            "type": ["object", "null"],
            "description": "the vCPUs and memory it is set to while it runs with others: its next start brings them",
            "properties": {"vcpus": {"type": "integer"}, "memory_mib": {"type": "integer"}},
        },
        "adopted": {"type": "boolean"},
        "created_at": STAMP,
        "state_seen_at": STAMP,
        "os_kind": {"type": "string"},
        "machine": {"type": "string"},
        "disk_bus": {"type": "string"},
        "nic_model": {"type": "string"},
        "firmware": {"type": "string"},
        "iso": {"type": ["string", "null"], "description": "the ISO in its CD-ROM drive"},
        "image": {"type": ["string", "null"], "description": "the cloud image its disk is built on"},
        "boot_cdrom": {"type": "boolean"},
        "network": {"type": ["string", "null"], "description": "user, network:<name>, bridge:<name> or none"},
        "host": {"type": "string", "description": "the host it lives on"},
        "forwards": {
            "type": "array",
            "description": "host ports forwarded to a user-mode guest (SSH: guest_port 22)",
            "items": {"$ref": "#/components/schemas/Forward"},
        },
        "address": {"type": ["string", "null"], "description": "the first address its guest has, while it runs"},
        "guest_agent": {"enum": ["connected", "disconnected", "none", None], "description": "none: no agent channel"},
        "hostname": {"type": ["string", "null"], "description": "as the guest agent reports it"},
        "os": {"type": ["string", "null"], "description": "as the guest agent reports it"},
        "address_source": {"enum": ["agent", "lease", "arp", None], "description": "where the addresses came from"},
        "interfaces": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["mac", "model", "network", "addresses"],
                "properties": {
                    "mac": {"type": "string"},
                    "model": {"type": "string"},
                    "network": {"type": "string", "description": "user, network:<name> or bridge:<name>"},
                    "addresses": {"type": "array", "items": {"type": "string"}, "description": "address/prefix"},
                },
            },
        },
        "operation": {"oneOf": [{"$ref": "#/components/schemas/Operation"}, {"type": "null"}]},
    },
}
VM_PAGE = {
    "type": "object",
    "required": ["items", "page", "per_page", "total"],
    "properties": {
        "items": {"type": "array", "items": {"$ref": "#/components/schemas/VM"}},
        "page": {"type": "integer"},
        "per_page": {"type": "integer"},
        "total": {"type": "integer"},
    },
}
ACCEPTED = {
    "type": "object",
    "required": ["operation"],
    "properties": {"vm": {"$ref": "#/components/schemas/VM"}, "operation": {"$ref": "#/components/schemas/Operation"}},
}
TICKET = {
    "type": "object",
    "required": ["ticket", "ws_url", "expires_at"],
    "properties": {"ticket": {"type": "string"}, "ws_url": {"type": "string"}, "expires_at": STAMP},
}
TOKEN = {
    "type": "object",
    "required": ["id", "name", "token", "expires_at"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "token": {"type": "string", "description": "shown this once"},
        "expires_at": STAMP,
    },
}
MEDIUM = {
    "type": "object",
    "required": ["id", "name", "kind", "os_kind", "size_bytes"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "kind": {"enum": ["iso", "image"]},
        "os_kind": {"type": "string"},
        "size_bytes": {"type": "integer"},
        "virtual_bytes": {"type": ["integer", "null"], "description": "an image's disk size"},
    },
}
USAGE = {
    "type": "object",
    "properties": {k: {"type": ["integer", "null"]} for k in ("vms", "vcpus", "memory_mib", "disk_gib")},
}
USER = {
    "type": "object",
    "required": ["id", "username", "role", "disabled", "quota", "usage"],
    "properties": {
        "id": {"type": "integer"},
        "username": {"type": "string"},
        "role": {"enum": ["user", "admin"]},
        "disabled": {"type": "boolean"},
        "quota": USAGE,
        "usage": USAGE,
    },
}

SCHEMAS = {
    "VM": VM,
    "VMPage": VM_PAGE,
    "Operation": OPERATION,
    "Accepted": ACCEPTED,
    "Error": ERROR,
    "ConsoleTicket": TICKET,
    "Token": TOKEN,
    "User": USER,
    "VMCreate": VM_CREATE,
    "TokenCreate": TOKEN_CREATE,
    "UserCreate": USER_CREATE,
    "UserPatch": USER_PATCH,
    "Medium": MEDIUM,
    "CdromInsert": CDROM,
    "Eject": EJECT,
    "Console": CONSOLE,
    "Forward": FORWARD,
    "ForwardAdd": FORWARD_ADD,
    "Snapshot": SNAPSHOT,
    "VMClone": VM_CLONE,
    **shapes.SCHEMAS,
    "VMPatch": VM_PATCH,
    "Disk": DISK,
    "Stats": STATS,
    "DiskSize": DISK_SIZE,
    "Nic": NIC,
    "NicAdd": NIC_ADD,
    "NicPatch": NIC_PATCH,
    "SnapshotCreate": SNAPSHOT_CREATE,
}


def check(schema: dict, body) -> dict:
    """The request body, if it matches ``schema``; ValidationFailed naming each field else."""
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "Send a JSON object (Content-Type: application/json)."})
    fields = {}
    for key, value in body.items():
        if isinstance(value, str) and not _encodable(value):
            fields[str(key)] = "Send text as valid Unicode (this has a lone surrogate)."
    for err in Draft202012Validator(schema).iter_errors(body):
        if err.validator not in SHAPE:
            continue  # a value rule: the use case judges it, in its own words
        if err.validator == "required":
            field = err.message.split("'")[1]
            fields[field] = "This field is required."
        elif err.validator == "additionalProperties":
            for extra in sorted(set(body) - set(schema.get("properties", {}))):
                fields[extra] = "Not a field of this request."
        else:
            field = str(err.path[0]) if err.path else "body"
            fields.setdefault(field, err.message)
    if fields:
        raise ValidationFailed(fields)
    return body


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
