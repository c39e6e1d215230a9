"""Background work as persisted Operation rows, run by a small thread pool.

A request writes the Operation and submits its id; the answer goes back at once. A handler
runs the steps, names each one (``ctx.step``) so every page can show where it is, and registers
how to undo what it has done (``ctx.undo``): on failure the undo steps run newest first, so a
failed create leaves no domain and no volume behind.
"""

import logging
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from flask import current_app
from sqlalchemy import select

from . import audit
from .errors import LimenError, OperationInterrupted
from .extensions import db
from .models import VM, Operation, User, utcnow

log = logging.getLogger(__name__)


@dataclass
class Handler:
    run: Callable[["OpContext"], None]
    on_failure: Callable[["OpContext", LimenError], None] | None = None
    resume: bool = False  # run it again after a restart (it must be idempotent)
    # Settles one a restart interrupted (when it is not resumed); True: its work was done.
    on_interrupted: Callable[[Operation, LimenError], bool] | None = None


HANDLERS: dict[str, Handler] = {}


def handler(
    kind: str,
    on_failure: Callable[["OpContext", LimenError], None] | None = None,
    resume: bool = False,
    on_interrupted: Callable[[Operation, LimenError], bool] | None = None,
) -> Callable[[Callable[["OpContext"], None]], Callable[["OpContext"], None]]:
    """Register the function that carries out Operations of ``kind`` (the use cases do; the
    runner never imports them). With ``resume``, an Operation a previous process left
    unfinished is carried on at start-up; without, it is marked failed, after
    ``on_interrupted`` has put right what it left half done."""

    def register(fn: Callable[["OpContext"], None]) -> Callable[["OpContext"], None]:
        HANDLERS[kind] = Handler(fn, on_failure, resume, on_interrupted)
        return fn

    return register


def _kill_point(kind: str, step: str | None) -> None:
    """For the fault tests: KILL_AFTER_STEP="create/Defining the VM" SIGKILLs this process's
    whole process group (gunicorn's master too, as a power cut would) right after that step's
    work is done, before anything else is recorded."""
    target = current_app.config.get("KILL_AFTER_STEP")
    if target and step and target == f"{kind}/{step}":
        log.warning("KILL_AFTER_STEP %s: killing the process group", target)
        os.killpg(os.getpgid(0), signal.SIGKILL)


class OpContext:
    def __init__(self, op: Operation):
        self.op = op
        # A plain string: reading op.vm_uuid after a commit would open a transaction, and
        # hold a database connection through the slow libvirt call it is passed to.
        self.vm_uuid: str = op.vm_uuid
        self._undo: list[tuple[str, Callable[[], object]]] = []

    def step(self, text: str) -> None:
        _kill_point(self.op.kind, self.op.step)
        log.info("op %s %s vm %s: %s", self.op.id, self.op.kind, self.op.vm_uuid, text)
        self.op.step = text
        self.op.steps = [*self.op.steps, {"step": text, "at": utcnow().isoformat()}]
        db.session.commit()

    def progress(self, text: str) -> None:
        """Say how far the current step is (its text changes; no new step is recorded)."""
        self.op.step = text
        db.session.commit()

    def keep(self) -> None:
        """What is done so far stays: a later failure undoes none of it."""
        self._undo.clear()

    def undo(self, description: str, fn: Callable[[], object]) -> None:
        self._undo.append((description, fn))

    def roll_back(self) -> None:
        while self._undo:
            description, fn = self._undo.pop()
            try:
                self.step(f"Undo: {description}")
                fn()
            except Exception:
                log.exception("op %s vm %s: undo %r failed", self.op.id, self.op.vm_uuid, description)


class Runner:
    def __init__(self, app, workers: int):
        self.app = app
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="limen-op")
        self._finished: dict[int, threading.Event] = {}

    def submit(self, op_id: int) -> None:
        self._finished[op_id] = threading.Event()
        self._pool.submit(self._run, op_id)

    def wait(self, op_id: int, timeout: float) -> bool:
        """Wait for an Operation submitted by this process to finish; False at the deadline.
        One that finished already (or was never submitted here) returns True at once."""
        finished = self._finished.get(op_id)
        return finished is None or finished.wait(timeout)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def recover(self) -> None:
        """Operations a previous process left unfinished: those that resume are queued again;
        the others are settled by their handler's ``on_interrupted``: done if their work was
        in fact done, else failed, with what they left half done undone."""
        resumed = []
        with self.app.app_context():
            stale = db.session.scalars(select(Operation).where(Operation.state.in_(Operation.ACTIVE)))
            for op in stale:
                if HANDLERS[op.kind].resume:
                    op.state, op.step = "pending", "Resuming after LIMEN restarted"
                    op.steps = [*op.steps, {"step": op.step, "at": utcnow().isoformat()}]
                    resumed.append(op.id)
                    log.warning("op %s %s vm %s was interrupted: resuming it", op.id, op.kind, op.vm_uuid)
                    continue
                err = OperationInterrupted()
                settle = HANDLERS[op.kind].on_interrupted
                if settle is not None and settle(op, err):
                    op.state = "done"
                else:
                    op.state, op.error_code, op.error_message = "failed", err.code, err.message
                op.finished_at = utcnow()
                _audit_end(op)
                log.warning("op %s %s vm %s was interrupted: %s", op.id, op.kind, op.vm_uuid, op.state)
            db.session.commit()
        for op_id in resumed:
            self.submit(op_id)

    def _run(self, op_id: int) -> None:
        try:
            self._run_in_context(op_id)
        finally:
            finished = self._finished.pop(op_id, None)
            if finished:
                finished.set()

    def _run_in_context(self, op_id: int) -> None:
        with self.app.app_context():
            op = db.session.get(Operation, op_id)
            assert op is not None, "a submitted operation's row exists"
            handler_ = HANDLERS[op.kind]
            ctx = OpContext(op)
            op.state = "running"
            db.session.commit()
            try:
                handler_.run(ctx)
            except Exception as e:
                if isinstance(e, LimenError):
                    err = e
                else:
                    log.exception("op %s %s vm %s crashed", op.id, op.kind, op.vm_uuid)
                    err = LimenError()
                db.session.rollback()
                log.warning("op %s %s vm %s failed: %s", op.id, op.kind, op.vm_uuid, err)
                ctx.roll_back()
                if handler_.on_failure:
                    try:
                        handler_.on_failure(ctx, err)
                    except Exception:
                        log.exception("op %s: recording the failure failed", op.id)
                        db.session.rollback()
                op.state, op.error_code, op.error_message = "failed", err.code, err.message
            else:
                _kill_point(op.kind, op.step)
                op.state = "done"
                log.info("op %s %s vm %s done", op.id, op.kind, op.vm_uuid)
            op.finished_at = utcnow()
            _audit_end(op)
            db.session.commit()


def _audit_end(op: Operation) -> None:
    """The outcome of a requested action, beside the request in the audit log."""
    actor = db.session.get(User, op.user_id) if op.user_id else None
    vm = db.session.scalar(select(VM).where(VM.uuid == op.vm_uuid))  # gone after a delete
    result = "ok" if op.state == "done" else op.error_code
    assert result is not None, "a failed operation has its error's code"
    audit.record(
        f"vm.{op.kind}",
        result,
        actor=actor,
        vm=vm,
        vm_uuid=op.vm_uuid,
        operation_id=op.id,
        ip=op.source_ip,
        detail=op.error_message if op.state == "failed" else "finished",
    )
