"""Pure figure and formatting functions, and components built from plain values."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from dashboard.components import alarm_badge, alarm_table, patient_tile
from dashboard.figures import (
    BEAT_CLASSES,
    MISSING,
    alarm_style,
    alarms_csv,
    beat_hover,
    beat_summary,
    beats_csv,
    ecg_paper_figure,
    format_age,
    format_value,
    history_figure,
    is_stale,
    min_max_envelope,
    strip_figure,
)
from dashboard.queries import AlarmRow, PatientTile
from storage import AlarmPriority, AlarmState

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def _alarm(priority: str = "high", state: str = "active") -> AlarmRow:
    return AlarmRow(
        id=7,
        patient_id=1,
        patient_name="Ada",
        kind="vtach",
        priority=AlarmPriority(priority),
        state=AlarmState(state),
        started_at=T0,
        ended_at=None,
        detail="HR 180",
        acknowledged_by=None,
        acknowledged_at=None,
        note=None,
    )


class TestEcgPaperFigure:
    def test_basic(self) -> None:
        fig = ecg_paper_figure(["MLII", "V1"], fs=360.0)
        meta = fig.layout.meta
        assert meta["window_s"] == pytest.approx(10.0)  # 250 mm at 25 mm/s
        assert meta["n_leads"] == 2
        assert meta["beat_trace"] == 2
        assert len(fig.data) == 4  # two leads, beat marks, calibration
        assert fig.layout.xaxis.dtick == pytest.approx(0.2)  # 5 mm at 25 mm/s
        assert fig.layout.xaxis.minor.dtick == pytest.approx(0.04)  # 1 mm
        assert fig.layout.yaxis.dtick == pytest.approx(0.5)  # 5 mm at 10 mm/mV
        assert fig.layout.yaxis.minor.dtick == pytest.approx(0.1)
        assert fig.layout.yaxis.scaleratio == pytest.approx(10 / 25)  # square millimetres
        cal = fig.data[3]
        assert max(cal.y) - min(cal.y) == pytest.approx(1.0)  # the 1 mV calibration mark
        texts = [a.text for a in fig.layout.annotations]
        assert "25 mm/s · 10 mm/mV" in texts
        assert "<b>MLII</b>" in texts

    def test_edge_cases(self) -> None:
        fig = ecg_paper_figure(["II"], speed_mm_s=50.0, gain_mm_mv=20.0)
        assert fig.layout.meta["window_s"] == pytest.approx(5.0)
        assert fig.layout.xaxis.minor.dtick == pytest.approx(0.02)
        assert fig.layout.yaxis.minor.dtick == pytest.approx(0.05)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="lead_names"):
            ecg_paper_figure([])
        with pytest.raises(ValueError, match="speed_mm_s"):
            ecg_paper_figure(["II"], speed_mm_s=0)


class TestStripFigure:
    def test_basic(self) -> None:
        t = np.arange(3600) / 360.0
        values = np.stack([np.sin(t), np.cos(t)], axis=1)
        fig = strip_figure(t, values, ["MLII", "V1"], marker_s=5.0, beats=[(1.0, "N"), (2.0, "V")])
        assert len(fig.data) == 3
        assert list(fig.data[2].text) == ["N", "V"]
        assert list(fig.data[2].textfont.color) == [BEAT_CLASSES["N"][1], BEAT_CLASSES["V"][1]]
        assert any(shape.x0 == 5.0 for shape in fig.layout.shapes)

    def test_edge_cases(self) -> None:
        fig = strip_figure(np.array([]), np.empty((0, 1)), ["II"])
        assert len(fig.data) == 1


class TestMinMaxEnvelope:
    def test_basic(self) -> None:
        t = np.arange(10_000, dtype=float)
        y = np.zeros(10_000)
        y[5123] = 3.0
        tt, yy = min_max_envelope(t, y, 100)
        assert tt.size == yy.size == 200
        assert yy.max() == 3.0  # the peak survives the reduction
        assert np.all(np.diff(tt) >= 0)

    def test_edge_cases(self) -> None:
        _tt, yy = min_max_envelope([0.0, 1.0], [1.0, 2.0], 10)
        assert list(yy) == [1.0, 2.0]

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="n_bins"):
            min_max_envelope([0.0], [0.0], 0)
        with pytest.raises(ValueError, match="same shape"):
            min_max_envelope([0.0, 1.0], [0.0], 1)


class TestFormatting:
    def test_basic(self) -> None:
        assert format_age(8) == "8 s ago"
        assert format_age(600) == "10 min ago"
        assert format_value(97.4) == "97"
        assert format_value(36.75, 1) == "36.8"
        assert beat_summary({"V": 3, "N": 71}) == "N 71 · V 3"
        assert alarm_style("medium").marker == "**"
        assert alarm_style("low").css_class == "alarm-low"

    def test_edge_cases(self) -> None:
        assert format_age(None) == "never"
        assert format_age(0.5) == "just now"
        assert format_value(None) == MISSING
        assert format_value(float("nan")) == MISSING
        assert beat_summary({}) == "no beats"
        assert is_stale(None, T0)
        assert not is_stale(T0, T0 + timedelta(seconds=5))
        assert is_stale(T0, T0 + timedelta(seconds=11))

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="priority"):
            alarm_style("urgent")


class TestBeatHover:
    def test_basic(self) -> None:
        text = beat_hover("V", {"N": 0.1, "V": 0.85}, p_abnormal=0.9, early=0.7)
        assert "ventricular" in text
        assert "P(V) 0.85" in text
        assert "P(abnormal) 0.90" in text
        assert "P(early alarm) 0.70" in text

    def test_edge_cases(self) -> None:
        assert "early alarm h1: 0.20" in beat_hover("N", {}, early={"h1": 0.2})
        assert "unknown" in beat_hover("X", {})


class TestCsv:
    def test_basic(self) -> None:
        text = beats_csv([{"t": T0, "label": "N", "p_N": 0.9}])
        rows = list(csv.DictReader(io.StringIO(text)))
        assert rows[0]["t"] == T0.isoformat()
        assert rows[0]["p_N"] == "0.9"

    def test_edge_cases(self) -> None:
        text = alarms_csv([{"id": 1, "detail": "=HYPERLINK(1)"}])
        assert "'=HYPERLINK" in text  # spreadsheet formula injection defused


class TestHistoryFigure:
    def test_basic(self) -> None:
        times = [T0 + timedelta(seconds=i) for i in range(10)]
        fig = history_figure(
            (times, [0.0] * 10),
            [(times[1], "N"), (times[2], "V")],
            [(times[3], None, "high", "vtach")],
            {"HR (bpm)": (times, [70.0] * 10), "SpO2 (%)": (times, [None] * 10)},
        )
        names = [trace.name for trace in fig.data]
        assert "ECG" in names
        assert "V ventricular ectopic" in names
        assert "HR (bpm)" in names
        assert len(fig.layout.shapes) == 2 * 4  # band and start line of the alarm, across the four rows


class TestComponents:
    def test_alarm_badge(self) -> None:
        badge = alarm_badge("high", "vtach")
        assert "alarm-high" in badge.to_plotly_json()["props"]["className"]
        assert badge.children[0].children == "***"

    def test_alarm_table_by_role(self) -> None:
        rows = [_alarm()]
        clinician = str(alarm_table(rows, "clinician"))
        caregiver = str(alarm_table(rows, "caregiver"))
        assert "'type': 'ack'" in clinician
        assert "'type': 'ack'" not in caregiver
        assert "No alarms match." in str(alarm_table([], "clinician"))
        assert "No active alarms." in str(alarm_table([], "clinician", empty="No active alarms."))

    def test_patient_tile_stale_and_replay(self) -> None:
        tile = PatientTile(
            patient_id=3,
            name="MIT-BIH 208 (replay)",
            last_seen=T0,
            hr=72.0,
            spo2=None,
            temperature=None,
            beat_counts={"N": 10},
            device="replay-mitdb-208",
            battery=None,
            replay=True,
            top_alarm=_alarm("medium", "acknowledged"),
        )
        fresh = patient_tile(tile, T0 + timedelta(seconds=2))
        stale = patient_tile(tile, T0 + timedelta(seconds=90))
        assert "stale" not in fresh.to_plotly_json()["props"]["className"]
        assert "stale" in stale.to_plotly_json()["props"]["className"]
        assert "REPLAY" in str(fresh)
        assert "90 s ago" in str(stale)
        assert f"signal {MISSING}" in str(fresh)  # no quality known yet
        good = patient_tile(dataclasses.replace(tile, signal="good"), T0 + timedelta(seconds=2))
        assert "signal good" in str(good)
        bad = patient_tile(dataclasses.replace(tile, signal="lead off"), T0 + timedelta(seconds=2))
        assert "signal: lead off" in str(bad)
        assert "cm-signal-bad" in str(bad)
        old = patient_tile(dataclasses.replace(tile, signal="good"), T0 + timedelta(seconds=90))
        assert "signal good" not in str(old)  # stale data says nothing about the signal now
