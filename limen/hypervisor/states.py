"""A domain's state and its reason, in LIMEN's words."""

from dataclasses import dataclass

import libvirt

_STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",  # running, waiting on a resource
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutting-down",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "guest-crashed",  # QEMU still runs (on_crash=preserve)
    libvirt.VIR_DOMAIN_PMSUSPENDED: "suspended",
}
# Reasons worth showing beside a state ("shut off (crashed)"); the rest say nothing new.
_REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF: {
        libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shut down",
        libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "forced off",
        libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
        libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed to start",
        libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "stopped by libvirtd",
    },
    libvirt.VIR_DOMAIN_PAUSED: {
        libvirt.VIR_DOMAIN_PAUSED_USER: "paused by a user",
        libvirt.VIR_DOMAIN_PAUSED_IOERROR: "I/O error (a disk's storage may be full)",
        libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
        libvirt.VIR_DOMAIN_PAUSED_CRASHED: "guest crashed",
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting up",
        libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: "shutting down",
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migrating",
        libvirt.VIR_DOMAIN_PAUSED_SAVE: "saving its memory",
        libvirt.VIR_DOMAIN_PAUSED_DUMP: "dumping its memory",
        libvirt.VIR_DOMAIN_PAUSED_FROM_SNAPSHOT: "restored from a snapshot",
        libvirt.VIR_DOMAIN_PAUSED_SNAPSHOT: "taking a snapshot",
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "post-copy migration",
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY_FAILED: "post-copy migration failed",
    },
    libvirt.VIR_DOMAIN_RUNNING: {
        libvirt.VIR_DOMAIN_RUNNING_CRASHED: "guest crashed",
        libvirt.VIR_DOMAIN_RUNNING_WAKEUP: "woken up",
    },
    libvirt.VIR_DOMAIN_CRASHED: {libvirt.VIR_DOMAIN_CRASHED_PANICKED: "guest panicked"},
}
# States with a QEMU process that force-off can end (a "crashed" VM whose QEMU died has none).
ACTIVE_STATES = frozenset({"running", "paused", "shutting-down", "suspended", "guest-crashed"})


@dataclass(frozen=True)
class DomainState:
    state: str
    reason: str | None = None

    @classmethod
    def from_libvirt(cls, state: int, reason: int) -> "DomainState":
        if state == libvirt.VIR_DOMAIN_SHUTOFF and reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            # Not a shutdown anyone asked for: its QEMU process died.
            return cls("crashed", "the QEMU process ended unexpectedly (libvirt: shut off, crashed)")
        return cls(_STATES.get(state, "nostate"), _REASONS.get(state, {}).get(reason))
