"""Alarm rules and the per-patient alarm engine (pure: time is an argument).

The rules are small functions of the recent beats, the latest vitals and the
limits; :class:`AlarmEngine` keeps that state for one patient, evaluates the
rules after every event, and turns the conditions they report into alarm
state changes (raised, updated, resolved). It never reads a clock: beats,
vitals and technical events carry their times, and :meth:`AlarmEngine.tick`
is called with the current time so that silence is noticed.

Priorities follow IEC 60601-1-8 (high: immediate response; medium: prompt;
low: awareness):

=======================  ========  =================================================
alarm                    priority  condition (limits in :class:`AlarmLimits`)
=======================  ========  =================================================
asystole                 high      no beat for more than ``asystole_s`` (4 s) of
                                   analysed signal
ventricular_tachycardia  high      ``vt_min_beats`` (3) or more consecutive V beats
                                   faster than ``vt_min_bpm`` (100 bpm)
spo2_low                 medium,   SpO2 below ``spo2_low`` (90 %); high below
                         high      ``spo2_critical`` (85 %)
supraventricular_run     medium    ``sv_run_min_beats`` (3) or more consecutive S
                                   beats faster than ``sv_run_min_bpm`` (100 bpm)
bradycardia              medium    heart rate below ``bradycardia_bpm`` (50 bpm)
tachycardia              medium    heart rate above ``tachycardia_bpm`` (120 bpm)
lead_off                 medium    technical: an electrode is off
flat_line                medium    technical: the signal is flat (no variation)
device_silent            medium    technical: no data for ``device_silent_s`` (10 s)
frequent_ectopy          low       more than ``ectopy_v_per_min`` V beats or
                                   ``ectopy_s_per_min`` S beats in the last minute;
                                   it ends after ``ectopy_hold_s`` (30 s) below
                                   both
early_warning            low       advisory: the model's early-alarm probability
                                   at or above ``early_warning_threshold`` on
                                   ``early_warning_beats`` consecutive beats;
                                   it ends after ``early_warning_hold_s``
                                   (30 s) without such a beat
atrial_fibrillation      low       advisory: the last ``af_min_beats`` (30) beats all
                                   in atrial fibrillation by the classifier's AF
                                   gate (irregular RR intervals, :mod:`sigproc.rhythm`;
                                   marked sinus arrhythmia can raise it too); it
                                   lasts while half of them are
temperature_high / _low  low       temperature above / below the limits
poor_signal              low       technical: the signal quality is too poor
=======================  ========  =================================================

Lifecycle. An alarm is raised ``active``. A user may acknowledge it: it then
stays ``acknowledged`` while its condition lasts, and is ``resolved`` when
the condition ends. Medium and low alarms resolve by themselves when their
condition ends; high alarms latch: when the condition ends unacknowledged,
the alarm keeps sounding (``active``, with its ``end`` set) until someone
acknowledges it. While an alarm for a condition is open, the condition never
raises a second one; a recurrence reopens the latched alarm instead. When a
stream ends for good (a replay, a stream with no patient to keep watching),
:meth:`AlarmEngine.end_monitoring` ends its conditions at the last data.

Suppression. Arrhythmia alarms (everything derived from beats except
asystole) are neither raised nor resolved while the signal is not
trustworthy: lead off, flat line, poor signal or a silent device; and beats
marked ``quality_ok=False`` are left out of runs, rates and counts.
Asystole is suppressed only while a lead is off or the device is silent:
a flat line or a noisy trace with leads on may be a real asystole, and
missing one is worse than a false alarm.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from storage.enums import AlarmPriority, AlarmState

__all__ = [
    "AlarmChange",
    "AlarmEngine",
    "AlarmKind",
    "AlarmLimits",
    "AlarmNotFoundError",
    "AlarmSnapshot",
    "BeatEvent",
    "ChangeKind",
    "Condition",
    "RecentBeat",
    "TechnicalEvent",
    "TechnicalKind",
    "VitalsEvent",
    "rule_asystole",
    "rule_atrial_fibrillation",
    "rule_early_warning",
    "rule_frequent_ectopy",
    "rule_heart_rate",
    "rule_spo2",
    "rule_supraventricular_run",
    "rule_temperature",
    "rule_ventricular_tachycardia",
]


class AlarmKind(StrEnum):
    """The conditions the monitor alarms on (stored in ``alarms.kind``)."""

    ASYSTOLE = "asystole"
    VENTRICULAR_TACHYCARDIA = "ventricular_tachycardia"
    FREQUENT_ECTOPY = "frequent_ectopy"
    SUPRAVENTRICULAR_RUN = "supraventricular_run"
    ATRIAL_FIBRILLATION = "atrial_fibrillation"
    BRADYCARDIA = "bradycardia"
    TACHYCARDIA = "tachycardia"
    EARLY_WARNING = "early_warning"
    SPO2_LOW = "spo2_low"
    TEMPERATURE_HIGH = "temperature_high"
    TEMPERATURE_LOW = "temperature_low"
    LEAD_OFF = "lead_off"
    FLAT_LINE = "flat_line"
    POOR_SIGNAL = "poor_signal"
    DEVICE_SILENT = "device_silent"


class TechnicalKind(StrEnum):
    """Signal problems reported by the signal-quality stage."""

    LEAD_OFF = "lead_off"
    FLAT_LINE = "flat_line"
    POOR_SIGNAL = "poor_signal"


class ChangeKind(StrEnum):
    """What happened to an alarm."""

    RAISED = "raised"
    UPDATED = "updated"
    RESOLVED = "resolved"


class AlarmNotFoundError(LookupError):
    """No open alarm has the given id."""


_ARRHYTHMIA = frozenset(
    {
        AlarmKind.VENTRICULAR_TACHYCARDIA,
        AlarmKind.FREQUENT_ECTOPY,
        AlarmKind.SUPRAVENTRICULAR_RUN,
        AlarmKind.ATRIAL_FIBRILLATION,
        AlarmKind.BRADYCARDIA,
        AlarmKind.TACHYCARDIA,
        AlarmKind.EARLY_WARNING,
    }
)


@dataclass(frozen=True)
class AlarmLimits:
    """Per-patient alarm limits; the defaults suit an adult at rest.

    Attributes
    ----------
    asystole_s : float
        Longest time without a beat (4 s).
    vt_min_beats, vt_min_bpm : int, float
        A ventricular run of at least this many beats (3) faster than this
        rate (100 bpm) is ventricular tachycardia.
    sv_run_min_beats, sv_run_min_bpm : int, float
        The same for supraventricular runs (3 beats, 100 bpm).
    af_min_beats : int
        Consecutive beats in atrial fibrillation (by the classifier's AF
        gate) that raise the alarm (30).
    ectopy_window_s : float
        Window over which ectopic beats are counted (60 s).
    ectopy_v_per_min, ectopy_s_per_min : int
        Frequent ectopy: more V (10) or S (10) beats than this in the window.
    ectopy_hold_s : float
        A raised frequent-ectopy alarm ends only when the counts have stayed
        at or below the limits for this long (30 s): a count that hovers at
        the limit (bigeminy that comes and goes) gives one alarm, not one
        per beat that enters or leaves the window.
    bradycardia_bpm, tachycardia_bpm : float
        Heart-rate limits (50 and 120 bpm).
    hr_intervals, hr_min_intervals : int
        The heart rate is the mean over the last ``hr_intervals`` (8) RR
        intervals of good-quality beats; no rate with fewer than
        ``hr_min_intervals`` (4).
    early_warning_threshold, early_warning_beats : float, int
        Early-alarm probability (0.8) on this many consecutive beats (3).
    early_warning_hold_s : float
        A raised early warning ends only when no beat has forecast trouble
        for this long (30 s), so that a patient whose forecasts flicker
        gets one advisory, not one per flicker.
    spo2_low, spo2_critical : float
        SpO2 limits in % (90: medium, 85: high).
    temperature_low, temperature_high : float
        Body temperature limits in °C (35.0 and 38.5).
    device_silent_s : float
        Longest silence of a device (10 s).
    """

    asystole_s: float = 4.0
    vt_min_beats: int = 3
    vt_min_bpm: float = 100.0
    sv_run_min_beats: int = 3
    sv_run_min_bpm: float = 100.0
    af_min_beats: int = 30
    ectopy_window_s: float = 60.0
    ectopy_v_per_min: int = 10
    ectopy_s_per_min: int = 10
    ectopy_hold_s: float = 30.0
    bradycardia_bpm: float = 50.0
    tachycardia_bpm: float = 120.0
    hr_intervals: int = 8
    hr_min_intervals: int = 4
    early_warning_threshold: float = 0.8
    early_warning_beats: int = 3
    early_warning_hold_s: float = 30.0
    spo2_low: float = 90.0
    spo2_critical: float = 85.0
    temperature_low: float = 35.0
    temperature_high: float = 38.5
    device_silent_s: float = 10.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"`{f.name}` must be a finite number, got {value!r}")
            if value <= 0:
                raise ValueError(f"`{f.name}` must be positive, got {value!r}")
        pairs = [
            ("bradycardia_bpm", "tachycardia_bpm"),
            ("spo2_critical", "spo2_low"),
            ("temperature_low", "temperature_high"),
            ("hr_min_intervals", "hr_intervals"),
        ]
        for low, high in pairs:
            if getattr(self, low) > getattr(self, high):
                raise ValueError(
                    f"`{low}` must not exceed `{high}`, got {getattr(self, low)} > {getattr(self, high)}"
                )
        if not 0 < self.early_warning_threshold <= 1:
            raise ValueError(
                f"`early_warning_threshold` must be in (0, 1], got {self.early_warning_threshold}"
            )
        if self.vt_min_beats < 2 or self.sv_run_min_beats < 2:
            raise ValueError("runs need at least 2 beats (`vt_min_beats`, `sv_run_min_beats`)")

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any]) -> AlarmLimits:
        """Defaults with per-patient ``overrides`` (e.g. ``patients.alarm_limits``).

        Raises
        ------
        ValueError
            For an unknown limit name or an invalid value.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"unknown alarm limit(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**overrides)


# Events ------------------------------------------------------------------------


@dataclass(frozen=True)
class BeatEvent:
    """One classified beat.

    Attributes
    ----------
    t : float
        Time of the R peak, in seconds (any epoch, the same for all events).
    label : str
        AAMI class: ``N``, ``S``, ``V``, ``F`` or ``Q``.
    probabilities : mapping of str to float
        Class probabilities (kept for the record; the rules use ``label``).
    early_alarm : float, optional
        The model's early-alarm probability for this beat.
    quality_ok : bool
        ``False`` when the signal around the beat is too poor to trust.
    af : bool
        The beat is in atrial fibrillation by the classifier's AF gate
        (:func:`model.inference.af_gate`).
    """

    t: float
    label: str
    probabilities: Mapping[str, float] = field(default_factory=dict)
    early_alarm: float | None = None
    quality_ok: bool = True
    af: bool = False


@dataclass(frozen=True)
class VitalsEvent:
    """Vital signs measured at ``t``; ``None`` where not measured."""

    t: float
    spo2: float | None = None
    pulse: float | None = None
    temperature: float | None = None


@dataclass(frozen=True)
class TechnicalEvent:
    """A signal problem starting (``active=True``) or ending at ``t``."""

    t: float
    kind: TechnicalKind
    active: bool


@dataclass(frozen=True)
class Condition:
    """A rule's finding: the alarm condition is present, with this priority."""

    kind: AlarmKind
    priority: AlarmPriority
    detail: str


@dataclass(frozen=True)
class AlarmSnapshot:
    """An alarm as it stands after a change.

    Attributes
    ----------
    id : int
        Engine-local id (unique per engine).
    start, end : float, float or None
        When the condition began, and ended (``None`` while present).
    acknowledged_by, acknowledged_at, note
        Set by :meth:`AlarmEngine.acknowledge`.
    """

    id: int
    kind: AlarmKind
    priority: AlarmPriority
    state: AlarmState
    start: float
    end: float | None
    detail: str
    acknowledged_by: str | None = None
    acknowledged_at: float | None = None
    note: str | None = None


@dataclass(frozen=True)
class AlarmChange:
    """One state change of one alarm."""

    change: ChangeKind
    alarm: AlarmSnapshot


# Rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class RecentBeat:
    """A good-quality beat as the rules see it.

    ``segment`` numbers stretches of trustworthy signal: runs and RR
    intervals never span two segments (a lead-off or noisy stretch between).
    """

    t: float
    label: str
    early_alarm: float | None = None
    segment: int = 0
    af: bool = False


def rule_asystole(last_beat_t: float, analysed_t: float, limits: AlarmLimits) -> Condition | None:
    """Asystole when the analysed signal has gone ``asystole_s`` without a beat.

    Parameters
    ----------
    last_beat_t : float
        Time of the last beat, or of the last restart of analysis (leads back
        on, data back), whichever is later.
    analysed_t : float
        How far the beat detector has analysed the signal.
    """
    pause = analysed_t - last_beat_t
    if pause > limits.asystole_s:
        return Condition(AlarmKind.ASYSTOLE, AlarmPriority.HIGH, f"no beat for {pause:.1f} s")
    return None


def rule_ventricular_tachycardia(beats: Sequence[RecentBeat], limits: AlarmLimits) -> Condition | None:
    """Ventricular tachycardia: a fast run of V beats at the end of ``beats``."""
    return _fast_run(beats, "V", limits.vt_min_beats, limits.vt_min_bpm, AlarmKind.VENTRICULAR_TACHYCARDIA)


def rule_supraventricular_run(beats: Sequence[RecentBeat], limits: AlarmLimits) -> Condition | None:
    """Supraventricular run: a fast run of S beats at the end of ``beats``."""
    return _fast_run(
        beats, "S", limits.sv_run_min_beats, limits.sv_run_min_bpm, AlarmKind.SUPRAVENTRICULAR_RUN
    )


def rule_atrial_fibrillation(
    beats: Sequence[RecentBeat], limits: AlarmLimits, *, raised: bool = False
) -> Condition | None:
    """Advisory: the last ``af_min_beats`` beats of one segment all in atrial fibrillation.

    Once ``raised``, the condition lasts while at least half of those beats
    are in AF, so that a few regular beats inside AF do not resolve and
    re-raise it.

    Low priority: the RR evidence finds 95 % of the AF beats of DS2, but
    also flags 11.5 % of the other beats, most of them in marked sinus
    arrhythmia and frequent ectopy: over DS2's 11 hours the advisory is
    raised 6 times in AF and 24 times outside it (``docs/model-card.md``).
    """
    last = list(beats[-limits.af_min_beats :])
    if len(last) < limits.af_min_beats or len({b.segment for b in last}) != 1:
        return None
    n_af = sum(b.af for b in last)
    if n_af == len(last) or (raised and 2 * n_af >= len(last)):
        detail = f"irregularly irregular RR intervals for {len(last)} beats: possible atrial fibrillation"
        return Condition(AlarmKind.ATRIAL_FIBRILLATION, AlarmPriority.LOW, detail)
    return None


def rule_frequent_ectopy(beats: Sequence[RecentBeat], now: float, limits: AlarmLimits) -> Condition | None:
    """Frequent ectopy: too many V or S beats in the last ``ectopy_window_s``."""
    recent = [b.label for b in beats if now - limits.ectopy_window_s < b.t <= now]
    v, s = recent.count("V"), recent.count("S")
    if v > limits.ectopy_v_per_min or s > limits.ectopy_s_per_min:
        window = f"{limits.ectopy_window_s:g} s"
        return Condition(AlarmKind.FREQUENT_ECTOPY, AlarmPriority.LOW, f"{v} V and {s} S beats in {window}")
    return None


def rule_heart_rate(beats: Sequence[RecentBeat], limits: AlarmLimits) -> Condition | None:
    """Bradycardia or tachycardia from the mean of the last RR intervals."""
    intervals: list[float] = []
    for previous, beat in zip(reversed(beats[:-1]), reversed(beats[1:]), strict=True):
        if len(intervals) == limits.hr_intervals or previous.segment != beat.segment:
            break
        intervals.append(beat.t - previous.t)
    if len(intervals) < limits.hr_min_intervals:
        return None
    mean_rr = sum(intervals) / len(intervals)
    bpm = 60.0 / mean_rr if mean_rr > 0 else math.inf
    if bpm < limits.bradycardia_bpm:
        return Condition(
            AlarmKind.BRADYCARDIA, AlarmPriority.MEDIUM, f"HR {bpm:.0f} bpm < {limits.bradycardia_bpm:g}"
        )
    if bpm > limits.tachycardia_bpm:
        return Condition(
            AlarmKind.TACHYCARDIA, AlarmPriority.MEDIUM, f"HR {bpm:.0f} bpm > {limits.tachycardia_bpm:g}"
        )
    return None


def rule_early_warning(
    beats: Sequence[RecentBeat], limits: AlarmLimits, *, raised: bool = False
) -> Condition | None:
    """Advisory: the last beats of one segment all forecast trouble.

    Once ``raised``, it holds while a beat of the last segment within
    ``early_warning_hold_s`` of the newest beat forecasts trouble.
    """
    if raised and beats:
        since = beats[-1].t - limits.early_warning_hold_s
        recent = [
            b.early_alarm
            for b in beats
            if b.t >= since and b.segment == beats[-1].segment and b.early_alarm is not None
        ]
        warning = [p for p in recent if p >= limits.early_warning_threshold]
        if warning:
            return Condition(
                AlarmKind.EARLY_WARNING, AlarmPriority.LOW, f"early-alarm probability {max(warning):.2f}"
            )
    last = list(beats[-limits.early_warning_beats :])
    if len(last) < limits.early_warning_beats or len({b.segment for b in last}) != 1:
        return None
    probs = [b.early_alarm for b in last]
    if all(p is not None and p >= limits.early_warning_threshold for p in probs):
        peak = max(p for p in probs if p is not None)
        return Condition(AlarmKind.EARLY_WARNING, AlarmPriority.LOW, f"early-alarm probability {peak:.2f}")
    return None


def rule_spo2(spo2: float | None, limits: AlarmLimits) -> Condition | None:
    """Low SpO2: medium below ``spo2_low``, high below ``spo2_critical``."""
    if spo2 is None or spo2 >= limits.spo2_low:
        return None
    priority = AlarmPriority.HIGH if spo2 < limits.spo2_critical else AlarmPriority.MEDIUM
    return Condition(AlarmKind.SPO2_LOW, priority, f"SpO2 {spo2:.0f} % < {limits.spo2_low:g}")


def rule_temperature(temperature: float | None, limits: AlarmLimits) -> Condition | None:
    """Body temperature outside ``[temperature_low, temperature_high]``."""
    if temperature is None:
        return None
    if temperature > limits.temperature_high:
        detail = f"temperature {temperature:.1f} °C > {limits.temperature_high:g}"
        return Condition(AlarmKind.TEMPERATURE_HIGH, AlarmPriority.LOW, detail)
    if temperature < limits.temperature_low:
        detail = f"temperature {temperature:.1f} °C < {limits.temperature_low:g}"
        return Condition(AlarmKind.TEMPERATURE_LOW, AlarmPriority.LOW, detail)
    return None


# Engine ------------------------------------------------------------------------


class AlarmEngine:
    """Alarm state of one patient: feed it events, get alarm changes back.

    Every input method returns the changes it caused, in a fixed order of
    :class:`AlarmKind`. A condition that persists emits nothing more (its
    ``detail`` stays as raised) unless its priority escalates, which makes
    the alarm ``active`` again even if it was acknowledged.

    Parameters
    ----------
    limits : AlarmLimits
        The patient's limits.

    Examples
    --------
    >>> engine = AlarmEngine()
    >>> changes = engine.on_vitals(VitalsEvent(t=0.0, spo2=82.0))
    >>> [(c.change.value, c.alarm.kind.value, c.alarm.priority.value) for c in changes]
    [('raised', 'spo2_low', 'high')]
    """

    def __init__(self, limits: AlarmLimits | None = None) -> None:
        self.limits = limits or AlarmLimits()
        self._beats: deque[RecentBeat] = deque()
        self._segment = 0
        self._technical: dict[TechnicalKind, bool] = dict.fromkeys(TechnicalKind, False)
        self._silent = False
        self._last_data_t: float | None = None
        self._analysed_t: float | None = None
        self._asystole_ref: float | None = None
        self._spo2: float | None = None
        self._temperature: float | None = None
        self._open: dict[AlarmKind, AlarmSnapshot] = {}
        self._next_id = 1
        #: When each condition with an off-delay (:data:`_OFF_DELAY`) was last present.
        self._last_present: dict[AlarmKind, float] = {}

    # Inputs --------------------------------------------------------------------

    def on_beat(self, beat: BeatEvent) -> list[AlarmChange]:
        """A classified beat; also means the signal was analysed up to ``beat.t``.

        Any detected beat restarts the asystole timer, even one of poor
        quality; only good-quality beats in trustworthy signal feed the
        arrhythmia rules.
        """
        self._note_data(beat.t)
        self._asystole_ref = beat.t if self._asystole_ref is None else max(self._asystole_ref, beat.t)
        self._analysed_t = beat.t if self._analysed_t is None else max(self._analysed_t, beat.t)
        if beat.quality_ok and not self._signal_untrusted():
            self._beats.append(RecentBeat(beat.t, beat.label, beat.early_alarm, self._segment, beat.af))
            self._prune(beat.t)
        else:
            self._segment += 1
        return self._evaluate(beat.t)

    def on_progress(self, t: float) -> list[AlarmChange]:
        """The beat detector has analysed the signal up to ``t`` and found no further beat."""
        self._note_data(t)
        if self._asystole_ref is None:
            self._asystole_ref = t
        self._analysed_t = t if self._analysed_t is None else max(self._analysed_t, t)
        return self._evaluate(t)

    def on_vitals(self, vitals: VitalsEvent) -> list[AlarmChange]:
        """New vital signs; a missing value keeps the previous reading."""
        self._note_data(vitals.t)
        if vitals.spo2 is not None:
            self._spo2 = vitals.spo2
        if vitals.temperature is not None:
            self._temperature = vitals.temperature
        return self._evaluate(vitals.t)

    def on_technical(self, event: TechnicalEvent) -> list[AlarmChange]:
        """A lead-off, flat-line or poor-signal segment starts or ends."""
        self._note_data(event.t)
        was = self._technical[event.kind]
        self._technical[event.kind] = event.active
        if event.active and not was:
            self._segment += 1  # no run or RR interval spans the bad segment
        if event.kind is TechnicalKind.LEAD_OFF and was and not event.active:
            self._asystole_ref = event.t  # analysis restarts when the lead is back on
        return self._evaluate(event.t)

    def on_data(self, t: float) -> list[AlarmChange]:
        """Samples arrived from the device at ``t`` (keeps it from counting as silent)."""
        self._note_data(t)
        return self._evaluate(t)

    def tick(self, now: float) -> list[AlarmChange]:
        """Evaluate time-driven rules at ``now`` (call about once a second)."""
        silent = self._last_data_t is not None and now - self._last_data_t > self.limits.device_silent_s
        if silent and not self._silent:
            self._segment += 1
        self._silent = silent
        return self._evaluate(now)

    def end_monitoring(self) -> list[AlarmChange]:
        """The stream ended for good (a replay, a stream with no patient): no condition lasts past its data.

        Every open alarm whose condition was still present ends at the last
        data time, as if the condition had ended then: medium and low
        alarms, and acknowledged ones, resolve; an unacknowledged high
        alarm latches (``active``, with its ``end``) until someone
        acknowledges it. Alarms already latched stay as they are.
        """
        t = self._last_data_t
        if t is None:
            return []
        return [self._condition_ended(a, t) for a in list(self._open.values()) if a.end is None]

    def acknowledge(self, alarm_id: int, *, by: str, t: float, note: str | None = None) -> list[AlarmChange]:
        """Acknowledge an open alarm.

        A latched alarm whose condition has ended resolves; an alarm whose
        condition persists becomes ``acknowledged``. Acknowledging again
        records the latest user, time and note.

        Raises
        ------
        AlarmNotFoundError
            If no open alarm has ``alarm_id``.
        """
        alarm = next((a for a in self._open.values() if a.id == alarm_id), None)
        if alarm is None:
            raise AlarmNotFoundError(f"no open alarm with id {alarm_id}")
        ended = alarm.end is not None
        state = AlarmState.RESOLVED if ended else AlarmState.ACKNOWLEDGED
        updated = dataclasses.replace(alarm, state=state, acknowledged_by=by, acknowledged_at=t, note=note)
        if ended:
            del self._open[alarm.kind]
            return [AlarmChange(ChangeKind.RESOLVED, updated)]
        self._open[alarm.kind] = updated
        return [AlarmChange(ChangeKind.UPDATED, updated)]

    # State -----------------------------------------------------------------------

    @property
    def open_alarms(self) -> list[AlarmSnapshot]:
        """Alarms not yet resolved, highest priority first, then oldest."""
        return sorted(self._open.values(), key=lambda a: (-a.priority.rank, a.start, a.id))

    def conditions(self, now: float) -> list[Condition]:
        """Conditions present at ``now``, before suppression."""
        beats = list(self._beats)
        beat_clock = self._analysed_t if self._analysed_t is not None else now
        found: Iterable[Condition | None] = (
            rule_ventricular_tachycardia(beats, self.limits),
            rule_supraventricular_run(beats, self.limits),
            rule_atrial_fibrillation(beats, self.limits, raised=AlarmKind.ATRIAL_FIBRILLATION in self._open),
            rule_frequent_ectopy(beats, beat_clock, self.limits),
            rule_heart_rate(beats, self.limits),
            rule_early_warning(beats, self.limits, raised=AlarmKind.EARLY_WARNING in self._open),
            rule_spo2(self._spo2, self.limits),
            rule_temperature(self._temperature, self.limits),
            self._asystole(),
            *self._technical_conditions(),
        )
        return [c for c in found if c is not None]

    # Internals -------------------------------------------------------------------

    def _note_data(self, t: float) -> None:
        if self._silent:
            self._silent = False
            self._asystole_ref = t  # analysis restarts when data is back
        self._last_data_t = t if self._last_data_t is None else max(self._last_data_t, t)

    def _signal_untrusted(self) -> bool:
        return self._silent or any(self._technical.values())

    def _asystole(self) -> Condition | None:
        if self._silent or self._technical[TechnicalKind.LEAD_OFF]:
            return None
        if self._asystole_ref is None or self._analysed_t is None:
            return None
        return rule_asystole(self._asystole_ref, self._analysed_t, self.limits)

    def _technical_conditions(self) -> list[Condition]:
        found = [
            Condition(AlarmKind(kind.value), _TECHNICAL_PRIORITY[kind], kind.value.replace("_", " "))
            for kind, active in self._technical.items()
            if active
        ]
        if self._silent:
            detail = f"no data for more than {self.limits.device_silent_s:g} s"
            found.append(Condition(AlarmKind.DEVICE_SILENT, AlarmPriority.MEDIUM, detail))
        return found

    def _prune(self, now: float) -> None:
        keep_s = max(self.limits.ectopy_window_s, self.limits.early_warning_hold_s, 60.0)
        keep_n = (
            max(
                self.limits.hr_intervals,
                self.limits.vt_min_beats,
                self.limits.sv_run_min_beats,
                self.limits.af_min_beats,
                self.limits.early_warning_beats,
            )
            + 1
        )
        while len(self._beats) > keep_n and self._beats[0].t <= now - keep_s:
            self._beats.popleft()

    def _evaluate(self, t: float) -> list[AlarmChange]:
        """Reconcile the open alarms with the conditions present at ``t``."""
        present = {c.kind: c for c in self.conditions(t)}
        for kind, hold in _OFF_DELAY.items():
            if kind in present:
                self._last_present[kind] = t
                continue
            alarm, last = self._open.get(kind), self._last_present.get(kind)
            held = last is not None and t - last < getattr(self.limits, hold)
            if held and alarm is not None and alarm.end is None:  # gone, but not for long enough
                present[kind] = Condition(kind, alarm.priority, alarm.detail)
        frozen = _ARRHYTHMIA if self._signal_untrusted() else frozenset()
        changes: list[AlarmChange] = []
        for kind in AlarmKind:
            if kind in frozen:
                continue
            condition, alarm = present.get(kind), self._open.get(kind)
            if condition is not None:
                changes.extend(self._condition_present(condition, alarm, t))
            elif alarm is not None and alarm.end is None:
                changes.append(self._condition_ended(alarm, t))
        return changes

    def _condition_present(
        self, condition: Condition, alarm: AlarmSnapshot | None, t: float
    ) -> list[AlarmChange]:
        if alarm is None:
            raised = AlarmSnapshot(
                id=self._next_id,
                kind=condition.kind,
                priority=condition.priority,
                state=AlarmState.ACTIVE,
                start=t,
                end=None,
                detail=condition.detail,
            )
            self._next_id += 1
            self._open[condition.kind] = raised
            return [AlarmChange(ChangeKind.RAISED, raised)]
        escalated = condition.priority.rank > alarm.priority.rank
        if alarm.end is None and not escalated:
            return []  # still present: no duplicate, no chatter
        updated = dataclasses.replace(
            alarm,
            end=None,
            priority=condition.priority if escalated else alarm.priority,
            detail=condition.detail if escalated else alarm.detail,
            # A recurrence or an escalation needs attention again.
            state=AlarmState.ACTIVE,
        )
        self._open[alarm.kind] = updated
        return [AlarmChange(ChangeKind.UPDATED, updated)]

    def _condition_ended(self, alarm: AlarmSnapshot, t: float) -> AlarmChange:
        if alarm.priority is AlarmPriority.HIGH and alarm.state is AlarmState.ACTIVE:
            latched = dataclasses.replace(alarm, end=t)
            self._open[alarm.kind] = latched
            return AlarmChange(ChangeKind.UPDATED, latched)
        del self._open[alarm.kind]
        return AlarmChange(ChangeKind.RESOLVED, dataclasses.replace(alarm, end=t, state=AlarmState.RESOLVED))


_TECHNICAL_PRIORITY = {
    TechnicalKind.LEAD_OFF: AlarmPriority.MEDIUM,
    TechnicalKind.FLAT_LINE: AlarmPriority.MEDIUM,
    TechnicalKind.POOR_SIGNAL: AlarmPriority.LOW,
}


#: Conditions that end only after being absent for the named limit (seconds): an off-delay,
#: so that a count hovering at its limit raises one alarm instead of flapping.
_OFF_DELAY: dict[AlarmKind, str] = {AlarmKind.FREQUENT_ECTOPY: "ectopy_hold_s"}


_RUN_PRIORITY = {
    AlarmKind.VENTRICULAR_TACHYCARDIA: AlarmPriority.HIGH,
    AlarmKind.SUPRAVENTRICULAR_RUN: AlarmPriority.MEDIUM,
}


def _fast_run(
    beats: Sequence[RecentBeat], label: str, min_beats: int, min_bpm: float, kind: AlarmKind
) -> Condition | None:
    """The run of ``label`` beats ending ``beats``, if long and fast enough.

    The rate is that of the run itself: its beats minus one over its span.
    """
    run: list[RecentBeat] = []
    for beat in reversed(beats):
        if beat.label != label or (run and beat.segment != run[-1].segment):
            break
        run.append(beat)
    if len(run) < min_beats:
        return None
    span = run[0].t - run[-1].t
    bpm = 60.0 * (len(run) - 1) / span if span > 0 else math.inf
    if bpm <= min_bpm:
        return None
    return Condition(kind, _RUN_PRIORITY[kind], f"{len(run)} {label} beats at {bpm:.0f} bpm")
