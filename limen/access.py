"""Who may do what: the one place LIMEN decides it.

Every use case asks here before it reads or changes anything; views and templates never
decide. A VM the user may not see answers VM_NOT_FOUND, exactly as one that does not exist
(its existence is nobody else's business); an action the user may not take answers
NOT_ALLOWED (403). A disabled user may do nothing.
"""

from sqlalchemy import Select, select

from .errors import NotAllowed, VMNotFound
from .extensions import db
from .models import VM, User

SIGNED_IN, OWNER, ADMIN = "signed-in", "owner", "admin"

# Each action and who may take it: any signed-in user, the VM's owner (and admins), or admins.
RULES: dict[str, str] = {
    "vm.list": SIGNED_IN,
    "vm.create": SIGNED_IN,
    "vm.view": OWNER,
    "vm.start": OWNER,
    "vm.shutdown": OWNER,
    "vm.force-off": OWNER,
    "vm.reboot": OWNER,
    "vm.pause": OWNER,
    "vm.resume": OWNER,
    "vm.delete": OWNER,
    "vm.console": OWNER,
    "vm.forwards": OWNER,  # forward host ports to its guest's ports
    "vm.snapshots": OWNER,  # take, revert to and delete its snapshots
    "vm.clone": OWNER,  # a new VM from its disk (the clone is the requester's)
    "vm.edit": OWNER,  # its name, description, autostart, vCPUs and memory
    "vm.media": OWNER,  # put an ISO in its CD-ROM drive, eject it, choose the boot device
    "vm.forget": ADMIN,  # a missing VM's row, without touching libvirt
    "vm.adopt": ADMIN,  # a domain another tool made
    "vm.migrate": ADMIN,  # move it to another host (and cancel that)
    "vm.list-all": ADMIN,
    "account.password": SIGNED_IN,
    "account.tokens": SIGNED_IN,
    "users.view": ADMIN,
    "users.manage": ADMIN,
    "audit.view": ADMIN,
    "host.view": ADMIN,  # the host overview
    "host.manage": ADMIN,  # add, disable and remove hosts; their keys
    "media.list": SIGNED_IN,  # to choose one for a new VM or a CD-ROM drive
    "media.manage": ADMIN,  # upload, register, delete
}


class HostOperator:
    """Whoever runs ``flask --app app …`` on the host: trusted like an admin, audited as "cli"."""

    id = None
    username = "cli"
    is_admin = True
    is_active = True
    is_authenticated = True


CLI = HostOperator()
Actor = User | HostOperator  # who a use case acts for


def authorize(user, action: str, vm: VM | None = None) -> None:
    """Raise NotAllowed (or VMNotFound, for another user's VM) unless ``user`` may ``action``."""
    rule = RULES[action]  # an action nobody listed is a programming error, never allowed
    if user is None or not getattr(user, "is_authenticated", False) or not user.is_active:
        raise NotAllowed("Sign in with an enabled account first.")
    if rule == ADMIN and not user.is_admin:
        raise NotAllowed("Only an administrator may do that.")
    if rule == OWNER:
        if vm is None:
            raise NotAllowed()
        if not user.is_admin and vm.owner_id != user.id:
            raise VMNotFound()


def may(user, action: str, vm: VM | None = None) -> bool:
    """Whether ``authorize`` would let ``user`` do it (to offer a button, or list a thing)."""
    try:
        authorize(user, action, vm)
    except (NotAllowed, VMNotFound):
        return False
    return True


def visible_vms(user: User) -> Select:
    """The VMs ``user`` may see: their own; an admin all."""
    authorize(user, "vm.list")
    query = select(VM)
    return query if user.is_admin else query.where(VM.owner_id == user.id)


def vm_for(user: User, vm_uuid: str, action: str = "vm.view") -> VM:
    """The VM, if ``user`` may take ``action`` on it; VM_NOT_FOUND when it is not theirs."""
    vm = db.session.scalar(visible_vms(user).where(VM.uuid == vm_uuid))
    if vm is None:
        raise VMNotFound()
    authorize(user, action, vm)
    return vm
