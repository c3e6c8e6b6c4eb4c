"""The caregiver view's pure pieces: the trend figure, the read-only alarm history, the landing page."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from dashboard.components import alarm_history_table, navbar
from dashboard.factory import _home
from dashboard.figures import trend_figure
from dashboard.queries import AlarmRow
from storage import AlarmPriority, AlarmState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _row(alarm_id: int, minutes: int, priority: str = "high", state: str = "active") -> AlarmRow:
    return AlarmRow(
        id=alarm_id,
        patient_id=1,
        patient_name="Ada",
        kind="vtach",
        priority=AlarmPriority(priority),
        state=AlarmState(state),
        started_at=T0 + timedelta(minutes=minutes),
        ended_at=None,
        detail="HR 180",
        acknowledged_by=None,
        acknowledged_at=None,
        note=None,
    )


class TestTrendFigure:
    def test_rows_only_for_series_with_values(self) -> None:
        times = [T0, T0 + timedelta(minutes=1)]
        fig = trend_figure(
            {
                "HR (bpm)": (times, [70.0, 72.0]),
                "SpO2 (%)": (times, [None, 97.0]),
                "Temp (°C)": (times, [None, None]),
            },
            x_range=(T0 - timedelta(hours=24), T0 + timedelta(minutes=1)),
        )
        assert [t.name for t in fig.data] == ["HR (bpm)", "SpO2 (%)"]
        assert list(fig.data[1].y) == [None, 97.0]
        assert fig.layout.xaxis.range[0] == T0 - timedelta(hours=24)

    def test_empty_says_so(self) -> None:
        fig = trend_figure({"HR (bpm)": ([], [])})
        assert len(fig.data) == 0
        assert "No vital signs" in fig.layout.annotations[0].text

    def test_mismatched_lengths_raise(self) -> None:
        with pytest.raises(ValueError, match="HR"):
            trend_figure({"HR (bpm)": ([T0], [])})


class TestAlarmHistoryTable:
    def test_newest_first_read_only_with_iec_marker_and_ack(self) -> None:
        acked = replace(
            _row(1, 0, "medium", "acknowledged"),
            acknowledged_by="clin",
            acknowledged_at=T0 + timedelta(minutes=2),
        )
        table = alarm_history_table([acked, _row(2, 5)], element_id="h")
        text = str(table)
        assert text.index("history-row-2") < text.index("history-row-1")
        assert "2026-01-01 12:02:00 by clin" in text
        assert "'***'" in text
        assert "'**'" in text
        assert "alarm-high" in text
        assert "alarm-medium" in text
        assert "Button" not in text
        assert "'type': 'ack'" not in text

    def test_empty(self) -> None:
        assert "No alarms in this period." in str(alarm_history_table([]))


class TestLanding:
    @pytest.mark.parametrize(
        ("role", "path"), [("caregiver", "/my-patients"), ("clinician", "/"), ("admin", "/")]
    )
    def test_home_by_role(self, role: str, path: str) -> None:
        assert _home(role) == path

    def test_nav_link_for_caregivers_only(self) -> None:
        def user(role: str) -> Any:
            return SimpleNamespace(role=role, display_name="X")

        assert "/my-patients" in str(navbar(user("caregiver")))
        assert "/my-patients" not in str(navbar(user("clinician")))
