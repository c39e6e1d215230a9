"""Console tickets and sessions remember the sign-in or API token they were opened under

Revision ID: f1a3c5e7b092
Revises: e9b1d3f5a068
Create Date: 2026-12-02

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = 'f1a3c5e7b092'
down_revision = 'e9b1d3f5a068'
branch_labels = None
depends_on = None


def upgrade():
    for table in ('console_ticket', 'console_session'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column('login_session_id', sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column('api_token_id', sa.Integer(), nullable=True))
            batch_op.create_foreign_key(f'fk_{table}_login_session_id_login_session', 'login_session',
                                        ['login_session_id'], ['id'])
            batch_op.create_foreign_key(f'fk_{table}_api_token_id_api_token', 'api_token',
                                        ['api_token_id'], ['id'])


def downgrade():
    for table in ('console_session', 'console_ticket'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f'fk_{table}_api_token_id_api_token', type_='foreignkey')
            batch_op.drop_constraint(f'fk_{table}_login_session_id_login_session', type_='foreignkey')
            batch_op.drop_column('api_token_id')
            batch_op.drop_column('login_session_id')
