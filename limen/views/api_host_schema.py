"""The JSON shapes of /api/v1/hosts (admins): a host, a connection test, what adding or
changing one takes, and a VM's move to another."""

NAME = {"type": "string", "minLength": 1, "maxLength": 63, "description": "how LIMEN's pages name it"}
URI = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "description": "its libvirt URI, with no query: qemu+ssh://root@host.example/system or qemu+tls://host.example/system",
}
PEM = {"type": "string", "maxLength": 16384}
TLS_FIELDS = {
    "ca_cert": {**PEM, "description": "a qemu+tls host's: the CA that signed its certificate (PEM)"},
    "client_cert": {**PEM, "description": "a qemu+tls host's: the client certificate it accepts (PEM)"},
    "client_key": {**PEM, "description": "a qemu+tls host's: that certificate's key, unencrypted (PEM)"},
}
CA = {
    "type": ["object", "null"],
    "description": "a TLS host's CA",
    "properties": {
        "subject": {"type": "string"},
        "fingerprint": {"type": "string", "description": "SHA256, as openssl x509 -fingerprint -sha256 shows it"},
    },
}
HOST_KEY = {
    "type": "string",
    "maxLength": 1024,
    "description": 'its SSH host key, as the test showed it: "ssh-ed25519 AAAA…"',
}
HOST = {
    "type": "object",
    "required": ["id", "name", "uri", "local", "enabled", "vms", "problem", "fingerprint", "ca"],
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "uri": {"type": ["string", "null"], "description": "null: the local host (LIMEN's LIBVIRT_URI)"},
        "local": {"type": "boolean"},
        "enabled": {"type": "boolean"},
        "vms": {"type": "integer", "description": "how many of LIMEN's VMs live there"},
        "problem": {"type": ["string", "null"], "description": "why LIMEN cannot reach it now"},
        "fingerprint": {"type": ["string", "null"], "description": "the SHA256 fingerprint of its pinned SSH key"},
        "ca": CA,
    },
}
HOST_PROBE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "uri"],
    "properties": {"name": NAME, "uri": URI, **TLS_FIELDS},
    "examples": [{"name": "rack-2", "uri": "qemu+ssh://root@127.0.0.1:1/system"}],
}
PROBE = {
    "type": "object",
    "required": ["name", "uri", "hostname", "libvirt_version", "cpus", "memory_mib", "host_key", "fingerprint", "ca"],
    "properties": {
        "name": {"type": "string"},
        "uri": {"type": "string"},
        "hostname": {"type": "string"},
        "libvirt_version": {"type": "string"},
        "cpus": {"type": "integer"},
        "memory_mib": {"type": "integer"},
        "host_key": {
            "type": ["string", "null"],
            "description": "the key an SSH host showed: pass it to POST /hosts once checked",
        },
        "fingerprint": {
            "type": ["string", "null"],
            "description": "check it on the host: ssh-keygen -lf <its host key>",
        },
        "ca": CA,
        "tls_staged": {
            "type": ["string", "null"],
            "description": "a TLS host's certificates, kept for an hour: POST /hosts may pass this instead of them",
        },
    },
}
HOST_ADD = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "uri"],
    "properties": {
        "name": NAME,
        "uri": URI,
        "host_key": {**HOST_KEY, "description": f"an SSH host's: {HOST_KEY['description']}"},
        **TLS_FIELDS,
        "tls_staged": {"type": "string", "maxLength": 16, "description": "a TLS host's: what POST /hosts/probe staged"},
    },
    "examples": [
        {
            "name": "rack-2",
            "uri": "qemu+ssh://root@127.0.0.1:1/system",
            "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIErwO63EUNOzKeR5tkPzsp+IHn6vOS5Y/r1XxUBhVPXf",
        }
    ],
}
HOST_PATCH = {
    "type": "object",
    "additionalProperties": False,
    "required": ["enabled"],
    "properties": {"enabled": {"type": "boolean", "description": "false: LIMEN lets go of it and places no VM there"}},
}
VM_MIGRATE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["host"],
    "properties": {"host": {"type": "string", "maxLength": 63, "description": "the host to move it to, by name"}},
    "examples": [{"host": "rack-2"}],
}
PUBLIC_KEY = {
    "type": "object",
    "required": ["public_key"],
    "properties": {"public_key": {"type": "string", "description": "for root's authorized_keys on each host"}},
}

SCHEMAS = {
    "VMMigrate": VM_MIGRATE,
    "Host": HOST,
    "HostProbe": HOST_PROBE,
    "Probe": PROBE,
    "HostAdd": HOST_ADD,
    "HostPatch": HOST_PATCH,
    "PublicKey": PUBLIC_KEY,
}
