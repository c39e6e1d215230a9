"""Retention: rows older than their RETAIN_*_DAYS are deleted by the pruning thread, in use or
young ones are kept, and /metrics counts what went (fast tier)."""
import uuid
from datetime import timedelta

from sqlalchemy import func, select

from helpers import wait_until
from limen import runtime
from limen.extensions import db
from limen.models import AuditEvent, ConsoleSession, ConsoleTicket, LoginSession, Operation, utcnow

OLD, YOUNG = timedelta(days=400), timedelta(hours=1)


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def seed(app) -> dict:
    """Of each kind: one past its retention, one young, and those that must stay whatever
    their age (in use, or named by a kept row)."""
    now = utcnow()
    with app.app_context():
        def login(age, ended=True):
            row = LoginSession(token_hash=uuid.uuid4().hex * 2, user_id=1,
                               created_at=now - age, ended_at=now - age if ended else None)
            db.session.add(row)
            db.session.flush()
            return row.id

        old_login, young_login, named_login = login(OLD), login(YOUNG), login(OLD)
        live_login = login(YOUNG, ended=False)
        outlived_login = login(OLD, ended=False)  # never signed out, long past its lifetime
        db.session.add_all([
            AuditEvent(action="sign-in", result="ok", at=now - OLD),
            AuditEvent(action="sign-in", result="ok", at=now - YOUNG),
            ConsoleTicket(token_hash="a" * 64, user_id=1, vm_uuid="v", expires_at=now - OLD, used_at=now - OLD),
            ConsoleTicket(token_hash="b" * 64, user_id=1, vm_uuid="v", expires_at=now - OLD),  # expired unused
            ConsoleTicket(token_hash="c" * 64, user_id=1, vm_uuid="v", expires_at=now + YOUNG),
            ConsoleSession(user_id=1, vm_uuid="v", started_at=now - OLD, ended_at=now - OLD),
            ConsoleSession(user_id=1, vm_uuid="v", started_at=now - OLD, ended_at=None,  # still open
                           login_session_id=named_login),
            Operation(kind="start", vm_uuid="v", state="done", created_at=now - OLD, finished_at=now - OLD),
            Operation(kind="start", vm_uuid="v", state="failed", created_at=now - OLD, finished_at=now - YOUNG),
            Operation(kind="create", vm_uuid="v", state="running", created_at=now - OLD),
        ])
        db.session.commit()
    return {"live": live_login, "young": young_login, "named": named_login, "old": old_login,
            "outlived": outlived_login}


def test_what_is_past_its_retention_goes_and_what_is_in_use_stays(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", PRUNE_INTERVAL=3600)
    pruner = runtime.get(app).pruner
    wait_until(lambda: pruner.rounds == 1, 10, "the round at start (an empty database: nothing to do)")
    before = {m: count(app, m) for m in (AuditEvent, ConsoleTicket, ConsoleSession, Operation, LoginSession)}
    logins = seed(app)
    with app.app_context():
        done = pruner.prune()
    assert done == {"audit": 1, "console_tickets": 2, "console_sessions": 1, "operations": 1, "sign_ins": 2}
    assert {m: count(app, m) - before[m] for m in before} == {
        AuditEvent: 1, ConsoleTicket: 1, ConsoleSession: 1, Operation: 2, LoginSession: 3}
    with app.app_context():
        kept = set(db.session.scalars(select(LoginSession.id)))
    assert {logins["live"], logins["young"], logins["named"]} <= kept
    assert not {logins["old"], logins["outlived"]} & kept
    metrics = app.test_client().get("/metrics").text
    assert 'limen_pruned_rows_total{kind="console_tickets"} 2.0' in metrics
    assert 'limen_pruned_rows_total{kind="audit"} 1.0' in metrics
    with app.app_context():
        assert pruner.prune() == {}  # nothing left to do


def test_the_pruning_thread_runs_every_interval_and_none_keeps_for_good(make_app, node_xml):
    app = make_app(LIBVIRT_URI=f"test://{node_xml}", PRUNE_INTERVAL=0.2, RETAIN_OPERATIONS_DAYS=None)
    seed(app)
    pruner, seeded = runtime.get(app).pruner, runtime.get(app).pruner.rounds
    wait_until(lambda: pruner.rounds >= seeded + 2, 10, "two whole rounds after the seeding")
    assert count(app, ConsoleTicket) == 1 and count(app, ConsoleSession) == 1  # the old ones went
    assert count(app, Operation) == 3  # RETAIN_OPERATIONS_DAYS=None: every one kept
