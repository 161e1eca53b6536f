"""audit_log: drop the username and method indexes (every audited call paid for them; few reads use them)

Revision ID: 0005
Revises: 0004

Every recorded call inserts a row into audit_log, in its write's transaction; each index on the table adds a
B-tree insert and its pages to that transaction's commit. The username and method indexes cost a create
about 2.3 µs of the database thread's CPU per record under group commit (a third of what the audit's row
cost in SQLite, bench/audit_cost.py), while only audit.query filters on those columns read them, and those
scan the table instead: about 40 ms over 300,000 records on this machine. message_timestamp keeps its index
(retention trims by it, and time ranges and the newest-first order use it).
"""

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_audit_log_username', table_name='audit_log')
    op.drop_index('ix_audit_log_method', table_name='audit_log')


def downgrade() -> None:
    op.create_index('ix_audit_log_method', 'audit_log', ['method'], unique=False)
    op.create_index('ix_audit_log_username', 'audit_log', ['username'], unique=False)
