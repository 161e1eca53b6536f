"""audit_log: the tamper-evident audit trail (one row per recorded call, chained by a keyed hash)

Revision ID: 0004
Revises: 0003

Ids are assigned by the daemon (the chain's order), never by SQLite: a rolled-back batch must not leave a
gap that would read as a deleted record.
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('audit_id', sa.String(length=36), nullable=False),
    sa.Column('message_timestamp', sa.BigInteger(), nullable=False),
    sa.Column('timestamp', sa.String(length=32), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('session', sa.String(length=64), nullable=False),
    sa.Column('address', sa.String(length=128), nullable=False),
    sa.Column('service', sa.String(length=16), nullable=False),
    sa.Column('event', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=128), nullable=False),
    sa.Column('success', sa.Boolean(), nullable=False),
    sa.Column('errno', sa.Integer(), nullable=True),
    sa.Column('params', sa.Text(), nullable=False),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    with op.batch_alter_table('audit_log') as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_message_timestamp'), ['message_timestamp'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_method'), ['method'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_username'), ['username'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log') as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_username'))
        batch_op.drop_index(batch_op.f('ix_audit_log_method'))
        batch_op.drop_index(batch_op.f('ix_audit_log_message_timestamp'))
    op.drop_table('audit_log')
    op.execute("DELETE FROM store_meta WHERE name IN ('audit_anchor', 'audit_key_id')")
