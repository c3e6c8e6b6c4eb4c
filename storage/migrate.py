"""Run the Alembic migrations programmatically; no ``alembic.ini`` is needed.

The migration scripts live in the package (``storage/migrations``), so the
installed application can upgrade its database with::

    from storage.migrate import upgrade
    upgrade("sqlite:///instance/cardiac-monitor.db")
"""

from __future__ import annotations

from collections.abc import Callable

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from storage.engine import create_engine

__all__ = ["alembic_config", "current_revision", "downgrade", "head_revision", "new_revision", "upgrade"]

_SCRIPT_LOCATION = "storage:migrations"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for the package's migrations.

    Parameters
    ----------
    connection : sqlalchemy.Connection, optional
        The connection that ``env.py`` migrates; needed to run commands, not
        to inspect the scripts.
    """
    config = Config()
    config.set_main_option("script_location", _SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(url: str | Engine, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` (default: the latest).

    Parameters
    ----------
    url : str or sqlalchemy.Engine
        The database; a URL gets an engine from :func:`storage.create_engine`,
        disposed afterwards.
    revision : str
        Target revision.
    """
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: str | Engine, revision: str) -> None:
    """Downgrade the database at ``url`` to ``revision`` (``"base"`` empties it)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: str | Engine) -> str | None:
    """The revision the database is at, or ``None`` for an unmigrated database."""
    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        if isinstance(url, str):
            engine.dispose()


def head_revision() -> str:
    """The newest revision among the package's migration scripts."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise RuntimeError("storage/migrations has no revisions")
    return head


def new_revision(url: str | Engine, message: str, *, autogenerate: bool = True) -> None:
    """Write a new revision script into ``storage/migrations/versions`` (for developers).

    With ``autogenerate``, Alembic compares the models with the database at
    ``url``, which must be at head (e.g. a scratch SQLite file after
    :func:`upgrade`). Review the script before committing it.
    """
    _run(url, lambda config: command.revision(config, message=message, autogenerate=autogenerate))


# Internals -------------------------------------------------------------------


def _run(url: str | Engine, action: Callable[[Config], object]) -> None:
    engine = create_engine(url) if isinstance(url, str) else url
    try:
        with engine.begin() as connection:
            action(alembic_config(connection))
    finally:
        if isinstance(url, str):
            engine.dispose()
