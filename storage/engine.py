"""Database URL resolution, engines and sessions.

Nothing happens at import time: a :class:`Database` is created empty and
configured by :meth:`Database.init` (the ``init_app`` pattern), so the
application factory and the tests choose the URL.

The URL is chosen in this order: an explicit URL, the ``DATABASE_URL``
environment variable, then a SQLite file ``cardiac-monitor.db`` in the
instance folder. SQLite connections run in WAL mode with foreign keys on;
``postgres://`` and ``postgresql://`` URLs use the psycopg 3 driver.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Engine, event
from sqlalchemy import create_engine as _sa_create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from storage.crypto import SESSION_INFO_KEY, DataCipher, load_cipher

__all__ = [
    "DEFAULT_SQLITE_NAME",
    "Database",
    "DatabaseNotInitialisedError",
    "create_engine",
    "resolve_database_url",
    "session_factory",
]

_log = logging.getLogger(__name__)

#: File name of the embedded database inside the instance folder.
DEFAULT_SQLITE_NAME = "cardiac-monitor.db"


class DatabaseNotInitialisedError(RuntimeError):
    """A :class:`Database` was used before :meth:`Database.init`."""


def resolve_database_url(
    url: str | None = None,
    *,
    instance_path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Choose the database URL: explicit, then ``DATABASE_URL``, then SQLite.

    Parameters
    ----------
    url : str, optional
        An explicit SQLAlchemy URL; wins when given.
    instance_path : str or Path, optional
        Folder of the embedded SQLite file (default: ``./instance``). It is
        created when the SQLite default is chosen.
    environ : mapping, optional
        Environment to read ``DATABASE_URL`` from (default: ``os.environ``).

    Returns
    -------
    str
        A URL with an explicit driver for PostgreSQL (``postgresql+psycopg``).

    Examples
    --------
    >>> resolve_database_url("postgres://u@db/monitor")
    'postgresql+psycopg://u@db/monitor'
    """
    env = os.environ if environ is None else environ
    chosen = url or env.get("DATABASE_URL") or None
    if chosen is None:
        folder = Path(instance_path) if instance_path is not None else Path.cwd() / "instance"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(folder / DEFAULT_SQLITE_NAME).resolve()}"
    for prefix in ("postgres://", "postgresql://"):
        if chosen.startswith(prefix):
            return "postgresql+psycopg://" + chosen[len(prefix) :]
    return chosen


def create_engine(url: str, **kwargs: Any) -> Engine:
    """Create an engine with the project's connection settings.

    SQLite: WAL journal, ``foreign_keys=ON``, a busy timeout and
    ``synchronous=NORMAL`` on every connection. PostgreSQL: pre-ping pooled
    connections so a restarted server does not fail the first query.

    Parameters
    ----------
    url : str
        SQLAlchemy URL, e.g. from :func:`resolve_database_url`.
    **kwargs
        Passed to :func:`sqlalchemy.create_engine`.
    """
    backend = make_url(url).get_backend_name()
    if backend == "sqlite":
        _private_sqlite_file(url)
        engine = _sa_create_engine(url, **kwargs)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return _sa_create_engine(url, **kwargs)


def _private_sqlite_file(url: str) -> None:
    """Create a new SQLite file readable by its owner alone (it holds patient data).

    SQLite gives its ``-wal`` and ``-shm`` files the database file's mode.
    An existing file keeps its mode, with a warning when others can read it;
    in-memory and ``file:`` URI databases are left alone.
    """
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = Path(database)
    if not path.parent.is_dir():
        return  # SQLite reports the missing folder when it connects
    try:  # an empty file is an empty database
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            _log.warning("database file %s is readable by others than its owner; chmod 600 it", path)


def session_factory(engine: Engine, *, cipher: DataCipher | None = None) -> sessionmaker[Session]:
    """A session factory bound to ``engine``; objects stay readable after commit.

    ``cipher`` travels in each session's ``info`` (see
    :func:`storage.crypto.session_cipher`): signal chunks and alarm notes
    are encrypted under it; ``None`` stores them in clear.
    """
    info = {SESSION_INFO_KEY: cipher} if cipher is not None else None
    return sessionmaker(bind=engine, expire_on_commit=False, info=info)


class Database:
    """The application's database handle, configured after construction.

    Examples
    --------
    >>> db = Database()
    >>> db.init("sqlite://")
    >>> with db.session() as session:
    ...     session.connection().exec_driver_sql("select 1").scalar()
    1
    >>> db.dispose()
    """

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._sessions: sessionmaker[Session] | None = None
        self._cipher: DataCipher | None = None

    def init(
        self,
        url: str | None = None,
        *,
        instance_path: str | Path | None = None,
        cipher: DataCipher | Literal["auto"] | None = "auto",
        **engine_kwargs: Any,
    ) -> None:
        """Resolve the URL (see :func:`resolve_database_url`), choose the data key, create the engine.

        ``cipher="auto"`` loads the data key with
        :func:`storage.crypto.load_cipher`: ``CARDIAC_DATA_KEY`` from the
        environment, else the ``data_key`` file beside a SQLite database,
        which the embedded default (no URL, no ``DATABASE_URL``) creates.
        ``None`` stores signal chunks and notes in clear.
        """
        self.dispose()
        resolved = resolve_database_url(url, instance_path=instance_path)
        if cipher == "auto":
            embedded = not (url or os.environ.get("DATABASE_URL"))
            cipher = load_cipher(resolved, create_key_file=embedded)
        self._engine = create_engine(resolved, **engine_kwargs)
        self._sessions = session_factory(self._engine, cipher=cipher)
        self._cipher = cipher

    @property
    def engine(self) -> Engine:
        """The engine; raises :class:`DatabaseNotInitialisedError` before ``init``."""
        if self._engine is None:
            raise DatabaseNotInitialisedError("call Database.init() before using the database")
        return self._engine

    @property
    def cipher(self) -> DataCipher | None:
        """The data cipher of this database's sessions; ``None``: data is stored in clear."""
        return self._cipher

    @property
    def url(self) -> str:
        """The database URL with any password hidden."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        if self._sessions is None:
            raise DatabaseNotInitialisedError("call Database.init() before using the database")
        with self._sessions() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close every pooled connection; the handle can be initialised again."""
        if self._engine is not None:
            self._engine.dispose()
        self._engine = None
        self._sessions = None
        self._cipher = None


# Internals -------------------------------------------------------------------


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    """Per-connection SQLite settings (pragmas do not persist, except WAL)."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=5000")  # milliseconds
    finally:
        cursor.close()
