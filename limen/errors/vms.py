"""VMs and what they are made of: states and actions, libvirt, storage, snapshots and
the media library."""

from .base import LimenError


class VMNotFound(LimenError):
    code = "VM_NOT_FOUND"
    status = 404
    ws_close = 4404
    sentence = "There is no such VM. It may have been deleted; go back to the VM list."


class OperationNotFound(LimenError):
    code = "OPERATION_NOT_FOUND"
    status = 404
    sentence = "There is no such operation (or it is about a VM that is not yours)."


class ForwardNotFound(LimenError):
    code = "FORWARD_NOT_FOUND"
    status = 404
    sentence = "This VM has no such forwarded port."


class VMBusy(LimenError):
    code = "VM_BUSY"
    status = 409
    ws_close = 4409
    sentence = "Another action on this VM is still in progress; wait for it to finish, then try again."


class InvalidState(LimenError):
    code = "VM_STATE_CONFLICT"
    status = 409
    ws_close = 4409
    sentence = "The VM's current state does not allow that action."


class VMStartFailed(LimenError):
    code = "VM_START_FAILED"
    status = 409
    ws_close = 4409
    sentence = (
        "The hypervisor could not start the VM. Its reason is below; fix that "
        "(a missing disk, too little memory) and try again."
    )


class VMNotRunning(LimenError):
    code = "VM_NOT_RUNNING"
    status = 409
    ws_close = 4410
    sentence = "The VM did not reach the running state in time. Look at its state in the VM list, then reconnect."


class RebootTimeout(LimenError):
    code = "REBOOT_TIMEOUT"
    status = 409
    sentence = (
        "The guest did not restart after the reboot request (through its agent, else ACPI). It may "
        "have no operating system or ignore it; use Force off, then Start."
    )


class VMPaused(LimenError):
    code = "VM_PAUSED"
    status = 409
    ws_close = 4411
    sentence = "The VM is paused. Resume it to use its console."


class ShutdownTimeout(LimenError):
    code = "SHUTDOWN_TIMEOUT"
    status = 409
    sentence = (
        "The guest did not power off after the shutdown request (through its agent, else ACPI). "
        "It may have no operating system or ignore it; use Force off."
    )


class ShutdownCutShort(LimenError):
    code = "SHUTDOWN_CUT_SHORT"
    status = 409
    sentence = "Force off ended the VM before its guest had shut down."


class PortInUse(LimenError):
    code = "PORT_IN_USE"
    status = 409
    sentence = "A host port this VM forwards to its guest is taken by another program; choose another port."


class StorageFailed(LimenError):
    code = "STORAGE_FAILED"
    status = 502
    sentence = "The storage pool refused the operation."


class HypervisorError(LimenError):
    """libvirt answered with an error that has no more specific code; its message is kept."""

    code = "HYPERVISOR_ERROR"
    status = 502
    ws_close = 4502
    sentence = "The hypervisor refused the request."


class HypervisorUnavailable(LimenError):
    code = "HYPERVISOR_UNAVAILABLE"
    status = 503
    ws_close = 4503
    sentence = (
        "LIMEN cannot reach the hypervisor (libvirtd). It retries on its own; "
        "reconnect in a moment, or ask an administrator to check libvirtd."
    )


class VMIsBase(LimenError):
    """Linked clones read this VM's disk: it must not change while they exist."""

    code = "VM_HAS_LINKED_CLONES"
    status = 409
    ws_close = 4409
    sentence = (
        "Linked clones are built on this VM's disk: it cannot start, change or be deleted while "
        "they exist. Delete its linked clones first."
    )


class SnapshotUnsupported(LimenError):
    code = "SNAPSHOT_UNSUPPORTED"
    status = 409
    sentence = "This VM cannot be snapshotted."


class SnapshotNotFound(LimenError):
    code = "SNAPSHOT_NOT_FOUND"
    status = 404
    sentence = "The VM has no snapshot of that name."


class DiskNotFound(LimenError):
    code = "DISK_NOT_FOUND"
    status = 404
    sentence = "The VM has no disk of that name."


class NicNotFound(LimenError):
    code = "NIC_NOT_FOUND"
    status = 404
    sentence = "The VM has no NIC with that MAC address."


class OperationInterrupted(LimenError):
    code = "OPERATION_INTERRUPTED"
    status = 500
    sentence = "LIMEN stopped while this operation was running."


class MediumNotFound(LimenError):
    code = "MEDIUM_NOT_FOUND"
    status = 404
    sentence = "There is no such ISO or image in the library."


class MediumInUse(LimenError):
    code = "MEDIUM_IN_USE"
    status = 409
    sentence = "A VM still uses this medium."


class MediumTooLarge(LimenError):
    code = "MEDIUM_TOO_LARGE"
    status = 413
    sentence = "The file does not fit in the media storage pool."


class LengthRequired(LimenError):
    code = "LENGTH_REQUIRED"
    status = 411
    sentence = "An upload must say its size (Content-Length)."


class UploadIncomplete(LimenError):
    code = "UPLOAD_INCOMPLETE"
    status = 400
    sentence = "The upload ended before the whole file arrived; nothing was kept."
