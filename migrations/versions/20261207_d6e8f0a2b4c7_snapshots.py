"""VMs count their snapshots and what they take; an Operation keeps what it was asked with

Revision ID: d6e8f0a2b4c7
Revises: c5d7e9f1a3b6
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'd6e8f0a2b4c7'
down_revision = 'c5d7e9f1a3b6'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.add_column(sa.Column('snapshots', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('snapshot_mib', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('operation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('params', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('operation', schema=None) as batch_op:
        batch_op.drop_column('params')
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.drop_column('snapshot_mib')
        batch_op.drop_column('snapshots')
