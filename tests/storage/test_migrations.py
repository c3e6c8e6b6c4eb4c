"""Migrations: empty to head gives exactly the models' schema, on each backend."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError

from storage import Base, current_revision, downgrade, head_revision, upgrade


class TestUpgrade:
    def test_basic(self, engine: Engine) -> None:
        assert current_revision(engine) == head_revision()
        tables = set(inspect(engine).get_table_names())
        assert tables == set(Base.metadata.tables) | {"alembic_version"}

    def test_schema_matches_models(self, engine: Engine) -> None:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, Base.metadata)
        assert diff == []

    def test_edge_cases(self, engine: Engine) -> None:
        upgrade(engine)  # already at head: nothing to do
        downgrade(engine, "base")
        assert current_revision(engine) is None
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        upgrade(engine)
        assert current_revision(engine) == head_revision()

    def test_audit_log_is_append_only_in_the_database(self, engine: Engine) -> None:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO audit_log (at, actor, action, details) VALUES (:at, 'system', 'test', '{}')"
                ),
                {"at": "2026-01-01 00:00:00"},
            )
        for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT actor FROM audit_log")).scalars().all() == ["system"]


class TestWards:
    """0001 -> 0002 adds ``ward`` columns; existing rows survive both ways."""

    def test_upgrade_keeps_rows(self, engine: Engine) -> None:
        downgrade(engine, "0001")
        assert "ward" not in {c["name"] for c in inspect(engine).get_columns("patients")}
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO patients (name, alarm_limits, created_at) "
                    "VALUES ('Ada', '{}', '2026-01-01 00:00:00')"
                )
            )
            patient_id = conn.execute(text("SELECT id FROM patients")).scalar_one()
            conn.execute(
                text(
                    "INSERT INTO alarms (patient_id, kind, priority, state, started_at, detail) "
                    "VALUES (:p, 'vtach', 'high', 'active', '2026-01-01 00:00:00', '')"
                ),
                {"p": patient_id},
            )
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name, ward FROM patients")).all() == [("Ada", None)]
            assert conn.execute(text("SELECT count(*) FROM alarms")).scalar_one() == 1
        with engine.begin() as conn:
            conn.execute(text("UPDATE patients SET ward = 'ICU'"))
        downgrade(engine, "0001")  # and back: the rows (not the wards) stay
        with engine.connect() as conn:
            assert conn.execute(text("SELECT name FROM patients")).scalars().all() == ["Ada"]
            assert conn.execute(text("SELECT count(*) FROM alarms")).scalar_one() == 1
        upgrade(engine)
