"""cloud-init's NoCloud seed: an ISO 9660 image labelled ``cidata`` holding ``user-data`` and
``meta-data``, built with pycdlib in memory (a few hundred KiB).

The cloud-config is written as JSON, which is YAML too: no value can break out of its string.
Non-ASCII text is written as it is (YAML loaders mishandle JSON's surrogate-pair escapes), and
the use case lets no control character through.
"""

import io
import json
import re
import subprocess

import pycdlib

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A key's comment: printable text only (no control characters, no lone surrogates).
SSH_KEY_RE = re.compile(
    r"^(ssh-(rsa|ed25519|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh\.com)"
    r" [A-Za-z0-9+/=]+( [^\x00-\x1f\x7f\ud800-\udfff]*)?$"
)
HASH_RE = re.compile(r"^\$6\$[^:\s]+$")


def printable(text: str) -> bool:
    """No control characters (a newline would end a password, or a key) and no lone
    surrogates (they are no text at all)."""
    return not re.search(r"[\x00-\x1f\x7f\ud800-\udfff]", text)


def hash_password(password: str) -> str:
    """A SHA-512 crypt hash, as /etc/shadow keeps it (``openssl passwd -6``; the password goes
    through a pipe, never on a command line)."""
    if not printable(password):
        raise ValueError("a password of printable characters only")  # -stdin reads one line
    done = subprocess.run(
        ["openssl", "passwd", "-6", "-stdin"],
        input=password.encode() + b"\n",
        capture_output=True,
        check=True,
        timeout=10,
    )
    hashed = done.stdout.decode().strip()
    if not HASH_RE.fullmatch(hashed):
        raise ValueError("openssl passwd did not answer one SHA-512 crypt hash")
    return hashed


def user_data(hostname: str, user: str, ssh_key: str | None, password_hash: str | None) -> str:
    account = {"name": user, "shell": "/bin/bash", "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": not password_hash}
    if password_hash:
        account["passwd"] = password_hash
    if ssh_key:
        account["ssh_authorized_keys"] = [ssh_key]
    config = {"hostname": hostname, "users": [account], "ssh_pwauth": bool(password_hash)}
    return "#cloud-config\n" + json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def meta_data(instance_id: str, hostname: str) -> str:
    return json.dumps({"instance-id": instance_id, "local-hostname": hostname}, indent=2, ensure_ascii=False) + "\n"


def seed_iso(user_data_text: str, meta_data_text: str) -> bytes:
    """The NoCloud seed image, with Rock Ridge and Joliet names (``user-data``)."""
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident="cidata")
    for name, text in (("user-data", user_data_text), ("meta-data", meta_data_text)):
        data = text.encode()
        iso.add_fp(
            io.BytesIO(data), len(data), f"/{name.replace('-', '').upper()}.;1", rr_name=name, joliet_path=f"/{name}"
        )
    out = io.BytesIO()
    iso.write_fp(out)
    iso.close()
    return out.getvalue()
