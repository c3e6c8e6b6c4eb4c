"""Dashboard reads: what a central-station tile says about the signal."""

from __future__ import annotations

from typing import Any

from dashboard.queries import SIGNAL_PROBLEMS, patient_tiles
from storage import Alarm, AlarmPriority, AlarmState, Database, utcnow


def _signals(db: Database, seeded: Any) -> dict[int, str | None]:
    with db.session() as session:
        return {t.patient_id: t.signal for t in patient_tiles(session, seeded.admin, "admin")}


def _raise(db: Database, patient_id: int, kind: str, state: AlarmState = AlarmState.ACTIVE) -> None:
    with db.session() as session:
        session.add(
            Alarm(
                patient_id=patient_id,
                kind=kind,
                priority=AlarmPriority.MEDIUM,
                state=state,
                started_at=utcnow(),
            )
        )


class TestTileSignal:
    def test_basic(self, db: Database, seeded: Any) -> None:
        signals = _signals(db, seeded)
        assert signals[seeded.ada] == "good"  # data and no technical alarm
        assert signals[seeded.bob] is None  # no data yet: unknown
        _raise(db, seeded.ada, "lead_off")
        assert _signals(db, seeded)[seeded.ada] == SIGNAL_PROBLEMS["lead_off"]

    def test_edge_cases(self, db: Database, seeded: Any) -> None:
        _raise(db, seeded.ada, "poor_signal", AlarmState.ACKNOWLEDGED)  # acknowledged but still open
        _raise(db, seeded.ada, "flat_line")
        _raise(db, seeded.ada, "tachycardia")  # not a signal problem
        assert _signals(db, seeded)[seeded.ada] == "flat line, poor"
        _raise(db, seeded.bob, "lead_off", AlarmState.RESOLVED)  # over: says nothing now
        assert _signals(db, seeded)[seeded.bob] is None
