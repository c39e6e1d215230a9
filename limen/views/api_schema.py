"""The JSON API's contract: the JSON Schemas that validate request bodies, the schemas of what
it answers, and the OpenAPI 3.1 document built from both (``GET /api/v1/openapi.json``).
One definition serves the check and the documentation, so they cannot drift apart."""

from jsonschema import Draft202012Validator

from ..accounts.quotas import MAX_QUOTA
from ..accounts.tokens import MAX_DAYS
from ..accounts.users import MAX_PASSWORD, MIN_PASSWORD, USERNAME_RE
from ..errors import ValidationFailed
from ..vms.create import MIN_MEMORY_MIB, NAME_RE

# Only a request's shape is checked here (fields, their JSON types); the values are judged by
# the use cases, the same code and words as on the pages. Patterns and bounds below document
# those rules, and are taken from them.
SHAPE = {"type", "required", "additionalProperties", "enum", "minProperties"}

NAME = {
    "type": "string",
    "pattern": NAME_RE.pattern,
    "description": "1 to 63 lower-case letters, digits and hyphens, not starting with a hyphen",
}
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
STAMP = {"type": ["string", "null"], "format": "date-time"}
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


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {
        400: "Bad request",
        401: "No valid token",
        403: "Not allowed",
        404: "Not found (or not yours)",
        409: "The state does not allow it, another action is under way, or a VM uses it",
        411: "No Content-Length",
        413: "Larger than the storage pool's free space",
        422: "Invalid fields",
        429: "Too many attempts (Retry-After)",
        502: "libvirt refused (its reason in the message)",
        503: "libvirt unreachable",
    }
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


UUID = {"name": "uuid", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def openapi(server: str) -> dict:
    """The OpenAPI 3.1 document of /api/v1."""
    vm_ops = _errors(401, 404, 409, 502, 503)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "LIMEN API",
            "version": "1",
            "description": "Everything the web UI does, for scripts. Send 'Authorization: Bearer "
            "<token>' on every call but POST /auth/tokens; cookies are not accepted. "
            'Errors are {"error": {"code", "message", "details"}}.',
        },
        "servers": [{"url": server}],
        "security": BEARER,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/auth/tokens": {
                "post": {
                    "summary": "A personal token in exchange for a username and password",
                    "security": [],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("TokenCreate")}}},
                    "responses": {"201": _json(_ref("Token"), "The token (shown once)"), **_errors(401, 422, 429)},
                }
            },
            "/vms": {
                "get": {
                    "summary": "Your VMs (an admin: all, or ?owner=)",
                    "parameters": [
                        {"name": "owner", "in": "query", "schema": {"type": "string"}},
                        {"name": "state", "in": "query", "schema": {"type": "string"}},
                        {"name": "page", "in": "query", "schema": {"type": "integer", "minimum": 1}},
                        {
                            "name": "per_page",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 500},
                        },
                    ],
                    "responses": {"200": _json(_ref("VMPage"), "A page of VMs"), **_errors(401, 422)},
                },
                "post": {
                    "summary": "Create a VM; it starts on its own",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("VMCreate")}}},
                    "responses": {
                        "202": _json(_ref("Accepted"), "The VM and its create operation"),
                        **_errors(401, 409, 422, 502, 503),
                    },
                },
            },
            "/vms/{uuid}": {
                "parameters": [UUID],
                "get": {"summary": "One VM", "responses": {"200": _json(_ref("VM"), "The VM"), **_errors(401, 404)}},
                "delete": {
                    "summary": "Delete a VM and its disk",
                    "responses": {"202": _json(_ref("Accepted"), "The delete operation"), **vm_ops},
                },
            },
            "/vms/{uuid}/actions/{action}": {
                "parameters": [
                    UUID,
                    {
                        "name": "action",
                        "in": "path",
                        "required": True,
                        "schema": {"enum": ["start", "shutdown", "force-off", "reboot"]},
                    },
                ],
                "post": {
                    "summary": "Start, shut down (ACPI), force off or reboot",
                    "responses": {"202": _json(_ref("Accepted"), "The operation"), **vm_ops},
                },
            },
            "/vms/{uuid}/console": {
                "parameters": [UUID],
                "post": {
                    "summary": "A console ticket: open ws_url within a minute, once",
                    "responses": {"201": _json(_ref("ConsoleTicket"), "The ticket"), **_errors(401, 404)},
                },
            },
            "/vms/{uuid}/cdrom": {
                "parameters": [UUID],
                "post": {
                    "summary": "Put a library ISO in the VM's CD-ROM drive (at once if it runs)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("CdromInsert")}}},
                    "responses": {"200": _json(_ref("VM"), "The VM"), **_errors(401, 404, 409, 422, 502, 503)},
                },
            },
            "/vms/{uuid}/eject": {
                "parameters": [UUID],
                "post": {
                    "summary": "Empty the VM's CD-ROM drive; optionally boot from the disk from now on",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("Eject")}}},
                    "responses": {"200": _json(_ref("VM"), "The VM"), **_errors(401, 404, 409, 422, 502, 503)},
                },
            },
            "/media": {
                "get": {
                    "summary": "The library: ISOs and cloud images to create VMs from",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Medium")}, "The media"),
                        **_errors(401),
                    },
                },
                "post": {
                    "summary": "Upload an ISO or a qcow2 cloud image (admins): the file is the body",
                    "parameters": [
                        {"name": "kind", "in": "query", "required": True, "schema": {"enum": ["iso", "image"]}},
                        {"name": "name", "in": "query", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "os_kind",
                            "in": "query",
                            "required": True,
                            "schema": {"enum": ["linux", "windows", "other"]},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                    },
                    "responses": {
                        "201": _json(_ref("Medium"), "The medium"),
                        **_errors(400, 401, 403, 411, 413, 422, 502, 503),
                    },
                },
            },
            "/media/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "delete": {
                    "summary": "Delete a medium and its file, unless a VM uses it (admins)",
                    "responses": {"204": {"description": "Deleted"}, **_errors(401, 403, 404, 409, 502, 503)},
                },
            },
            "/operations/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "get": {
                    "summary": "An operation: its steps, state and error",
                    "responses": {"200": _json(_ref("Operation"), "The operation"), **_errors(401, 404)},
                },
            },
            "/users": {
                "get": {
                    "summary": "Users with quota and usage (admins)",
                    "responses": {"200": _json({"type": "array", "items": _ref("User")}, "Users"), **_errors(401, 403)},
                },
                "post": {
                    "summary": "Create a user (admins)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UserCreate")}}},
                    "responses": {"201": _json(_ref("User"), "The user"), **_errors(401, 403, 422)},
                },
            },
            "/users/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "patch": {
                    "summary": "Change a user's role, status or quotas (admins)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("UserPatch")}}},
                    "responses": {"200": _json(_ref("User"), "The user"), **_errors(401, 403, 404, 422)},
                },
            },
        },
    }
