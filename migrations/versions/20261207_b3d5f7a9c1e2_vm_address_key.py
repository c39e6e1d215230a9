"""The table sorts addresses by number: each VM row keeps its address's sort key beside it
(limen.models.address_key), written with the address by the guest watch.

A plain ADD COLUMN: the ``vm`` table is not rebuilt, so the triggers that bump its rows'
versions (migration f8a0b2c4d6e9) stay. The key is made here for the addresses already kept, as
address_key makes it now.

Revision ID: b3d5f7a9c1e2
Revises: a9c1e3f5b7d0
Create Date: 2026-12-07

"""
import ipaddress

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'b3d5f7a9c1e2'
down_revision = 'a9c1e3f5b7d0'
branch_labels = None
depends_on = None


def _key(address):
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return f"9{address}"[:40]
    return f"{ip.version}{int(ip):0{8 if ip.version == 4 else 32}x}"


def upgrade():
    op.add_column('vm', sa.Column('address_key', sa.String(length=40), nullable=True))
    bind = op.get_bind()
    for vm_id, address in bind.execute(sa.text("SELECT id, address FROM vm WHERE address IS NOT NULL")).all():
        bind.execute(sa.text("UPDATE vm SET address_key = :key WHERE id = :id"), {"key": _key(address), "id": vm_id})


def downgrade():
    op.drop_column('vm', 'address_key')  # SQLite 3.35 drops a column without a rebuild
