"""A VM keeps what its guest last told: its first address, and its agent, hostname, OS and NICs

Revision ID: b4c6d8e0f2a4
Revises: a3b5c7d9e1f2
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b4c6d8e0f2a4'
down_revision = 'a3b5c7d9e1f2'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.add_column(sa.Column('address', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('guest', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.drop_column('guest')
        batch_op.drop_column('address')
