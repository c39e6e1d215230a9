"""A console ticket and a console session are for the VM's screen or for its serial line

Revision ID: c5d7e9f1a3b6
Revises: b4c6d8e0f2a4
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'c5d7e9f1a3b6'
down_revision = 'b4c6d8e0f2a4'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('console_ticket', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), nullable=False, server_default='screen'))
    with op.batch_alter_table('console_session', schema=None) as batch_op:
        batch_op.add_column(sa.Column('kind', sa.String(length=8), nullable=False, server_default='screen'))


def downgrade():
    with op.batch_alter_table('console_session', schema=None) as batch_op:
        batch_op.drop_column('kind')
    with op.batch_alter_table('console_ticket', schema=None) as batch_op:
        batch_op.drop_column('kind')
