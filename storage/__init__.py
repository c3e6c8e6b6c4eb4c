"""Persistence with SQLAlchemy: models, engine and sessions, queries, migrations."""

__all__: list[str] = []
