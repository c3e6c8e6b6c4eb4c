"""Alembic environment: runs migrations on a connection :mod:`storage.migrate` gives.

Online mode only; the connection comes from ``config.attributes["connection"]``
so that the project's engine settings (SQLite pragmas, psycopg driver) apply.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from storage.models import Base


def run_migrations(connection: Connection) -> None:
    """Run the pending migrations in one transaction on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run migrations through storage.migrate, which passes a connection")
    if context.is_offline_mode():
        raise RuntimeError("offline (SQL script) migrations are not supported")
    run_migrations(connection)


_main()
