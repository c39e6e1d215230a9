"""A VM row carries its own version, bumped by the database whenever the row or one of its
Operations changes, so that the table's poll sends only the rows that changed

Triggers, not the ORM, bump it: the state sync and the guest watch write with plain UPDATE
statements, and a trigger sees every write. The version is the time in microseconds (SQLite's clock
has milliseconds), or one more than the largest version when the clock has not moved on: it
grows in the order the writes commit (SQLite lets one writer in at a time), and the numbers tell
little of what else changed (at most how many rows were written within the same millisecond).

A later migration that rebuilds the ``vm`` table (Alembic's batch mode on SQLite) drops these
triggers and must create them again (tests/test_vms.py checks that a change bumps the version).

Revision ID: f8a0b2c4d6e9
Revises: e7f9a1b3c5d8
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f8a0b2c4d6e9'
down_revision = 'e7f9a1b3c5d8'
branch_labels = None
depends_on = None

NEXT = ("max(CAST((julianday('now') - 2440587.5) * 86400000000.0 AS INTEGER), "
        "coalesce((SELECT max(row_version) FROM vm), 0) + 1)")
TRIGGERS = {
    "vm_version_insert": f"AFTER INSERT ON vm BEGIN UPDATE vm SET row_version = {NEXT} WHERE id = NEW.id; END",
    "vm_version_update": ("AFTER UPDATE ON vm WHEN NEW.row_version = OLD.row_version "
                          f"BEGIN UPDATE vm SET row_version = {NEXT} WHERE id = NEW.id; END"),
    "vm_version_op_insert": (f"AFTER INSERT ON operation "
                             f"BEGIN UPDATE vm SET row_version = {NEXT} WHERE uuid = NEW.vm_uuid; END"),
    "vm_version_op_update": (f"AFTER UPDATE ON operation "
                             f"BEGIN UPDATE vm SET row_version = {NEXT} WHERE uuid = NEW.vm_uuid; END"),
}


def upgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.add_column(sa.Column('row_version', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.create_index(batch_op.f('ix_vm_row_version'), ['row_version'], unique=False)
    for name, body in TRIGGERS.items():
        op.execute(f"CREATE TRIGGER {name} {body}")
    op.execute(f"UPDATE vm SET row_version = {NEXT}")


def downgrade():
    for name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_vm_row_version'))
        batch_op.drop_column('row_version')
