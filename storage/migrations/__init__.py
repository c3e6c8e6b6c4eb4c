"""Alembic migrations of the monitor's database (run by :mod:`storage.migrate`)."""

__all__: list[str] = []
