"""Alembic's environment: always run by the store with the connection it opened (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from bench.results.schema import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata)
with context.begin_transaction():
    context.run_migrations()
