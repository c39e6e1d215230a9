"""/api/v1/hosts (admins): the hosts LIMEN manages, as on the Hosts page, and moving a VM to
another. Adding a host is two calls, as a person checks an SSH key: POST /hosts/probe answers
what the host is and the key it showed; POST /hosts keeps the host with that key pinned. A TLS
host's certificates go with both (or, to POST /hosts, the probe's ``tls_staged``)."""

from flask import g, jsonify, request

from .. import hosts, vms
from . import api_host_schema as shapes
from . import api_schema
from .api import bp, operation_json


@bp.post("/vms/<uuid:vm_uuid>/migrate")
def migrate_vm(vm_uuid):
    body = api_schema.check(shapes.VM_MIGRATE, request.get_json(silent=True))
    return jsonify(operation=operation_json(vms.migrate.request_migrate(g.api_user, str(vm_uuid), body))), 202


@bp.post("/vms/<uuid:vm_uuid>/migrate/cancel")
def cancel_migration(vm_uuid):
    return jsonify(operation=operation_json(vms.migrate.cancel(g.api_user, str(vm_uuid))))


def _host(s: hosts.HostStatus) -> dict:
    h = s.host
    return {
        "id": h.id,
        "name": h.name,
        "uri": h.uri,
        "local": h.local,
        "enabled": h.enabled,
        "vms": s.vms,
        "problem": s.problem,
        "fingerprint": s.fingerprint,
        "ca": _ca(s.ca),
    }


def _ca(ca) -> dict | None:
    return {"subject": ca.subject, "fingerprint": ca.fingerprint} if ca else None


def _one(host_id: int) -> dict:
    return _host(hosts.status(g.api_user, host_id))


@bp.get("/hosts")
def list_hosts():
    return jsonify([_host(s) for s in hosts.listing(g.api_user)])


@bp.get("/hosts/key")
def public_key():
    return jsonify(public_key=hosts.public_key(g.api_user))


@bp.post("/hosts/probe")
def probe_host():
    body = api_schema.check(shapes.HOST_PROBE, request.get_json(silent=True))
    p = hosts.probe(g.api_user, body)
    f = p.facts
    return jsonify(
        name=p.name,
        uri=p.uri,
        hostname=f.hostname,
        libvirt_version=f.libvirt_version,
        cpus=f.cpus,
        memory_mib=f.memory_mib,
        host_key=p.host_key,
        fingerprint=p.fingerprint,
        ca=_ca(p.ca),
        tls_staged=p.staged,
    )


@bp.post("/hosts")
def add_host():
    body = api_schema.check(shapes.HOST_ADD, request.get_json(silent=True))
    return jsonify(_one(hosts.add(g.api_user, body).id)), 201


@bp.patch("/hosts/<int(max=9223372036854775807):host_id>")
def update_host(host_id):
    body = api_schema.check(shapes.HOST_PATCH, request.get_json(silent=True))
    hosts.set_enabled(g.api_user, host_id, body["enabled"])
    return jsonify(_one(host_id))


@bp.delete("/hosts/<int(max=9223372036854775807):host_id>")
def remove_host(host_id):
    hosts.remove(g.api_user, host_id)
    return "", 204
