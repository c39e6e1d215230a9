"""A VM keeps what its NIC is attached to, and its user-mode port forwards

Revision ID: a3b5c7d9e1f2
Revises: f1a3c5e7b092
Create Date: 2026-12-06

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a3b5c7d9e1f2'
down_revision = 'f1a3c5e7b092'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.add_column(sa.Column('network', sa.String(length=80), nullable=True))
    op.create_table(
        'forward',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('vm_id', sa.Integer(), nullable=False),
        sa.Column('protocol', sa.String(length=3), nullable=False),
        sa.Column('host_address', sa.String(length=64), nullable=False),
        sa.Column('host_port', sa.Integer(), nullable=False),
        sa.Column('guest_port', sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(['vm_id'], ['vm.id'], name='fk_forward_vm_id_vm', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name='pk_forward'),
        sa.UniqueConstraint('host_port', name='uq_forward_host_port'),
        sa.UniqueConstraint('vm_id', 'protocol', 'guest_port', name='uq_forward_vm_id_protocol_guest_port'),
    )
    with op.batch_alter_table('forward', schema=None) as batch_op:
        batch_op.create_index('ix_forward_vm_id', ['vm_id'], unique=False)


def downgrade():
    with op.batch_alter_table('forward', schema=None) as batch_op:
        batch_op.drop_index('ix_forward_vm_id')
    op.drop_table('forward')
    with op.batch_alter_table('vm', schema=None) as batch_op:
        batch_op.drop_column('network')
