"""api_keys belong to a user id (or to root), not to a name; user and key ids are never reused

Revision ID: 0003
Revises: 0002

A key used to name its user by ``username``: deleting the user left the key active, and the next user
created with that name (or renamed to it) inherited it. Now ``user_id`` references users.id with ON DELETE
CASCADE, and ``root`` marks root's keys, so a missing user never reads as root. Existing rows: ``username``
NULL -> root; a name that matches a user -> that user's id; a name that matches nobody -> no owner and
revoked (such a key logs in as nobody even if un-revoked). AUTOINCREMENT on both tables keeps a deleted
user's or key's id from being handed to a new one (login tokens name them by id).

On PostgreSQL the tables are altered in place (their SERIAL sequences never hand out an id twice); a copy of
the table, as SQLite needs, would drop the id sequence with the old table. Written for both in issue 13; on
SQLite it does exactly what it did before.
"""

from typing import Literal

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_AUTOINCREMENT = {'sqlite_autoincrement': True}


def _recreate() -> Literal['always', 'auto']:
    return 'always' if op.get_bind().dialect.name == 'sqlite' else 'auto'


def upgrade() -> None:
    # users first, while nothing references it: with foreign keys on, dropping the old copy of a referenced
    # table would cascade.
    with op.batch_alter_table('users', recreate=_recreate(), table_kwargs=_AUTOINCREMENT):
        pass
    with op.batch_alter_table('api_keys', recreate=_recreate(), table_kwargs=_AUTOINCREMENT) as batch_op:
        batch_op.add_column(sa.Column('root', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('user_id', sa.Integer(), nullable=True))
    op.execute("UPDATE api_keys SET root = (username IS NULL)")
    op.execute("UPDATE api_keys SET user_id = (SELECT users.id FROM users WHERE users.username = api_keys.username) "
               "WHERE username IS NOT NULL")
    op.execute("UPDATE api_keys SET revoked = TRUE WHERE NOT root AND user_id IS NULL")
    with op.batch_alter_table('api_keys', recreate=_recreate(), table_kwargs=_AUTOINCREMENT) as batch_op:
        batch_op.drop_column('username')
        batch_op.create_index(batch_op.f('ix_api_keys_user_id'), ['user_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_api_keys_user_id_users'), 'users', ['user_id'], ['id'],
                                    ondelete='CASCADE')
        batch_op.create_check_constraint(op.f('ck_api_keys_one_owner'), 'NOT (root AND user_id IS NOT NULL)')


def downgrade() -> None:
    with op.batch_alter_table('api_keys', recreate=_recreate()) as batch_op:
        batch_op.add_column(sa.Column('username', sa.String(length=64), nullable=True))
    op.execute("UPDATE api_keys SET username = (SELECT users.username FROM users WHERE users.id = api_keys.user_id)")
    # A key without an owner must not turn into root's key (username NULL) on the way down.
    op.execute("DELETE FROM api_keys WHERE NOT root AND username IS NULL")
    with op.batch_alter_table('api_keys', recreate=_recreate()) as batch_op:
        batch_op.drop_constraint(op.f('ck_api_keys_one_owner'), type_='check')
        batch_op.drop_constraint(op.f('fk_api_keys_user_id_users'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_api_keys_user_id'))
        batch_op.drop_column('user_id')
        batch_op.drop_column('root')
    with op.batch_alter_table('users', recreate=_recreate()):
        pass
