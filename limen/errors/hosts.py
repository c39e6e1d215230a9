"""The errors of LIMEN's hosts: the libvirt hosts an admin adds, and reaching them."""

from .base import LimenError
from .vms import HypervisorUnavailable


class HostNotFound(LimenError):
    code = "HOST_NOT_FOUND"
    status = 404
    ws_close = 4404
    sentence = "There is no such host."


class HostUnreachable(HypervisorUnavailable):
    """A host's libvirt cannot be reached (its address, its SSH server, its key, its libvirtd):
    libvirt's reason is kept."""

    code = "HOST_UNREACHABLE"
    status = 503
    ws_close = 4503
    sentence = "LIMEN cannot reach that host's libvirt. Check its address, its SSH server and libvirtd there."


class HostKeyMismatch(LimenError):
    """The host showed another SSH host key than the one pinned when it was added: it may not
    be the host it claims to be."""

    code = "HOST_KEY_MISMATCH"
    status = 502
    ws_close = 4502
    sentence = (
        "The host showed an SSH host key other than the one LIMEN pinned. LIMEN will not talk to it; "
        "if the host was reinstalled, remove it and add it again."
    )


class HostInUse(LimenError):
    code = "HOST_IN_USE"
    status = 409
    sentence = "VMs live on this host: move or delete them before removing it."


class HostDisabled(LimenError):
    code = "HOST_DISABLED"
    status = 409
    sentence = (
        "This host is disabled: LIMEN does not connect to it and places no VM there. "
        "An admin can enable it again on the Hosts page."
    )


class MigrationFailed(LimenError):
    """libvirt could not move the VM; its reason is kept. The VM runs on where it was."""

    code = "MIGRATION_FAILED"
    status = 502
    ws_close = 4502
    sentence = "The VM could not be moved to the other host. It runs on where it was."


class MigrationCancelled(LimenError):
    code = "MIGRATION_CANCELLED"
    status = 409
    sentence = "The migration was cancelled. The VM runs on where it was."


class DestPoolMissing(LimenError):
    code = "DEST_POOL_MISSING"
    status = 409
    sentence = (
        "The destination host has no usable storage pool for the VM's disks, and LIMEN could not make one. "
        "Check the pool's directory there."
    )


class IncompatibleCPU(LimenError):
    code = "INCOMPATIBLE_CPU"
    status = 409
    sentence = "The destination host's CPU cannot run this VM as it runs now. Choose another host."
