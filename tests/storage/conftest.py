"""Database fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL is used when it answers at ``TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``); each test run
creates a throwaway database there and drops it at the end. When the server
does not answer, the PostgreSQL variants skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from storage import (
    Base,
    Patient,
    RecordingSession,
    create_device,
    create_engine,
    open_recording,
    session_factory,
    upgrade,
)

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BACKENDS = ["sqlite", "postgresql"]


def _postgres_admin_url() -> str:
    return os.environ.get("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def _libpq_kwargs(url: str) -> dict[str, object]:
    """psycopg connection arguments for a SQLAlchemy URL."""
    parsed = make_url(url)
    kwargs: dict[str, object] = {
        "host": parsed.host or "127.0.0.1",
        "port": parsed.port or 5432,
        "dbname": parsed.database or "postgres",
        "user": parsed.username or "postgres",
        "connect_timeout": 3,
        "autocommit": True,
    }
    if parsed.password:
        kwargs["password"] = parsed.password
    return kwargs


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """Admin URL of a reachable PostgreSQL server (skips, or fails on CI)."""
    url = _postgres_admin_url()
    try:
        with psycopg.connect(**_libpq_kwargs(url)):
            pass
    except psycopg.OperationalError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have PostgreSQL at {url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {url}: {exc}")
    return url


@pytest.fixture(scope="session")
def postgres_database(postgres_server: str) -> Iterator[str]:
    """URL of an empty throwaway database, dropped after the test run."""
    name = f"cm_test_{uuid.uuid4().hex[:12]}"
    admin = _libpq_kwargs(postgres_server)
    with psycopg.connect(**admin) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(**admin) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """URL of a database migrated to head: a SQLite template file, or PostgreSQL."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("postgres_database")
    upgrade(url)
    return url


@pytest.fixture
def engine(migrated_url: str, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a migrated, empty database of its own for this test."""
    is_sqlite = migrated_url.startswith("sqlite")
    url = migrated_url
    if is_sqlite:
        url = f"sqlite:///{tmp_path / 'test.db'}"
        shutil.copyfile(make_url(migrated_url).database or "", tmp_path / "test.db")
    eng = create_engine(url)
    try:
        yield eng
    finally:
        eng.dispose()
        if not is_sqlite:
            _truncate_all(migrated_url)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session in a transaction, committed at the end of the test."""
    with session_factory(engine)() as sess, sess.begin():
        yield sess


def _truncate_all(url: str) -> None:
    """Empty every table (TRUNCATE bypasses the audit log's row triggers)."""
    names = [table.name for table in Base.metadata.sorted_tables]
    statement = sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(
        sql.SQL(", ").join(sql.Identifier(n) for n in names)
    )
    with psycopg.connect(**_libpq_kwargs(url)) as conn:
        conn.execute(statement)


T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def t0() -> datetime:
    """Start time of the ``recording`` fixture."""
    return T0


@pytest.fixture
def recording(session: Session) -> RecordingSession:
    """A patient, their device and a two-lead 250 Hz recording session from ``T0``."""
    patient = Patient(name="Test Patient", mrn="MRN-1")
    session.add(patient)
    session.flush()
    device = create_device(session, "ecg-1", "secret-token", patient_id=patient.id)
    rec, _ = open_recording(
        session,
        device,
        stream_id="boot-1",
        fs=250.0,
        lead_names=["MLII", "V5"],
        gain=200.0,
        baseline=0,
        started_at=T0,
        firmware="1.0.0",
    )
    return rec
