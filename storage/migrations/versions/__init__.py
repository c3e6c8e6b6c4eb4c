"""Alembic revision scripts, oldest first by ``down_revision``."""

__all__: list[str] = []
