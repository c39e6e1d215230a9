"""Typed SQLAlchemy models.

libvirt is the source of truth for a VM's runtime state; a VM row keeps ownership, the spec it
was created with, and the last state LIMEN saw (``state``, ``state_reason``, ``state_seen_at``).
While an Operation owns the VM (``creating``, ``deleting``) that operation sets the state.
"""

import ipaddress
from datetime import UTC, datetime

from flask_login import UserMixin
from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from . import hashing
from .extensions import Model
from .profiles import Profile


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class User(UserMixin, Model):
    __allow_unmapped__ = True  # login_session and api_token below are not columns
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(256))
    role: Mapped[str] = mapped_column(String(16), default="user")  # "admin" | "user"
    disabled: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Quotas; None means the default from the configuration (QUOTA_VMS …).
    quota_vms: Mapped[int | None]
    quota_vcpus: Mapped[int | None]
    quota_memory_mib: Mapped[int | None]
    quota_disk_gib: Mapped[int | None]
    # Not columns: the sign-in (LoginSession) or the API token (ApiToken) the request being
    # served runs under.
    login_session: "LoginSession | None" = None
    api_token: "ApiToken | None" = None

    def get_id(self) -> str:
        """What Flask-Login keeps in the session cookie: the sign-in's token, not the user's
        id, so that ending the sign-in in the database ends the cookie too."""
        assert self.login_session is not None and self.login_session.token, "only a signed-in user has a cookie"
        return self.login_session.token

    def set_password(self, password: str) -> None:
        self.password_hash = hashing.hash_password(password)

    def check_password(self, password: str) -> bool:
        return hashing.check_password(self.password_hash, password)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def is_active(self) -> bool:
        return not self.disabled


LOCAL_HOST = 1  # the id of the host LIMEN runs beside: the first host, never removed


class Host(Model):
    """A libvirt host whose VMs LIMEN manages. The first is the local one, reached by the
    configured LIBVIRT_URI (its ``uri`` is None); an admin adds others by their libvirt URI
    (limen.hosts). An SSH host's key is pinned here when the admin saves it: LIMEN refuses the
    host if it ever shows another."""

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    uri: Mapped[str | None] = mapped_column(String(255), unique=True)
    enabled: Mapped[bool] = mapped_column(default=True)
    host_key: Mapped[str | None] = mapped_column(String(1024))  # "ssh-ed25519 AAAA…", as first seen
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def local(self) -> bool:
        return self.uri is None


def address_key(address: str | None) -> str | None:
    """An address as the table sorts it: IPv4 by number (10.0.0.2 before 10.0.0.10), then IPv6,
    then anything else by its text."""
    if address is None:
        return None
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"9{address}"[:40]
    return f"{ip.version}{int(ip):0{8 if ip.version == 4 else 32}x}"


# States LIMEN sets itself; all others are libvirt's, as named by limen.hypervisor. While a
# VM migrates, its row is "migrating": neither host's sync writes it (limen.vms.migrate).
CREATING, DELETING, ERROR, MISSING, MIGRATING = "creating", "deleting", "error", "missing", "migrating"


class VM(Model):
    id: Mapped[int] = mapped_column(primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    owner: Mapped[User] = relationship()
    host_id: Mapped[int] = mapped_column(ForeignKey("host.id"), index=True, default=LOCAL_HOST, server_default="1")
    host: Mapped[Host] = relationship()
    vcpus: Mapped[int]
    memory_mib: Mapped[int]
    disk_gib: Mapped[int]
    # Its snapshots (libvirt keeps them): how many, and the MiB they added to its disk's file
    # when they were taken, as libvirt measured it (they count against the disk quota).
    snapshots: Mapped[int] = mapped_column(default=0, server_default="0")
    snapshot_mib: Mapped[int] = mapped_column(default=0, server_default="0")
    description: Mapped[str | None] = mapped_column(Text)  # free text, shown escaped
    # vCPUs and memory set while it ran, that it gets only at its next start (None: none wait).
    pending_vcpus: Mapped[int | None]
    pending_memory_mib: Mapped[int | None]
    state: Mapped[str] = mapped_column(String(16), default=CREATING)
    state_reason: Mapped[str | None] = mapped_column(String(512))
    state_seen_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # Made by another tool and adopted: its disks are not LIMEN's, and deleting it keeps them.
    adopted: Mapped[bool] = mapped_column(default=False, server_default="0")
    # Its OS profile (limen.profiles), as its domain was defined. VMs from before profiles
    # existed were defined with these defaults.
    os_kind: Mapped[str] = mapped_column(String(16), default="linux", server_default="linux")
    machine: Mapped[str] = mapped_column(String(32), default="q35", server_default="pc")
    disk_bus: Mapped[str] = mapped_column(String(8), default="virtio", server_default="virtio")
    nic_model: Mapped[str] = mapped_column(String(16), default="virtio", server_default="virtio")
    firmware: Mapped[str] = mapped_column(String(8), default="bios", server_default="bios")
    # The ISO in its CD-ROM drive (None: empty), and whether it boots from it first.
    iso_id: Mapped[int | None] = mapped_column(ForeignKey("medium.id"), index=True)
    iso: Mapped["Medium | None"] = relationship(foreign_keys=[iso_id])
    boot_cdrom: Mapped[bool] = mapped_column(default=False, server_default="0")
    # Made from a cloud image: its disk is an overlay on that base, and cloud-init reads its
    # seed ISO ({"user", "ssh_key", "password"}; the password's hash only until the seed is
    # written, never the password itself).
    image_id: Mapped[int | None] = mapped_column(ForeignKey("medium.id"), index=True)
    image: Mapped["Medium | None"] = relationship(foreign_keys=[image_id])
    cloud_init: Mapped[dict | None] = mapped_column(JSON, deferred=True)  # not for the table
    # What its NIC is attached to: "user", "network:NAME", "bridge:NAME" or "none" (None: made
    # before LIMEN kept it; its domain says). User mode has forwards: host ports to the guest.
    network: Mapped[str | None] = mapped_column(String(80))
    forwards: Mapped[list["Forward"]] = relationship(
        back_populates="vm", cascade="all, delete-orphan", order_by="Forward.guest_port"
    )
    # What its guest last told (limen.guests): the address the table shows, and {"agent",
    # "hostname", "os", "source", "interfaces": [{"mac", "model", "network", "addresses"}]}.
    address: Mapped[str | None] = mapped_column(String(64))
    address_key: Mapped[str | None] = mapped_column(String(40))  # the address as it sorts (address_key())
    guest: Mapped[dict | None] = mapped_column(JSON)
    # Bumped by the database (triggers: migration f8a0b2c4d6e9) whenever the row or one of its
    # Operations changes: the table's poll sends the rows whose version passed the page's.
    row_version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0", index=True)

    @property
    def profile(self) -> Profile:
        """The OS profile its domain was defined with."""
        return Profile(self.os_kind, self.machine, self.disk_bus, self.nic_model, self.firmware)


class Forward(Model):
    """A host port that QEMU's user-mode network forwards to a port of the VM's guest. Kept
    with the VM and applied whenever it starts; a host port belongs to one VM at a time."""

    __table_args__ = (UniqueConstraint("vm_id", "protocol", "guest_port"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    vm_id: Mapped[int] = mapped_column(ForeignKey("vm.id", ondelete="CASCADE"), index=True)
    vm: Mapped[VM] = relationship(back_populates="forwards")
    protocol: Mapped[str] = mapped_column(String(3), default="tcp")
    host_address: Mapped[str] = mapped_column(String(64))
    host_port: Mapped[int] = mapped_column(unique=True)
    guest_port: Mapped[int]


ISO, IMAGE = "iso", "image"
UPLOADING, READY, DELETING_MEDIUM = "uploading", "ready", "deleting"


class Medium(Model):
    """Installation media in LIMEN's media pool: an ISO image, or a cloud image (a qcow2 file
    new VMs use as the read-only base of their disks)."""

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # iso or image
    name: Mapped[str] = mapped_column(String(100), unique=True)
    volume: Mapped[str] = mapped_column(String(255), unique=True)  # its volume in the media pool
    os_kind: Mapped[str] = mapped_column(String(16))  # linux, windows or other: the OS label
    size_bytes: Mapped[int]
    virtual_bytes: Mapped[int | None]  # an image's disk size (its qcow2 header says)
    # "uploading" while its bytes arrive (a row left so by a crash is removed at start-up),
    # "ready", or "deleting" while a delete checks that nothing uses it.
    state: Mapped[str] = mapped_column(String(16), default=UPLOADING)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UnmanagedDomain(Model):
    """A domain libvirt has and LIMEN did not create, as the last resync saw it: listed for
    admins, who may adopt it (give it an owner)."""

    uuid: Mapped[str] = mapped_column(String(36), primary_key=True)
    host_id: Mapped[int] = mapped_column(ForeignKey("host.id"), index=True, default=LOCAL_HOST, server_default="1")
    host: Mapped[Host] = relationship()
    name: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    state_reason: Mapped[str | None] = mapped_column(String(512))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class Operation(Model):
    """A piece of background work on one VM, persisted so that its progress and its end are
    visible to every page and survive the request that started it."""

    id: Mapped[int] = mapped_column(primary_key=True)
    # create, start, shutdown, force-off, reboot, pause, resume, delete, snapshot, revert, snapshot-delete
    kind: Mapped[str] = mapped_column(String(16))
    params: Mapped[dict | None] = mapped_column(JSON)  # what it was asked with (a snapshot's name …)
    vm_uuid: Mapped[str] = mapped_column(String(36), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"))
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending running done failed
    step: Mapped[str | None] = mapped_column(String(128))
    steps: Mapped[list] = mapped_column(JSON, default=list)  # [{"step": ..., "at": iso}, ...]
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    source_ip: Mapped[str | None] = mapped_column(String(64))

    ACTIVE = ("pending", "running")

    @property
    def active(self) -> bool:
        return self.state in self.ACTIVE


class ConsoleTicket(Model):
    """A single-use permission to open one VM's console, for one user, for a minute.
    Only the SHA-256 of the ticket is stored; the ticket itself is shown once."""

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    vm_uuid: Mapped[str] = mapped_column(String(36))
    kind: Mapped[str] = mapped_column(String(8), default="screen", server_default="screen")  # or "serial"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    # What it was asked for under: a sign-in (the console page) or an API token. A console
    # lasts only as long as that does.
    login_session_id: Mapped[int | None] = mapped_column(ForeignKey("login_session.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))


class ConsoleSession(Model):
    """One console connection: who, which VM, when, how much went each way, how it ended."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    vm_uuid: Mapped[str] = mapped_column(String(36), index=True)
    kind: Mapped[str] = mapped_column(String(8), default="screen", server_default="screen")  # or "serial"
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    bytes_to_client: Mapped[int] = mapped_column(default=0)
    bytes_from_client: Mapped[int] = mapped_column(default=0)
    end: Mapped[str | None] = mapped_column(String(64))  # CLIENT_CLOSED, VNC_CLOSED, SERIAL_… or an error
    end_detail: Mapped[str | None] = mapped_column(String(512))
    # The sign-in or API token it was opened under (its ticket's): when that ends, so does it.
    login_session_id: Mapped[int | None] = mapped_column(ForeignKey("login_session.id"))
    api_token_id: Mapped[int | None] = mapped_column(ForeignKey("api_token.id"))


class LoginSession(Model):
    """One sign-in. The cookie carries its token (random, stored only as a SHA-256); signing
    out, a new password or disabling the user ends it, and an ended sign-in's cookie no longer
    signs anyone in."""

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    user: Mapped[User] = relationship()
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    end: Mapped[str | None] = mapped_column(String(32))  # SIGNED_OUT, PASSWORD_CHANGED, USER_DISABLED
    ip: Mapped[str | None] = mapped_column(String(64))
    # Not a column: the token itself, known only to the request that signed in.
    __allow_unmapped__ = True
    token: str | None = None


class AuditEvent(Model):
    """Who did what, to which VM or user, with which result, from where and when. Never a
    password, token or ticket."""

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("user.id"), index=True)
    actor: Mapped[str | None] = mapped_column(String(64))  # the username then (or "cli")
    action: Mapped[str] = mapped_column(String(32), index=True)
    vm_uuid: Mapped[str | None] = mapped_column(String(36), index=True)
    vm_name: Mapped[str | None] = mapped_column(String(63))
    target: Mapped[str | None] = mapped_column(String(64))  # the user an admin action was on
    result: Mapped[str] = mapped_column(String(64))  # "ok", "accepted" or an error code
    detail: Mapped[str | None] = mapped_column(String(512))
    ip: Mapped[str | None] = mapped_column(String(64))
    operation_id: Mapped[int | None]


class ApiToken(Model):
    """A personal API token: ``Authorization: Bearer <token>``. Only its SHA-256 is stored;
    the token itself is shown once, when it is made."""

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"), index=True)
    user: Mapped[User] = relationship()
    name: Mapped[str] = mapped_column(String(64))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to tell it apart
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
