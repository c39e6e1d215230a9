"""A VM has a free-text description, and vCPUs and memory that wait for its next start

Revision ID: e7f9a1b3c5d8
Revises: d6e8f0a2b4c7
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'e7f9a1b3c5d8'
down_revision = 'd6e8f0a2b4c7'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.add_column(sa.Column('description', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('pending_vcpus', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('pending_memory_mib', sa.Integer(), nullable=True))


def downgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.drop_column('pending_memory_mib')
        batch_op.drop_column('pending_vcpus')
        batch_op.drop_column('description')
