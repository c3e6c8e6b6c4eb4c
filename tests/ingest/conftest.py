"""Fixtures of the ingest tests: migrated databases, a live-token secret, Redis, servers and scenarios.

SQLite databases are copies of one migrated template file. PostgreSQL ones
are throwaway schemas of the ``TEST_POSTGRES_URL`` database (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), selected through
the connection's ``search_path``: creating a schema is much cheaper than
creating a database. When PostgreSQL or Redis do not answer, the tests that
need them skip, or fail when ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import redis
from psycopg import sql
from sqlalchemy.engine import make_url

from ingest.server import IngestServer
from storage import Database, upgrade

POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")

#: Secret the tests sign ``/live`` tokens with.
LIVE_SECRET = "test-live-secret-0123456789abcdef"

#: How long a scenario of :func:`run` may take, unless its test module sets ``TIMEOUT_S``.
TIMEOUT_S = 30.0


def _unavailable(what: str, error: Exception) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must provide {what}: {error}")
    pytest.skip(f"{what} is not reachable: {error}")


def _connect_admin() -> psycopg.Connection[tuple[object, ...]]:
    url = make_url(POSTGRES_URL)
    return psycopg.connect(
        host=url.host or "127.0.0.1",
        port=url.port or 5432,
        dbname=url.database or "postgres",
        user=url.username or "postgres",
        password=url.password,
        connect_timeout=3,
        autocommit=True,
    )


@pytest.fixture(scope="session")
def live_secret() -> str:
    """The secret shared by the test servers and the tokens the tests issue."""
    return LIVE_SECRET


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head, copied by every test that needs a database."""
    path = tmp_path_factory.mktemp("ingest-template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """A migrated, empty SQLite database of this test."""
    path = tmp_path / "ingest.db"
    shutil.copyfile(sqlite_template, path)
    db = Database()
    db.init(f"sqlite:///{path}")
    yield db
    db.dispose()


@pytest.fixture
def postgres_db() -> Iterator[Database]:
    """A migrated, empty PostgreSQL schema of this test, dropped afterwards."""
    schema = f"cm_ingest_{uuid.uuid4().hex[:12]}"
    try:
        with _connect_admin() as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    except psycopg.OperationalError as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_URL}", exc)
    url = f"{POSTGRES_URL}?options={quote(f'-csearch_path={schema}')}"
    db = Database()
    try:
        db.init(url)
        upgrade(db.engine)
        yield db
    finally:
        db.dispose()
        with _connect_admin() as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=["sqlite", "postgres"])
def any_db(request: pytest.FixtureRequest) -> Database:
    """The test runs once on SQLite and once on PostgreSQL."""
    db = request.getfixturevalue(f"{request.param}_db")
    assert isinstance(db, Database)
    return db


@pytest.fixture(scope="session")
def redis_url() -> str:
    """URL of a reachable Redis (database 15, so that nothing else is disturbed)."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as exc:
        _unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.fixture
def run(request: pytest.FixtureRequest) -> Callable[[Awaitable[Any]], Any]:
    """``run(coro) -> result``: run a test scenario, failing it after ``TIMEOUT_S`` seconds.

    The bound is the test module's ``TIMEOUT_S`` where it sets one, else this module's.
    """
    timeout_s = float(getattr(request.module, "TIMEOUT_S", TIMEOUT_S))

    def run_bounded(coro: Awaitable[Any]) -> Any:
        async def bounded() -> Any:
            async with asyncio.timeout(timeout_s):
                return await coro

        return asyncio.run(bounded())

    return run_bounded


@pytest.fixture
def running() -> Callable[..., contextlib.AbstractAsyncContextManager[IngestServer]]:
    """``async with running(db, **options) as server``: a started server on port 0, stopped gracefully after.

    ``options`` go to :class:`ingest.server.IngestServer`; ``/live`` tokens are signed with
    :data:`LIVE_SECRET`.
    """

    @contextlib.asynccontextmanager
    async def started(db: Database, **options: Any) -> AsyncIterator[IngestServer]:
        server = IngestServer(db, live_secret=LIVE_SECRET, **options)
        await server.start()
        try:
            yield server
        finally:
            await server.stop()

    return started


async def _until_disconnected(ws: Any) -> list[dict[str, Any]]:
    """Live messages up to the one that says the device disconnected."""
    messages = []
    async for text in ws:
        messages.append(json.loads(text))
        if messages[-1]["type"] == "stream" and messages[-1]["state"] == "disconnected":
            return messages
    raise AssertionError("the live connection closed early")


@pytest.fixture
def until_disconnected() -> Callable[[Any], Awaitable[list[dict[str, Any]]]]:
    """``await until_disconnected(ws)``: the ``/live`` messages up to the device's disconnection."""
    return _until_disconnected
