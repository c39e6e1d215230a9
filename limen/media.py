"""The media library: installation ISOs and cloud images, in a libvirt storage pool of their
own (MEDIA_POOL), so that they live wherever libvirt runs.

An upload streams from the request body into a new volume through libvirt's volume upload, one
chunk at a time. The file is judged by its first bytes before any volume exists: an ISO has the
ISO 9660 signature at 32 KiB, an image is a qcow2 file with no backing file of its own. A file
that does not fit, is not what it claims, or stops arriving half-way leaves no volume and no
row behind.
"""

import re
import uuid as uuidlib

from flask import current_app
from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import ClientDisconnected

from . import audit, runtime
from .access import authorize
from .errors import (
    LengthRequired,
    LimenError,
    MediumInUse,
    MediumNotFound,
    MediumTooLarge,
    UploadIncomplete,
    ValidationFailed,
)
from .extensions import db, rows_changed
from .forms import whole_number
from .models import DELETING_MEDIUM, IMAGE, ISO, READY, UPLOADING, VM, Medium, User
from .profiles import KINDS

HEAD_BYTES = 64 * 1024  # enough for the ISO 9660 volume descriptor and a qcow2 header
CHUNK_BYTES = 1024 * 1024
NAME_RE = re.compile(r"^[\w][\w .+()-]{0,99}$")
KIND_NAMES = {ISO: "ISO image", IMAGE: "cloud image (qcow2)"}
_QCOW2_EXTERNAL_DATA = 1 << 2  # an incompatible feature: the data lives in another file


def sniff(head: bytes) -> tuple[str, int | None]:
    """(kind, virtual size in bytes) of a file from its first bytes: ("iso", None) or
    ("image", size). Raises ValidationFailed when it is neither, or is a qcow2 file that would
    read another file of the host (a backing file or an external data file)."""
    if head[:4] == b"QFI\xfb" and len(head) >= 32:
        version = int.from_bytes(head[4:8], "big")
        if version not in (2, 3):
            raise ValidationFailed({"file": f"This qcow2 file has version {version}; LIMEN knows 2 and 3."})
        if int.from_bytes(head[8:16], "big"):
            raise ValidationFailed(
                {"file": "This qcow2 file has a backing file of its own; flatten it first (qemu-img convert -O qcow2)."}
            )
        if version == 3 and len(head) >= 80 and int.from_bytes(head[72:80], "big") & _QCOW2_EXTERNAL_DATA:
            raise ValidationFailed({"file": "This qcow2 file keeps its data in an external file."})
        return IMAGE, int.from_bytes(head[24:32], "big")
    if head[0x8001:0x8006] == b"CD001":
        return ISO, None
    raise ValidationFailed(
        {"file": "This is neither an ISO image (no ISO 9660 signature at 32 KiB) nor a qcow2 image."}
    )


def library(user: User, kind: str | None = None) -> list[Medium]:
    """The media ready for use, by name (of one kind if given)."""
    authorize(user, "media.list")
    query = select(Medium).where(Medium.state == READY).order_by(Medium.name)
    if kind:
        query = query.where(Medium.kind == kind)
    return list(db.session.scalars(query))


def get(user: User, medium_id: int, kind: str | None = None) -> Medium:
    authorize(user, "media.list")
    medium = db.session.get(Medium, medium_id)
    if medium is None or medium.state != READY or (kind and medium.kind != kind):
        raise MediumNotFound()
    return medium


def pick(user: User, raw_id, kind: str) -> Medium | None:
    """The ready medium of ``kind`` a form or a JSON body names by its id, or None."""
    number = whole_number(raw_id)
    if number is None:
        return None
    try:
        return get(user, number, kind)
    except MediumNotFound:
        return None


def users_of(medium: Medium) -> list[str]:
    """Who uses a medium: LIMEN's VMs with it in their drive or built on it; failing those,
    any domain or disk libvirt has that refers to its file (another tool's)."""
    names = db.session.scalars(select(VM.name).where(or_(VM.iso_id == medium.id, VM.image_id == medium.id))).all()
    return sorted(names) or runtime.get().hypervisor.medium_users(medium.volume)


def library_page(user: User) -> dict[str, object]:
    """The library page: the media, who uses each, those whose file is gone, and (for admins)
    the files to register."""
    media = library(user)
    return dict(
        library=media,
        users=in_use(user),
        gone=gone(media),
        unregistered=unregistered(user) if user.is_admin else [],
    )


def gone(media: list[Medium]) -> set[int]:
    """The ids of the media whose file is no longer in the pool (deleted behind LIMEN's back);
    none while libvirt cannot say."""
    try:
        files = runtime.get().hypervisor.media.files()
    except LimenError:
        return set()
    return {m.id for m in media if m.volume not in files}


def usable(user: User, kind: str | None = None) -> list[Medium]:
    """The library's media whose file is there: what a new VM or a drive can be given."""
    media = library(user, kind)
    missing = gone(media)
    return [m for m in media if m.id not in missing]


def in_use(user: User) -> dict[int, list[str]]:
    """The LIMEN VMs each medium is in use by, for the library page (an admin sees their
    names; others, whose VMs are not the only ones, see "in use")."""
    authorize(user, "media.list")
    used: dict[int, list[str]] = {}
    for name, iso_id, image_id in db.session.execute(
        select(VM.name, VM.iso_id, VM.image_id).where(or_(VM.iso_id.is_not(None), VM.image_id.is_not(None)))
    ):
        for medium_id in {iso_id, image_id}:
            if medium_id is not None:
                used.setdefault(medium_id, []).append(name)
    return used if user.is_admin else {medium_id: ["in use"] for medium_id in used}


def unregistered(user: User) -> list[tuple[str, int]]:
    """Files in the media pool's directory that are not in the library (copied there by
    hand): (file name, size), for an admin to register."""
    authorize(user, "media.manage")
    known = set(db.session.scalars(select(Medium.volume)))
    return sorted((name, size) for name, size in runtime.get().hypervisor.media.files().items() if name not in known)


def _name_taken(name: str) -> str:
    return f"The library has a medium named {name} already."


def _check(name: str, os_kind: str, errors: dict) -> str:
    name = str(name or "").strip()
    if not NAME_RE.fullmatch(name):
        errors["name"] = "Use 1 to 100 letters, digits, spaces and . _ + ( ) -, starting with a letter or digit."
    elif db.session.scalar(select(Medium.id).where(Medium.name == name)):
        errors["name"] = _name_taken(name)
    if os_kind not in KINDS:
        errors["os_kind"] = f"Choose one of: {', '.join(KINDS)}."
    return name


def _read_exactly(stream, size: int, received: int, total: int) -> bytes:
    """``size`` bytes of the body, read in pieces of at most 64 KiB (so that a failed read
    loses little of the count); UploadIncomplete when the client hangs up, or sends nothing for
    as long as the connection's read timeout (UPLOAD_IDLE_TIMEOUT, set by the view)."""
    data = bytearray()
    try:
        while len(data) < size:
            chunk = stream.read(min(size - len(data), HEAD_BYTES))
            if not chunk:
                break
            data += chunk
    except (ClientDisconnected, ConnectionError, TimeoutError):
        pass
    if len(data) < size:
        raise UploadIncomplete(
            f"The upload stopped after {received + len(data)} of {total} bytes (the client hung up, or "
            f"sent nothing for {current_app.config['UPLOAD_IDLE_TIMEOUT']} s); nothing was kept."
        )
    return bytes(data)


def _removed(volume: str) -> bool:
    """Is the volume gone (deleted now, or never made)? False when libvirt cannot say."""
    try:
        runtime.get().hypervisor.media.delete_volume(volume)
    except LimenError:
        return False
    return True


@audit.refusals("media.upload", subject="name")
def upload(user: User, *, kind: str, name: str, os_kind: str, length: int | None, stream) -> Medium:
    """Stream an upload of ``length`` bytes from ``stream`` into a new medium."""
    authorize(user, "media.manage")
    errors: dict[str, str] = {}
    if kind not in KIND_NAMES:
        errors["kind"] = "Choose iso or image."
    name = _check(name, os_kind, errors)
    if errors:
        raise ValidationFailed(errors)
    if not length:
        raise LengthRequired()
    pool = runtime.get().hypervisor.media
    free = pool.free_bytes()
    if length > free:
        raise MediumTooLarge(
            f"The file has {length / 2**30:.2f} GiB; the storage pool {pool.name} has {free / 2**30:.2f} GiB free."
        )
    head = _read_exactly(stream, min(HEAD_BYTES, length), 0, length)
    found, virtual = sniff(head)
    if found != kind:
        raise ValidationFailed({"file": f"This is a {KIND_NAMES[found]}, not a {KIND_NAMES[kind]}."})

    medium = Medium(
        kind=kind,
        name=name,
        os_kind=os_kind,
        size_bytes=length,
        virtual_bytes=virtual,
        volume=f"{uuidlib.uuid4()}.{'iso' if kind == ISO else 'qcow2'}",
        created_by_id=user.id,
        state=UPLOADING,
    )
    db.session.add(medium)
    try:
        db.session.commit()  # a crash from here on leaves a row start-up recovery removes
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"name": _name_taken(name)}) from None
    medium_id, volume = medium.id, medium.volume

    def chunks():
        yield head
        received = len(head)
        while received < length:
            chunk = _read_exactly(stream, min(CHUNK_BYTES, length - received), received, length)
            received += len(chunk)
            yield chunk

    try:
        pool.upload(volume, length, chunks())
    except Exception:
        db.session.rollback()
        if _removed(volume):  # else the row stays "uploading", and the next start removes both
            db.session.delete(db.session.get(Medium, medium_id))
            db.session.commit()
        raise
    uploaded = db.session.get(Medium, medium_id)
    assert uploaded is not None, "only this upload removes its row"
    uploaded.state = READY
    audit.record("media.upload", actor=user, target=name, detail=f"{kind}, {length} bytes")
    db.session.commit()
    return uploaded


def named(name: str) -> Medium | None:
    """The library's medium called ``name``, if any."""
    return db.session.scalar(select(Medium).where(Medium.name == name))


@audit.refusals("media.register", subject="name")
def register(user: User, file: str, name: str, os_kind: str) -> Medium:
    """Add a file already in the media pool's directory to the library; its kind comes from
    its first bytes."""
    authorize(user, "media.manage")
    errors: dict[str, str] = {}
    name = _check(name, os_kind, errors)
    pool = runtime.get().hypervisor.media
    size = pool.size(file) if file else None
    if size is None:
        errors["file"] = (
            f"{file} is a symbolic link: LIMEN takes only files in the media directory itself."
            if pool.is_link(file)
            else f"The media pool has no file {file}."
        )
    elif db.session.scalar(select(Medium.id).where(Medium.volume == file)):
        errors["file"] = f"{file} is in the library already."
    if errors:
        raise ValidationFailed(errors)
    kind, virtual = sniff(pool.head(file, HEAD_BYTES))
    medium = Medium(
        kind=kind,
        name=name,
        os_kind=os_kind,
        size_bytes=size,
        virtual_bytes=virtual,
        volume=file,
        created_by_id=user.id,
        state=READY,
    )
    db.session.add(medium)
    audit.record("media.register", actor=user, target=name, detail=f"{kind}, {file}")
    try:
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        raise ValidationFailed({"name": _name_taken(name)}) from None
    return medium


@audit.refusals("media.delete", subject="medium_id")
def delete(user: User, medium_id: int) -> None:
    """Delete a medium and its file, unless something uses it."""
    authorize(user, "media.manage")
    # Marked first, in a transaction of its own: from then on no new VM or drive can take it
    # (they claim a medium only while it is ready), and any that did before is found below.
    claimed = rows_changed(
        update(Medium).where(Medium.id == medium_id, Medium.state == READY).values(state=DELETING_MEDIUM)
    )
    db.session.commit()
    if not claimed:
        raise MediumNotFound()
    medium = db.session.get(Medium, medium_id)
    assert medium is not None, "marked deleting above: no other delete removes it"
    try:
        users = users_of(medium)
        if users:
            raise MediumInUse(f"{medium.name} is used by {', '.join(users)}.")
        runtime.get().hypervisor.media.delete_volume(medium.volume)
    except LimenError:
        db.session.rollback()
        db.session.execute(update(Medium).where(Medium.id == medium_id).values(state=READY))
        db.session.commit()
        raise
    audit.record("media.delete", actor=user, target=medium.name)
    db.session.delete(medium)
    db.session.commit()


def claim(medium_id: int) -> bool:
    """In the caller's transaction: take the database's write lock and check the medium is
    still ready (not being deleted). A VM that refers to it, committed in that transaction,
    is then seen by any later delete."""
    return bool(rows_changed(update(Medium).where(Medium.id == medium_id, Medium.state == READY).values(state=READY)))


@runtime.at_start
def recover() -> None:
    """At start-up: remove what uploads cut short by a stop of LIMEN left (row and volume),
    and make media a stop caught being deleted ready again (a delete checks again)."""
    db.session.execute(update(Medium).where(Medium.state == DELETING_MEDIUM).values(state=READY))
    for medium in db.session.scalars(select(Medium).where(Medium.state == UPLOADING)).all():
        try:
            runtime.get().hypervisor.media.delete_volume(medium.volume)
        except LimenError:
            continue  # libvirt unreachable: try again at the next start
        db.session.delete(medium)
    db.session.commit()
