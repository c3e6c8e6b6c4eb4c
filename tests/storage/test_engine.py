"""URL resolution, connection settings and the Database handle."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from storage import Database, DatabaseNotInitialisedError, create_engine, resolve_database_url


class TestResolveDatabaseUrl:
    def test_basic(self, tmp_path: Path) -> None:
        env = {"DATABASE_URL": "postgresql://u@db/monitor"}
        assert resolve_database_url("sqlite:///x.db", environ=env) == "sqlite:///x.db"
        assert resolve_database_url(environ=env) == "postgresql+psycopg://u@db/monitor"
        url = resolve_database_url(environ={}, instance_path=tmp_path / "instance")
        assert url == f"sqlite:///{tmp_path / 'instance' / 'cardiac-monitor.db'}"
        assert (tmp_path / "instance").is_dir()

    def test_edge_cases(self, tmp_path: Path) -> None:
        assert resolve_database_url("postgres://u:p@h:5433/d") == "postgresql+psycopg://u:p@h:5433/d"
        assert resolve_database_url("postgresql+psycopg://h/d") == "postgresql+psycopg://h/d"
        # An empty DATABASE_URL counts as unset.
        url = resolve_database_url(environ={"DATABASE_URL": ""}, instance_path=tmp_path)
        assert url.startswith("sqlite:///")


class TestCreateEngine:
    def test_sqlite_pragmas(self, tmp_path: Path) -> None:
        engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
        try:
            with engine.connect() as conn:
                assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
                assert conn.execute(text("PRAGMA busy_timeout")).scalar() == 5000
        finally:
            engine.dispose()

    def test_sqlite_file_private(self, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
        """A new database file and its WAL files are the owner's alone; an open one is only warned about."""
        path = tmp_path / "new.db"
        engine = create_engine(f"sqlite:///{path}")
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE t (x INTEGER)"))
                conn.execute(text("INSERT INTO t VALUES (1)"))
                files = sorted(p.name for p in tmp_path.iterdir())
                modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
        finally:
            engine.dispose()
        assert files == ["new.db", "new.db-shm", "new.db-wal"]
        assert set(modes.values()) == {0o600}
        shared = tmp_path / "shared.db"
        shared.touch(mode=0o644)
        shared.chmod(0o644)
        with caplog.at_level("WARNING", logger="storage.engine"):
            create_engine(f"sqlite:///{shared}").dispose()
        assert "readable by others" in caplog.text
        assert shared.stat().st_mode & 0o777 == 0o644  # the operator's file: warned about, not changed
        create_engine("sqlite://").dispose()  # in memory: no file
        create_engine(
            f"sqlite:///{tmp_path / 'missing' / 'x.db'}"
        ).dispose()  # no folder: SQLite says so later
        assert not (tmp_path / "missing").exists()


class TestDatabase:
    def test_basic(self, tmp_path: Path) -> None:
        db = Database()
        db.init(f"sqlite:///{tmp_path / 'a.db'}")
        try:
            with db.session() as session:
                session.execute(text("CREATE TABLE t (x INTEGER)"))
                session.execute(text("INSERT INTO t VALUES (1)"))
            with pytest.raises(RuntimeError, match="boom"):
                _insert_then_fail(db)
            with db.session() as session:
                assert session.execute(text("SELECT x FROM t")).scalars().all() == [1]
            assert db.url.endswith("a.db")
        finally:
            db.dispose()

    def test_exceptions(self, tmp_path: Path) -> None:
        db = Database()
        assert not any(tmp_path.iterdir())  # nothing happens before init
        with pytest.raises(DatabaseNotInitialisedError, match=r"Database\.init"):
            _ = db.engine
        with pytest.raises(DatabaseNotInitialisedError, match=r"Database\.init"), db.session():
            pass


def _insert_then_fail(db: Database) -> None:
    with db.session() as session:
        session.execute(text("INSERT INTO t VALUES (2)"))
        raise RuntimeError("boom")
