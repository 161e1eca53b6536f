"""Alembic environment: runs on the connection the daemon hands over (see store.db.migrate)."""

from alembic import context

from middlewared_cc.store.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - we always pass a connection
    raise RuntimeError("middlewared-cc runs migrations on its own connection")
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
