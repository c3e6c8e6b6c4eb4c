"""Shared fixtures: where the reference data lives, and synthetic ECG."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sigproc.records import DataNotFoundError, resolve_database_dir


def _database_dir(database: str) -> Path:
    try:
        return resolve_database_dir(database)
    except DataNotFoundError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must have the reference data: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def mitdb_dir() -> Path:
    """Folder of the MIT-BIH Arrhythmia Database (skips when absent, fails on CI)."""
    return _database_dir("mitdb")


@pytest.fixture(scope="session")
def nstdb_dir() -> Path:
    """Folder of the MIT-BIH Noise Stress Test Database."""
    return _database_dir("nstdb")


@pytest.fixture(scope="session")
def data_dir(mitdb_dir: Path) -> Path:
    """The folder that holds ``mitdb/`` (and ``nstdb/``)."""
    return mitdb_dir.parent
