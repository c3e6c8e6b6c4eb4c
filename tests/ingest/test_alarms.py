"""Alarm rules on synthetic beat sequences, and the alarm engine's lifecycle."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

import pytest

from ingest.alarms import (
    AlarmChange,
    AlarmEngine,
    AlarmKind,
    AlarmLimits,
    AlarmNotFoundError,
    BeatEvent,
    ChangeKind,
    RecentBeat,
    TechnicalEvent,
    TechnicalKind,
    VitalsEvent,
    rule_asystole,
    rule_atrial_fibrillation,
    rule_early_warning,
    rule_frequent_ectopy,
    rule_heart_rate,
    rule_spo2,
    rule_supraventricular_run,
    rule_temperature,
    rule_ventricular_tachycardia,
)
from storage.enums import AlarmPriority, AlarmState

LIMITS = AlarmLimits()
# Runs are fast: a high tachycardia limit keeps the run tests about the run alone.
NO_TACHY = AlarmLimits(tachycardia_bpm=250)


def _recent(labels: str, rr: float = 0.8, *, start: float = 0.0) -> list[RecentBeat]:
    """Beats with these labels (``"NNVVV"``) at a fixed RR interval."""
    return [RecentBeat(t=start + i * rr, label=label) for i, label in enumerate(labels)]


def _feed(
    engine: AlarmEngine, labels: str, rr: float, *, start: float, **kwargs: object
) -> list[AlarmChange]:
    """Feed beats to the engine; returns every change they caused."""
    changes: list[AlarmChange] = []
    for i, label in enumerate(labels):
        changes += engine.on_beat(BeatEvent(t=start + i * rr, label=label, **kwargs))  # type: ignore[arg-type]
    return changes


def _summary(changes: Iterable[AlarmChange]) -> list[tuple[str, str, str, str]]:
    return [
        (c.change.value, c.alarm.kind.value, c.alarm.priority.value, c.alarm.state.value) for c in changes
    ]


class TestAlarmLimits:
    def test_basic(self) -> None:
        assert (LIMITS.asystole_s, LIMITS.vt_min_beats, LIMITS.vt_min_bpm, LIMITS.device_silent_s) == (
            4.0,
            3,
            100.0,
            10.0,
        )
        custom = AlarmLimits.from_mapping({"tachycardia_bpm": 140, "spo2_low": 88})
        assert (custom.tachycardia_bpm, custom.spo2_low, custom.bradycardia_bpm) == (140, 88, 50.0)
        assert AlarmLimits.from_mapping({}) == LIMITS

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="unknown alarm limit"):
            AlarmLimits.from_mapping({"tachy": 140})
        with pytest.raises(ValueError, match="`asystole_s` must be positive"):
            AlarmLimits(asystole_s=0)
        with pytest.raises(ValueError, match="`spo2_low` must be a finite number"):
            AlarmLimits(spo2_low=float("nan"))
        with pytest.raises(ValueError, match="`bradycardia_bpm` must not exceed `tachycardia_bpm`"):
            AlarmLimits(bradycardia_bpm=130)
        with pytest.raises(ValueError, match="early_warning_threshold"):
            AlarmLimits(early_warning_threshold=1.5)
        with pytest.raises(ValueError, match="runs need at least 2 beats"):
            AlarmLimits(vt_min_beats=1)


class TestRules:
    def test_asystole(self) -> None:
        assert rule_asystole(10.0, 14.0, LIMITS) is None
        condition = rule_asystole(10.0, 14.5, LIMITS)
        assert condition is not None
        assert (condition.kind, condition.priority, condition.detail) == (
            AlarmKind.ASYSTOLE,
            AlarmPriority.HIGH,
            "no beat for 4.5 s",
        )

    def test_ventricular_tachycardia(self) -> None:
        fast = _recent("NNNVVV", rr=0.4)  # 150 bpm
        condition = rule_ventricular_tachycardia(fast, LIMITS)
        assert condition is not None
        assert condition.detail == "3 V beats at 150 bpm"
        assert rule_ventricular_tachycardia(_recent("NNNNVV", rr=0.4), LIMITS) is None  # a couplet
        assert rule_ventricular_tachycardia(_recent("NNVVVN", rr=0.4), LIMITS) is None  # run over
        assert (
            rule_ventricular_tachycardia(_recent("VVVV", rr=0.75), LIMITS) is None
        )  # 80 bpm: idioventricular
        split = [*_recent("VV", rr=0.4), RecentBeat(t=0.8, label="V", segment=1)]
        assert rule_ventricular_tachycardia(split, LIMITS) is None  # a bad segment breaks the run

    def test_supraventricular_run(self) -> None:
        condition = rule_supraventricular_run(_recent("NNSSSS", rr=0.4), LIMITS)
        assert condition is not None
        assert (condition.kind, condition.priority, condition.detail) == (
            AlarmKind.SUPRAVENTRICULAR_RUN,
            AlarmPriority.MEDIUM,
            "4 S beats at 150 bpm",
        )
        assert rule_supraventricular_run(_recent("NNSS", rr=0.4), LIMITS) is None

    def test_frequent_ectopy(self) -> None:
        bigeminy = _recent("NV" * 11, rr=1.0)  # 11 V beats in 22 s
        condition = rule_frequent_ectopy(bigeminy, now=21.0, limits=LIMITS)
        assert condition is not None
        assert condition.detail == "11 V and 0 S beats in 60 s"
        assert rule_frequent_ectopy(bigeminy, now=75.0, limits=LIMITS) is None  # most left the window
        assert (
            rule_frequent_ectopy(_recent("NV" * 10, rr=1.0), now=20.0, limits=LIMITS) is None
        )  # 10 is the limit
        assert rule_frequent_ectopy(_recent("NS" * 11, rr=1.0), now=21.0, limits=LIMITS) is not None

    def test_heart_rate(self) -> None:
        brady = rule_heart_rate(_recent("NNNNNN", rr=1.5), LIMITS)
        assert brady is not None
        assert (brady.kind, brady.detail) == (AlarmKind.BRADYCARDIA, "HR 40 bpm < 50")
        tachy = rule_heart_rate(_recent("NNNNNN", rr=0.4), LIMITS)
        assert tachy is not None
        assert (tachy.kind, tachy.detail) == (AlarmKind.TACHYCARDIA, "HR 150 bpm > 120")
        assert rule_heart_rate(_recent("NNNNNN", rr=0.8), LIMITS) is None
        assert rule_heart_rate(_recent("NNNN", rr=1.5), LIMITS) is None  # 3 intervals: too few
        # Only intervals inside the last segment count.
        slow_then_break = [
            *_recent("NNNNNN", rr=1.5),
            *[RecentBeat(9.0 + i * 0.8, "N", segment=1) for i in range(3)],
        ]
        assert rule_heart_rate(slow_then_break, LIMITS) is None

    def test_early_warning(self) -> None:
        beats = [RecentBeat(t=i, label="N", early_alarm=p) for i, p in enumerate([0.1, 0.85, 0.9, 0.95])]
        condition = rule_early_warning(beats, LIMITS)
        assert condition is not None
        assert (condition.priority, condition.detail) == (AlarmPriority.LOW, "early-alarm probability 0.95")
        assert rule_early_warning(beats[:3], LIMITS) is None
        assert rule_early_warning([*beats, RecentBeat(t=5, label="N", early_alarm=None)], LIMITS) is None

    def test_atrial_fibrillation(self) -> None:
        limits = AlarmLimits(af_min_beats=4)
        beats = [RecentBeat(t=i * 0.7, label="N", af=i > 0) for i in range(5)]
        condition = rule_atrial_fibrillation(beats, limits)
        assert condition is not None
        assert condition.kind is AlarmKind.ATRIAL_FIBRILLATION
        assert condition.priority is AlarmPriority.LOW
        assert condition.detail.startswith("irregularly irregular RR intervals for 4 beats")
        assert rule_atrial_fibrillation(beats[:4], limits) is None  # the first beat is not in AF
        assert rule_atrial_fibrillation(beats[1:4], limits) is None  # too few beats
        split = [*beats[:3], *(RecentBeat(t=b.t, label="N", af=True, segment=1) for b in beats[3:])]
        assert rule_atrial_fibrillation(split, limits) is None  # across a stretch of bad signal
        half = [RecentBeat(t=i * 0.7, label="N", af=i % 2 == 0) for i in range(4)]
        assert rule_atrial_fibrillation(half, limits) is None  # not raised by half the beats...
        assert rule_atrial_fibrillation(half, limits, raised=True) is not None  # ...but kept by them
        assert rule_atrial_fibrillation(half[1:] + half[-1:], limits, raised=True) is None  # 1 of 4

    def test_vitals(self) -> None:
        assert rule_spo2(None, LIMITS) is None
        assert rule_spo2(90.0, LIMITS) is None
        low, critical = rule_spo2(88.0, LIMITS), rule_spo2(80.0, LIMITS)
        assert low is not None
        assert critical is not None
        assert (low.priority, critical.priority) == (AlarmPriority.MEDIUM, AlarmPriority.HIGH)
        hot, cold = rule_temperature(39.2, LIMITS), rule_temperature(34.0, LIMITS)
        assert hot is not None
        assert cold is not None
        assert (hot.kind, cold.kind) == (AlarmKind.TEMPERATURE_HIGH, AlarmKind.TEMPERATURE_LOW)
        assert hot.detail == "temperature 39.2 °C > 38.5"
        assert rule_temperature(37.0, LIMITS) is None
        assert rule_temperature(None, LIMITS) is None


class TestAsystole:
    def test_basic(self) -> None:
        engine = AlarmEngine()
        assert _feed(engine, "NNNNN", 0.8, start=0.0) == []  # last beat at 3.2 s
        assert engine.on_progress(7.0) == []  # 3.8 s pause
        raised = engine.on_progress(7.5)
        assert _summary(raised) == [("raised", "asystole", "high", "active")]
        assert raised[0].alarm.start == 7.5
        assert engine.on_progress(9.0) == []  # no duplicate while it lasts
        # A beat ends the condition, but a high alarm latches until acknowledged.
        # (The long pause also drags the mean heart rate below the limit.)
        latched = engine.on_beat(BeatEvent(t=9.5, label="N"))
        assert _summary(latched) == [
            ("updated", "asystole", "high", "active"),
            ("raised", "bradycardia", "medium", "active"),
        ]
        assert latched[0].alarm.end == 9.5
        assert [a.kind for a in engine.open_alarms] == [AlarmKind.ASYSTOLE, AlarmKind.BRADYCARDIA]
        resolved = engine.acknowledge(raised[0].alarm.id, by="nurse", t=12.0, note="patient moved")
        assert _summary(resolved) == [("resolved", "asystole", "high", "resolved")]
        assert (resolved[0].alarm.acknowledged_by, resolved[0].alarm.note) == ("nurse", "patient moved")
        assert [a.kind for a in engine.open_alarms] == [AlarmKind.BRADYCARDIA]

    def test_suppressed_while_lead_off(self) -> None:
        engine = AlarmEngine()
        _feed(engine, "NNN", 0.8, start=0.0)
        lead_off = engine.on_technical(TechnicalEvent(t=2.0, kind=TechnicalKind.LEAD_OFF, active=True))
        assert _summary(lead_off) == [("raised", "lead_off", "medium", "active")]
        assert engine.on_progress(20.0) == []  # no asystole while the lead is off
        back = engine.on_technical(TechnicalEvent(t=21.0, kind=TechnicalKind.LEAD_OFF, active=False))
        assert _summary(back) == [("resolved", "lead_off", "medium", "resolved")]
        assert engine.on_progress(24.0) == []  # the timer restarted at 21 s
        assert _summary(engine.on_progress(25.5)) == [("raised", "asystole", "high", "active")]

    def test_edge_cases(self) -> None:
        # A flat line with leads on may be a real asystole: both alarms sound.
        engine = AlarmEngine()
        _feed(engine, "NN", 0.8, start=0.0)
        engine.on_technical(TechnicalEvent(t=1.0, kind=TechnicalKind.FLAT_LINE, active=True))
        assert _summary(engine.on_progress(6.0)) == [("raised", "asystole", "high", "active")]
        assert {a.kind for a in engine.open_alarms} == {AlarmKind.ASYSTOLE, AlarmKind.FLAT_LINE}
        # With no beat ever, asystole counts from the first analysed signal.
        fresh = AlarmEngine()
        assert fresh.on_progress(100.0) == []
        assert _summary(fresh.on_progress(104.5)) == [("raised", "asystole", "high", "active")]


class TestVentricularTachycardia:
    def test_basic(self) -> None:
        engine = AlarmEngine(NO_TACHY)
        assert _feed(engine, "NNNNN", 0.8, start=0.0) == []
        raised = _feed(engine, "VVV", 0.4, start=3.6)
        assert _summary(raised) == [("raised", "ventricular_tachycardia", "high", "active")]
        assert raised[0].alarm.detail == "3 V beats at 150 bpm"
        assert _feed(engine, "VVVV", 0.4, start=4.8) == []  # still the same episode
        ended = _feed(engine, "N", 0.8, start=6.4)
        assert _summary(ended) == [("updated", "ventricular_tachycardia", "high", "active")]
        # It recurs before anyone acknowledged: the latched alarm reopens, no new alarm.
        again = _feed(engine, "VVV", 0.4, start=6.8)
        assert _summary(again) == [("updated", "ventricular_tachycardia", "high", "active")]
        assert again[0].alarm.id == raised[0].alarm.id
        assert again[0].alarm.end is None

    def test_acknowledged_while_present(self) -> None:
        engine = AlarmEngine(NO_TACHY)
        (raised,) = _feed(engine, "NNNVVV", 0.4, start=0.0)
        acked = engine.acknowledge(raised.alarm.id, by="dr-who", t=2.5)
        assert _summary(acked) == [("updated", "ventricular_tachycardia", "high", "acknowledged")]
        assert _feed(engine, "V", 0.4, start=2.4) == []
        ended = _feed(engine, "N", 0.8, start=3.2)
        assert _summary(ended) == [("resolved", "ventricular_tachycardia", "high", "resolved")]
        assert ended[0].alarm.acknowledged_by == "dr-who"

    def test_suppressed_during_poor_signal(self) -> None:
        engine = AlarmEngine(NO_TACHY)
        _feed(engine, "NNNN", 0.8, start=0.0)
        poor = engine.on_technical(TechnicalEvent(t=3.0, kind=TechnicalKind.POOR_SIGNAL, active=True))
        assert _summary(poor) == [("raised", "poor_signal", "low", "active")]
        assert _feed(engine, "VVVV", 0.4, start=3.2) == []
        # Beats flagged as poor quality are not trusted either.
        engine.on_technical(TechnicalEvent(t=5.0, kind=TechnicalKind.POOR_SIGNAL, active=False))
        assert _feed(engine, "VVVV", 0.4, start=5.2, quality_ok=False) == []
        # A good run after the noisy stretch does alarm, counted from its own beats.
        assert _summary(_feed(engine, "VVV", 0.4, start=7.0)) == [
            ("raised", "ventricular_tachycardia", "high", "active")
        ]

    def test_edge_cases(self) -> None:
        engine = AlarmEngine()
        assert _feed(engine, "NNVVVVN", 0.75, start=0.0) == []  # 80 bpm V run: no VT
        assert _feed(engine, "VV", 0.4, start=6.0) == []  # a couplet


class TestOtherArrhythmias:
    def test_frequent_ectopy(self) -> None:
        engine = AlarmEngine()
        changes = _feed(engine, "NV" * 11, 1.0, start=0.0)
        assert _summary(changes) == [("raised", "frequent_ectopy", "low", "active")]
        assert changes[0].alarm.start == 21.0
        quiet = _feed(engine, "N" * 70, 1.0, start=22.0)
        assert _summary(quiet) == [("resolved", "frequent_ectopy", "low", "resolved")]
        assert quiet[0].alarm.end == 90.0  # 11 V in the window up to t = 60, then 30 s below the limit

    def test_frequent_ectopy_hovering(self) -> None:
        """A V beat every 5.5 s puts 10 or 11 in each minute: one alarm, not one per crossing."""
        labels = "".join("V" if i % 11 == 0 else "N" for i in range(600))  # 5 minutes at 120 bpm
        changes = _feed(AlarmEngine(NO_TACHY), labels, 0.5, start=0.0)
        assert _summary(changes) == [("raised", "frequent_ectopy", "low", "active")]
        flapping = _feed(AlarmEngine(replace(NO_TACHY, ectopy_hold_s=1e-6)), labels, 0.5, start=0.0)
        assert len([c for c in flapping if c.change is ChangeKind.RAISED]) > 5  # without the off-delay

    def test_supraventricular_run(self) -> None:
        engine = AlarmEngine(NO_TACHY)
        changes = _feed(engine, "NNNSSSSN", 0.4, start=0.0)
        assert _summary(changes) == [
            ("raised", "supraventricular_run", "medium", "active"),
            ("resolved", "supraventricular_run", "medium", "resolved"),
        ]
        assert changes[0].alarm.detail == "3 S beats at 150 bpm"

    def test_bradycardia_and_tachycardia(self) -> None:
        engine = AlarmEngine()
        brady = _feed(engine, "NNNNN", 1.5, start=0.0)
        assert _summary(brady) == [("raised", "bradycardia", "medium", "active")]
        assert brady[0].alarm.detail == "HR 40 bpm < 50"
        normal = _feed(engine, "NNNNNNNN", 0.8, start=6.8)
        assert _summary(normal) == [("resolved", "bradycardia", "medium", "resolved")]
        tachy = _feed(engine, "NNNNNNNNN", 0.4, start=13.0)
        assert _summary(tachy) == [("raised", "tachycardia", "medium", "active")]

    def test_atrial_fibrillation(self) -> None:
        engine = AlarmEngine()
        assert _feed(engine, "N" * 29, 0.7, start=0.0, af=True) == []
        raised = _feed(engine, "N", 0.7, start=20.3, af=True)
        assert _summary(raised) == [("raised", "atrial_fibrillation", "low", "active")]
        assert _feed(engine, "N" * 15, 0.7, start=21.0, af=False) == []  # 15 of the last 30 still AF
        assert _summary(_feed(engine, "N", 0.7, start=31.5, af=False)) == [
            ("resolved", "atrial_fibrillation", "low", "resolved")
        ]

    def test_early_warning(self) -> None:
        """Raised after 3 forecasting beats; ends 30 s after the last one, not at the first calm beat."""
        engine = AlarmEngine()
        assert _feed(engine, "NN", 0.8, start=0.0, early_alarm=0.9) == []
        raised = _feed(engine, "N", 0.8, start=1.6, early_alarm=0.9)
        assert _summary(raised) == [("raised", "early_warning", "low", "active")]
        assert _feed(engine, "N" * 10, 0.8, start=2.4, early_alarm=0.2) == []  # calm for 8 s: held
        assert _feed(engine, "N", 0.8, start=10.4, early_alarm=0.85) == []  # one flicker: the same alarm
        calm = _feed(engine, "N" * 40, 0.8, start=11.2, early_alarm=0.2)
        assert _summary(calm) == [("resolved", "early_warning", "low", "resolved")]
        assert calm[0].alarm.end == pytest.approx(40.8)  # the first beat more than 30 s after the flicker
        assert calm[0].alarm.id == raised[0].alarm.id

    def test_early_warning_flicker(self) -> None:
        """Forecasts that flicker on and off for minutes raise one advisory, not one per flicker."""
        engine = AlarmEngine()
        changes = []
        for k in range(40):  # 3 forecasting beats, then 5 calm ones, for 4 minutes
            changes += _feed(engine, "NNN", 0.8, start=k * 6.4, early_alarm=0.9)
            changes += _feed(engine, "NNNNN", 0.8, start=k * 6.4 + 2.4, early_alarm=0.1)
        assert _summary(changes) == [("raised", "early_warning", "low", "active")]
        calm = _feed(engine, "N" * 45, 0.8, start=256.0, early_alarm=0.1)
        assert _summary(calm) == [("resolved", "early_warning", "low", "resolved")]

    def test_end_monitoring(self) -> None:
        """A stream that ends for good ends its conditions at its last data; high alarms latch."""
        engine = AlarmEngine(NO_TACHY)
        assert engine.end_monitoring() == []  # no data, nothing open
        _feed(engine, "NV" * 11 + "N", 1.0, start=0.0)
        (vt,) = _feed(engine, "VVV", 0.4, start=22.4)
        assert [a.kind.value for a in engine.open_alarms] == ["ventricular_tachycardia", "frequent_ectopy"]
        ended = engine.end_monitoring()
        assert sorted(_summary(ended)) == [
            ("resolved", "frequent_ectopy", "low", "resolved"),
            ("updated", "ventricular_tachycardia", "high", "active"),
        ]
        assert [c.alarm.end for c in ended] == [pytest.approx(23.2)] * 2
        assert [(a.id, a.end) for a in engine.open_alarms] == [(vt.alarm.id, pytest.approx(23.2))]  # latched
        assert engine.end_monitoring() == []
        assert _summary(engine.acknowledge(vt.alarm.id, by="dr-who", t=30.0)) == [
            ("resolved", "ventricular_tachycardia", "high", "resolved")
        ]


class TestVitalsAlarms:
    def test_spo2_escalation_and_latching(self) -> None:
        engine = AlarmEngine()
        (low,) = engine.on_vitals(VitalsEvent(t=0.0, spo2=88.0))
        assert _summary([low]) == [("raised", "spo2_low", "medium", "active")]
        engine.acknowledge(low.alarm.id, by="nurse", t=1.0)
        assert engine.on_vitals(VitalsEvent(t=2.0, spo2=87.0)) == []
        # Escalation to high re-alerts, even after an acknowledgement.
        escalated = engine.on_vitals(VitalsEvent(t=3.0, spo2=82.0))
        assert _summary(escalated) == [("updated", "spo2_low", "high", "active")]
        assert escalated[0].alarm.id == low.alarm.id
        latched = engine.on_vitals(VitalsEvent(t=4.0, spo2=96.0))
        assert _summary(latched) == [("updated", "spo2_low", "high", "active")]
        assert _summary(engine.acknowledge(low.alarm.id, by="nurse", t=5.0)) == [
            ("resolved", "spo2_low", "high", "resolved")
        ]

    def test_temperature(self) -> None:
        engine = AlarmEngine(AlarmLimits(temperature_high=38.0))
        assert _summary(engine.on_vitals(VitalsEvent(t=0.0, temperature=38.2))) == [
            ("raised", "temperature_high", "low", "active")
        ]
        assert engine.on_vitals(VitalsEvent(t=1.0, spo2=97.0)) == []  # temperature unchanged
        assert _summary(engine.on_vitals(VitalsEvent(t=2.0, temperature=37.0))) == [
            ("resolved", "temperature_high", "low", "resolved")
        ]


class TestTechnicalAlarms:
    def test_device_silent(self) -> None:
        engine = AlarmEngine()
        assert engine.tick(100.0) == []  # never heard from: nothing to miss yet
        engine.on_data(100.0)
        assert engine.tick(110.0) == []
        silent = engine.tick(110.5)
        assert _summary(silent) == [("raised", "device_silent", "medium", "active")]
        assert engine.tick(130.0) == []  # no asystole while silent, no duplicate
        back = engine.on_data(131.0)
        assert _summary(back) == [("resolved", "device_silent", "medium", "resolved")]

    def test_lead_off_and_flat_line(self) -> None:
        engine = AlarmEngine()
        changes = engine.on_technical(TechnicalEvent(t=0.0, kind=TechnicalKind.FLAT_LINE, active=True))
        changes += engine.on_technical(TechnicalEvent(t=0.0, kind=TechnicalKind.FLAT_LINE, active=True))
        assert _summary(changes) == [("raised", "flat_line", "medium", "active")]
        assert [a.kind for a in engine.open_alarms] == [AlarmKind.FLAT_LINE]

    def test_open_alarms_order(self) -> None:
        engine = AlarmEngine()
        engine.on_vitals(VitalsEvent(t=0.0, temperature=39.0))
        engine.on_vitals(VitalsEvent(t=1.0, spo2=88.0))
        engine.on_vitals(VitalsEvent(t=2.0, spo2=80.0))
        assert [(a.kind, a.priority) for a in engine.open_alarms] == [
            (AlarmKind.SPO2_LOW, AlarmPriority.HIGH),
            (AlarmKind.TEMPERATURE_HIGH, AlarmPriority.LOW),
        ]

    def test_exceptions(self) -> None:
        engine = AlarmEngine()
        with pytest.raises(AlarmNotFoundError, match="no open alarm with id 7"):
            engine.acknowledge(7, by="nurse", t=0.0)
        (raised,) = engine.on_vitals(VitalsEvent(t=0.0, temperature=39.0))
        engine.on_vitals(VitalsEvent(t=1.0, temperature=37.0))
        with pytest.raises(AlarmNotFoundError, match=f"no open alarm with id {raised.alarm.id}"):
            engine.acknowledge(raised.alarm.id, by="nurse", t=2.0)
        assert ChangeKind.RAISED == "raised"
        assert AlarmState.ACKNOWLEDGED == "acknowledged"
