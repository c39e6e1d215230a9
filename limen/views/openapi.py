"""The OpenAPI 3.1 document of /api/v1, built from the same JSON Schemas that check the
request bodies (api_schema), so that the contract and the checks cannot drift apart."""

from .api_schema import SCHEMAS


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
SNAPSHOT_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def document(server: str) -> dict:
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
                "patch": {
                    "summary": "Change its name (shut off), description, autostart, vCPUs or memory",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("VMPatch")}}},
                    "responses": {"200": _json(_ref("VM"), "The VM"), **_errors(401, 404, 409, 422, 502, 503)},
                },
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
                        "schema": {"enum": ["start", "shutdown", "force-off", "reboot", "pause", "resume"]},
                    },
                ],
                "post": {
                    "summary": "Start, shut down (guest agent, else ACPI), force off, reboot, pause or resume",
                    "responses": {"202": _json(_ref("Accepted"), "The operation"), **vm_ops},
                },
            },
            "/vms/{uuid}/console": {
                "parameters": [UUID],
                "post": {
                    "summary": "A console ticket (screen or serial): open ws_url within a minute, once",
                    "requestBody": {"required": False, "content": {"application/json": {"schema": _ref("Console")}}},
                    "responses": {"201": _json(_ref("ConsoleTicket"), "The ticket"), **_errors(401, 404, 422)},
                },
            },
            "/vms/{uuid}/stats": {
                "parameters": [UUID],
                "get": {
                    "summary": "The VM's CPU, memory, disk and network over the last hour (its graphs)",
                    "responses": {"200": _json(_ref("Stats"), "Its series"), **_errors(401, 404)},
                },
            },
            "/vms/{uuid}/disks": {
                "parameters": [UUID],
                "get": {
                    "summary": "The VM's disks: size, what each takes, bus, backing image",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Disk")}, "Its disks"),
                        **_errors(401, 404, 502, 503),
                    },
                },
                "post": {
                    "summary": "Add an empty data disk (plugged in at once while the VM runs)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DiskSize")}}},
                    "responses": {"201": _json(_ref("Disk"), "The new disk"), **_errors(401, 404, 409, 422, 502, 503)},
                },
            },
            "/vms/{uuid}/disks/{dev}": {
                "parameters": [UUID, {"name": "dev", "in": "path", "required": True, "schema": {"type": "string"}}],
                "patch": {
                    "summary": "Grow a disk (at once while the VM runs); never shrink it",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("DiskSize")}}},
                    "responses": {"200": _json(_ref("Disk"), "The disk"), **_errors(401, 404, 409, 422, 502, 503)},
                },
                "delete": {
                    "summary": "Take a shut-off VM's data disk away and delete its volume",
                    "responses": {"204": {"description": "Gone"}, **_errors(401, 404, 409, 502, 503)},
                },
            },
            "/vms/{uuid}/nics": {
                "parameters": [UUID],
                "get": {
                    "summary": "The VM's NICs: MAC, network, model, link",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Nic")}, "Its NICs"),
                        **_errors(401, 404, 502, 503),
                    },
                },
                "post": {
                    "summary": "Add a NIC (plugged in at once while the VM runs)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NicAdd")}}},
                    "responses": {"201": _json(_ref("Nic"), "The new NIC"), **_errors(401, 404, 409, 422, 502, 503)},
                },
            },
            "/vms/{uuid}/nics/{mac}": {
                "parameters": [UUID, {"name": "mac", "in": "path", "required": True, "schema": {"type": "string"}}],
                "patch": {
                    "summary": "Set a NIC's link up or down (at once), or its model (shut off)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("NicPatch")}}},
                    "responses": {"200": _json(_ref("Nic"), "The NIC"), **_errors(401, 404, 409, 422, 502, 503)},
                },
                "delete": {
                    "summary": "Take a shut-off VM's NIC away",
                    "responses": {"204": {"description": "Gone"}, **_errors(401, 404, 409, 502, 503)},
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
            "/vms/{uuid}/clone": {
                "parameters": [UUID],
                "post": {
                    "summary": "Clone a shut-off VM: a new VM (yours) with its own name, UUID, MACs and disk",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("VMClone")}}},
                    "responses": {
                        "202": _json(_ref("Accepted"), "The clone and its operation"),
                        **_errors(401, 404, 409, 422, 502, 503),
                    },
                },
            },
            "/vms/{uuid}/migrate": {
                "parameters": [UUID],
                "post": {
                    "summary": "Move the running VM to another host, live, with its disks (admins); an operation "
                    "with its progress in its step",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("VMMigrate")}}},
                    "responses": {
                        "202": _json(_ref("Accepted"), "The operation"),
                        **_errors(401, 403, 404, 409, 422, 502, 503),
                    },
                },
            },
            "/vms/{uuid}/migrate/cancel": {
                "parameters": [UUID],
                "post": {
                    "summary": "Stop the VM's migration under way (admins): it runs on where it was",
                    "responses": {
                        "200": _json(_ref("Accepted"), "The migration's operation"),
                        **_errors(401, 403, 404, 409, 502, 503),
                    },
                },
            },
            "/vms/{uuid}/snapshots": {
                "parameters": [UUID],
                "get": {
                    "summary": "The VM's snapshots, oldest first (parent and current give the tree)",
                    "responses": {
                        "200": _json({"type": "array", "items": _ref("Snapshot")}, "The snapshots"),
                        **_errors(401, 404, 502, 503),
                    },
                },
                "post": {
                    "summary": "Take a snapshot: with memory while the VM runs, of its disks while it is shut off",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SnapshotCreate")}},
                    },
                    "responses": {
                        "202": _json(_ref("Accepted"), "The operation"),
                        **_errors(401, 404, 409, 422, 502, 503),
                    },
                },
            },
            "/vms/{uuid}/snapshots/{name}/revert": {
                "parameters": [UUID, SNAPSHOT_NAME],
                "post": {
                    "summary": "Revert the VM to the snapshot (a memory snapshot resumes the guest where it was)",
                    "responses": {"202": _json(_ref("Accepted"), "The operation"), **_errors(401, 404, 409, 502, 503)},
                },
            },
            "/vms/{uuid}/snapshots/{name}": {
                "parameters": [UUID, SNAPSHOT_NAME],
                "delete": {
                    "summary": "Delete the snapshot (its children become its parent's); the VM stays as it is",
                    "responses": {"202": _json(_ref("Accepted"), "The operation"), **_errors(401, 404, 409, 502, 503)},
                },
            },
            "/vms/{uuid}/forwards": {
                "parameters": [UUID],
                "post": {
                    "summary": "Forward a new host port to a port of a user-mode guest (listening at once if it runs)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ForwardAdd")}}},
                    "responses": {
                        "201": _json(_ref("Forward"), "The forward"),
                        **_errors(401, 404, 409, 422, 502, 503),
                    },
                },
            },
            "/vms/{uuid}/forwards/{forward_id}": {
                "parameters": [
                    UUID,
                    {"name": "forward_id", "in": "path", "required": True, "schema": {"type": "integer"}},
                ],
                "delete": {
                    "summary": "Stop forwarding that host port; it is free again",
                    "responses": {"204": {"description": "Removed"}, **_errors(401, 404, 409, 502, 503)},
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
            "/hosts": {
                "get": {
                    "summary": "The hosts LIMEN manages, with their VMs and whether LIMEN reaches them (admins)",
                    "responses": {"200": _json({"type": "array", "items": _ref("Host")}, "Hosts"), **_errors(401, 403)},
                },
                "post": {
                    "summary": "Add a host with the SSH key POST /hosts/probe showed, pinned (admins)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HostAdd")}}},
                    "responses": {"201": _json(_ref("Host"), "The host"), **_errors(401, 403, 422, 502, 503)},
                },
            },
            "/hosts/key": {
                "get": {
                    "summary": "LIMEN's public SSH key, for root's authorized_keys on each host (admins)",
                    "responses": {"200": _json(_ref("PublicKey"), "The key"), **_errors(401, 403)},
                },
            },
            "/hosts/probe": {
                "post": {
                    "summary": "A first connection to a host: what it is, and its SSH key (admins); nothing is kept",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HostProbe")}}},
                    "responses": {"200": _json(_ref("Probe"), "The host"), **_errors(401, 403, 422, 502, 503)},
                },
            },
            "/hosts/{id}": {
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                "patch": {
                    "summary": "Enable or disable a host (admins; the local host stays enabled)",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("HostPatch")}}},
                    "responses": {"200": _json(_ref("Host"), "The host"), **_errors(401, 403, 404, 422)},
                },
                "delete": {
                    "summary": "Remove a host no VM lives on (admins); nothing on it changes",
                    "responses": {"204": {"description": "Removed"}, **_errors(401, 403, 404, 409, 422)},
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
