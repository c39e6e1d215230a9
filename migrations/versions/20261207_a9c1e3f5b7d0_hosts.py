"""Hosts: LIMEN manages the VMs of several libvirt hosts. The host LIMEN runs beside (its
configured LIBVIRT_URI) is the first, and every VM and unmanaged domain already known is its.

Rebuilding the ``vm`` table (Alembic's batch mode on SQLite) would lose the triggers that bump
its rows' versions (migration f8a0b2c4d6e9): they are read before and created again after.

Revision ID: a9c1e3f5b7d0
Revises: f8a0b2c4d6e9
Create Date: 2026-12-07

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'a9c1e3f5b7d0'
down_revision = 'f8a0b2c4d6e9'
branch_labels = None
depends_on = None


def _rebuilding_vm(change):
    """Run ``change`` (which rebuilds the vm table) without the triggers, then create them again:
    SQLite drops those on vm with it, and will not rename a table while the triggers on
    operation name a vm table that is not there."""
    triggers = op.get_bind().execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
    for name, _sql in triggers:
        op.execute(f"DROP TRIGGER {name}")
    change()
    for _name, sql in triggers:
        op.execute(sql)


def upgrade():
    host = op.create_table(
        'host',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=63), nullable=False),
        sa.Column('uri', sa.String(length=255), nullable=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('host_key', sa.String(length=1024), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('uri'),
    )
    op.execute(host.insert().values(id=1, name='local', uri=None, enabled=True, host_key=None,
                                    created_at=sa.func.current_timestamp()))

    def add_host_id():
        for table in ('vm', 'unmanaged_domain'):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.add_column(sa.Column('host_id', sa.Integer(), server_default='1', nullable=False))
                batch_op.create_index(batch_op.f(f'ix_{table}_host_id'), ['host_id'], unique=False)
                batch_op.create_foreign_key(batch_op.f(f'fk_{table}_host_id_host'), 'host', ['host_id'], ['id'])

    _rebuilding_vm(add_host_id)


def downgrade():
    def drop_host_id():
        for table in ('unmanaged_domain', 'vm'):
            with op.batch_alter_table(table, schema=None) as batch_op:
                batch_op.drop_constraint(batch_op.f(f'fk_{table}_host_id_host'), type_='foreignkey')
                batch_op.drop_index(batch_op.f(f'ix_{table}_host_id'))
                batch_op.drop_column('host_id')

    _rebuilding_vm(drop_host_id)
    op.drop_table('host')
