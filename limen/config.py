"""Configuration: defaults here, then ``instance/config.py``, then ``LIMEN_*`` environment
variables, then the ``test_config`` handed to ``create_app``; each later source wins.

Environment values are parsed as JSON where they parse (``LIMEN_WORKERS=8`` is an int) and
kept as strings otherwise, which is what ``Flask.config.from_prefixed_env`` does.
"""

import ipaddress
import os
import secrets
from pathlib import Path

import flask


class Config:
    # Where LIMEN listens (nginx, in front of gunicorn: limen/front.py), and gunicorn's request
    # threads for pages; open consoles hold threads of their own, at most CONSOLES_MAX.
    BIND = "127.0.0.1:8080"
    THREADS = 64
    # Open consoles: at most this many on this LIMEN, and per user; one more is refused (4429
    # CONSOLE_LIMIT), so that pages always have their threads.
    CONSOLES_MAX = 128
    CONSOLES_PER_USER = 16
    # Refused console WebSockets from one address that go to the audit log (the rest only to
    # the server log), in Flask-Limiter's syntax.
    CONSOLE_REFUSALS_AUDITED = "10 per minute"
    # Set by gunicorn.conf.py when LIMEN is served behind its nginx (which sets X-Forwarded-*).
    FRONT = ""
    # qemu:///system for a real host; test:///default gives a demo with no hypervisor.
    LIBVIRT_URI = "qemu:///system"
    # The longest any libvirt call may wait on libvirtd, in seconds: opening the connection,
    # and libvirt's keepalive; a libvirtd that stops answering gives HYPERVISOR_UNAVAILABLE
    # (503) within this, and LIMEN reconnects once it answers again.
    LIBVIRT_TIMEOUT = 5
    # None: SQLite in the instance folder (filled in by load()).
    DATABASE_URL = None
    # The libvirt storage pool for VM disks; LIMEN defines a directory pool there if missing.
    STORAGE_POOL = "limen"
    STORAGE_DIR = "/var/lib/limen/images"
    # The libvirt storage pool for installation media (ISOs, cloud images), likewise.
    MEDIA_POOL = "limen-media"
    MEDIA_DIR = "/var/lib/limen/media"
    # An upload whose client sends nothing for this many seconds is given up on (and removed).
    UPLOAD_IDLE_TIMEOUT = 60
    # Past that long, an upload slower than this on average (bytes a second) is given up on too.
    UPLOAD_MIN_RATE = 64 * 1024
    # The largest request body but an upload's (whose limit is the media pool's free space),
    # refused with 413 from its Content-Length before any of it is read.
    MAX_CONTENT_LENGTH = 1024 * 1024
    # What new VMs' NIC is attached to, unless the create form says otherwise: "user"
    # (user-mode, no bridge needed), "network:NAME" (a libvirt network; a bare name works too),
    # "bridge:NAME" (a host bridge) or "none".
    NETWORK = "user"
    # User-mode VMs are reached through host ports forwarded to the guest (SSH's 22 first):
    # taken from this range, on this address, one VM's each.
    FORWARD_PORTS = "22000-22999"
    FORWARD_ADDRESS = "127.0.0.1"
    FORWARDS_PER_VM = 10  # the most host ports one VM may have forwarded (SSH's included)
    # CPU model of new VMs: "" (QEMU's default, works everywhere), "host-model" or
    # "host-passthrough" (fastest; on some nested-virtualisation hosts QEMU cannot start with it).
    CPU_MODE = ""
    # Domain type of new VMs: "" picks KVM when the host offers it, else QEMU's emulator
    # (TCG); "qemu" always emulates (slower, for hosts whose KVM cannot run every guest).
    DOMAIN_TYPE = ""
    # Background operations run on this many threads.
    WORKERS = 16  # a shutdown holds one while it waits for the guest
    # Deadlines, in seconds.
    START_TIMEOUT = 30
    SHUTDOWN_TIMEOUT = 120
    MIGRATION_TIMEOUT = 600  # a live migration still under way then is stopped
    MIGRATION_BANDWIDTH = 0  # MiB/s a live migration may use (0: as much as the link gives)
    # The console: how long it waits for a stopped VM to run, and for its VNC server to answer.
    CONSOLE_START_TIMEOUT = 30
    VNC_CONNECT_TIMEOUT = 5
    # How often each open console checks that its user may still have it, in seconds.
    CONSOLE_RECHECK_INTERVAL = 1.0
    # Origins besides LIMEN's own that may open console WebSockets (e.g. behind a proxy).
    ALLOWED_ORIGINS: list[str] = []
    # Full resync of runtime state against libvirt, in seconds (events do the rest).
    RESYNC_INTERVAL = 30
    # How often running guests are asked for their addresses, hostname and OS, in seconds.
    GUEST_POLL_INTERVAL = 3.0
    # How often every running VM's counters are sampled for its graphs, in seconds, and how
    # long the graphs reach back (kept in memory).
    STATS_INTERVAL = 5.0
    STATS_KEEP = 3600
    # How long LIMEN keeps, in days (None: for good), what only grows; older rows are deleted at
    # start and then every PRUNE_INTERVAL seconds (limen/retention.py).
    RETAIN_AUDIT_DAYS = 365
    RETAIN_SIGN_INS_DAYS = 90  # ended (or outlived) sign-ins
    RETAIN_TICKETS_DAYS = 1  # used or expired console tickets
    RETAIN_CONSOLE_SESSIONS_DAYS = 365  # ended console sessions
    RETAIN_OPERATIONS_DAYS = 90  # finished operations
    PRUNE_INTERVAL = 3600
    # How often an open VM table asks whether anything changed, in seconds.
    POLL_INTERVAL = 2
    # How many VMs one page of the table shows.
    TABLE_PAGE_SIZE = 50
    # Each user's quotas, unless an admin sets that user's own; None means no limit.
    QUOTA_VMS = 10
    QUOTA_VCPUS = 16
    QUOTA_MEMORY_MIB = 16384
    QUOTA_DISK_GIB = 200
    # Sign-in attempts allowed per client address and per username (Flask-Limiter's syntax),
    # counted before the password is checked; one more gets 429 with Retry-After.
    # RATELIMIT_STORAGE_URI (e.g. redis://…) shares the counts between processes; in memory
    # by default.
    LOGIN_LIMIT_PER_IP = "5 per minute"
    LOGIN_LIMIT_PER_USERNAME = "10 per 10 minutes"
    RATELIMIT_STORAGE_URI = "memory://"
    RATELIMIT_HEADERS_ENABLED = True
    # How many reverse proxies in front of LIMEN set X-Forwarded-For/-Proto/-Host (0: none,
    # and those headers are ignored). Behind one TLS proxy: 1. The client address (for the
    # sign-in limits and the audit log) and wss:// console URLs come from them.
    TRUSTED_PROXIES = 0
    # The host names LIMEN answers to (Flask's TRUSTED_HOSTS; ".example.org" takes its
    # subdomains too); a request for another Host gets 400 before routing, so a DNS-rebinding
    # page cannot pass for LIMEN. None: on a loopback BIND with no proxy, the loopback names;
    # else no check (set it when serving other names, or behind a proxy).
    TRUSTED_HOSTS: list[str] | None = None
    # A sign-in ends this many hours after it began, however active (then sign in again).
    SIGN_IN_LIFETIME_HOURS = 24
    # Cookies only over HTTPS. None: on, unless LIMEN listens on a loopback address only.
    SECURE_COOKIES = None
    # For the fault tests only: SIGKILL the serving process right after this Operation step,
    # e.g. "create/Defining the VM". Never set it anywhere else.
    KILL_AFTER_STEP = ""
    # How passwords are hashed (werkzeug's generate_password_hash). Keep scrypt; the tests
    # choose a cheap method so that making users costs no time.
    PASSWORD_HASH_METHOD = "scrypt"
    # Create an "admin" user with a random password when there is no user at all.
    INITIAL_ADMIN = True

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    WTF_CSRF_TIME_LIMIT = None  # the token lives as long as the session
    # Requests, consoles and background operations each borrow a connection for a moment.
    SQLALCHEMY_ENGINE_OPTIONS = {"connect_args": {"timeout": 30}, "pool_size": 10, "max_overflow": 100}


def layer(config: flask.Config, test_config: dict | None = None) -> flask.Config:
    """Fill ``config`` (whose root is the instance folder) from every source, in order."""
    config.from_object(Config)
    config.from_pyfile("config.py", silent=True)
    config.from_prefixed_env("LIMEN")
    if test_config:
        config.update(test_config)
    return config


def for_server() -> flask.Config:
    """The configuration gunicorn.conf.py reads (BIND, THREADS), from the same sources as the app."""
    instance = os.environ.get("LIMEN_INSTANCE_PATH") or str(Path(__file__).resolve().parent.parent / "instance")
    return layer(flask.Config(instance))


def load(app, test_config: dict | None) -> None:
    layer(app.config, test_config)

    instance = Path(app.instance_path)
    instance.mkdir(mode=0o700, parents=True, exist_ok=True)
    instance.chmod(0o700)  # the database, the secret key and the first admin's password are in it
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _secret_key(instance / "secret_key")
    if not app.config.get("DATABASE_URL"):
        app.config["DATABASE_URL"] = f"sqlite:///{instance / 'limen.sqlite'}"
    app.config["SQLALCHEMY_DATABASE_URI"] = app.config["DATABASE_URL"]
    bind = str(app.config["BIND"])
    # (Werkzeug cannot match an IPv6 Host, so an IPv6 loopback BIND gets no default list.)
    ipv4_loopback = is_loopback(bind) and "[" not in bind
    if app.config["TRUSTED_HOSTS"] is None and ipv4_loopback and not int(app.config["TRUSTED_PROXIES"]):
        app.config["TRUSTED_HOSTS"] = ["localhost", "127.0.0.1"]
    elif isinstance(app.config["TRUSTED_HOSTS"], str):  # LIMEN_TRUSTED_HOSTS=a.example,b.example
        app.config["TRUSTED_HOSTS"] = [h.strip() for h in app.config["TRUSTED_HOSTS"].split(",") if h.strip()]
    secure = app.config["SECURE_COOKIES"]
    app.config["SESSION_COOKIE_SECURE"] = not is_loopback(app.config["BIND"]) if secure is None else bool(secure)


def is_loopback(bind: str) -> bool:
    """Does gunicorn's ``bind`` (host:port, [v6]:port, unix:path) serve this machine only?"""
    host = str(bind).rsplit(":", 1)[0].strip("[]") if not str(bind).startswith("unix:") else ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _secret_key(path: Path) -> str:
    """Read the secret key, generating it (mode 0600) on first start."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        key = secrets.token_hex(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key)
        return key
