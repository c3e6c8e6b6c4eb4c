"""Reads and the one write the dashboard needs, on top of :mod:`storage`.

Every function takes the user's id and role and checks scope with
:mod:`dashboard.access` first, so a callback cannot forget to. Results are
plain frozen dataclasses, safe to use after the session closes.
"""

from __future__ import annotations

import json
import math
import secrets
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dashboard.access import (
    AccessDeniedError,
    can_acknowledge,
    check_patient,
    normalize_ward,
    visible_patients,
)
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    AuditEntry,
    Beat,
    CaregiverAssignment,
    Database,
    Device,
    Patient,
    RecordingSession,
    SignalChunk,
    User,
    Vitals,
    acknowledge_alarm,
    append_audit,
    beats_between,
    create_device,
    iter_samples,
    open_alarms,
)

__all__ = [
    "REPLAY_FIRMWARE_PREFIX",
    "SIGNAL_PROBLEMS",
    "AlarmRow",
    "BeatPoint",
    "EcgWindow",
    "PatientTile",
    "StreamInfo",
    "acknowledge",
    "add_patient",
    "alarm_history",
    "alarm_rows",
    "assign_patient",
    "beat_points",
    "ecg_envelope",
    "ecg_window",
    "latest_stream",
    "parse_alarm_limits",
    "patient_tiles",
    "register_device",
    "revoke_device",
    "set_alarm_limits",
    "unassign_patient",
]

#: Firmware prefix of the replay client's devices (``ingest.replay`` sets it).
REPLAY_FIRMWARE_PREFIX = "replay:"

#: Open technical alarms (``ingest.alarms``) and how a tile names the signal problem they mean.
SIGNAL_PROBLEMS = {
    "lead_off": "lead off",
    "flat_line": "flat line",
    "device_silent": "no data",
    "poor_signal": "poor",
}

#: Beats counted for a tile's rhythm summary, seconds back from the newest beat.
SUMMARY_WINDOW_S = 60.0


@dataclass(frozen=True)
class AlarmRow:
    """An alarm as the lists show it."""

    id: int
    patient_id: int
    patient_name: str
    kind: str
    priority: AlarmPriority
    state: AlarmState
    started_at: datetime
    ended_at: datetime | None
    detail: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    note: str | None


@dataclass(frozen=True)
class PatientTile:
    """What a central-station tile shows of one patient."""

    patient_id: int
    name: str
    last_seen: datetime | None
    hr: float | None
    spo2: float | None
    temperature: float | None
    beat_counts: dict[str, int]
    device: str | None
    battery: float | None
    replay: bool
    top_alarm: AlarmRow | None
    #: ``"good"``, the open signal problems (:data:`SIGNAL_PROBLEMS`), or ``None`` before any data.
    signal: str | None = None


@dataclass(frozen=True)
class BeatPoint:
    """A stored beat: time, class and probabilities."""

    t: datetime
    label: str
    probabilities: dict[str, float]
    p_abnormal: float | None
    p_early_alarm: float | None


@dataclass(frozen=True)
class EcgWindow:
    """Physical samples of a patient in a window (gaps stay gaps: NaN rows)."""

    t: npt.NDArray[np.float64]  # seconds from ``start``
    values: npt.NDArray[np.float64]  # (n, leads), mV
    lead_names: tuple[str, ...]
    fs: float
    start: datetime


@dataclass(frozen=True)
class StreamInfo:
    """How a patient's newest recording is sampled."""

    lead_names: tuple[str, ...]
    fs: float
    started_at: datetime


def patient_tiles(session: Session, user_id: int, role: str) -> list[PatientTile]:
    """A tile per patient the user may see, with the newest vitals, beats and alarm."""
    tiles = []
    for patient in visible_patients(session, user_id, role):
        vitals = session.scalar(
            select(Vitals).where(Vitals.patient_id == patient.id).order_by(Vitals.t.desc()).limit(1)
        )
        latest = _latest_vitals(session, patient.id)
        device = session.scalar(
            select(Device)
            .where(Device.patient_id == patient.id)
            .order_by(Device.last_seen_at.desc())
            .limit(1)
        )
        newest_beat = session.scalar(select(func.max(Beat.t)).where(Beat.patient_id == patient.id))
        counts: Counter[str] = Counter()
        if newest_beat is not None:
            since = newest_beat - timedelta(seconds=SUMMARY_WINDOW_S)
            rows = session.execute(
                select(Beat.label, func.count())
                .where(Beat.patient_id == patient.id, Beat.t > since)
                .group_by(Beat.label)
            )
            counts.update({label: n for label, n in rows})
        last_chunk = session.scalar(
            select(func.max(SignalChunk.t_end)).where(SignalChunk.session_id.in_(_sessions_of(patient.id)))
        )
        seen = [t for t in (last_chunk, vitals.t if vitals else None, newest_beat) if t is not None]
        alarms = [_alarm_row(a, patient.name) for a in open_alarms(session, patient.id)]
        problems = sorted({SIGNAL_PROBLEMS[a.kind] for a in alarms if a.kind in SIGNAL_PROBLEMS})
        tiles.append(
            PatientTile(
                patient_id=patient.id,
                name=patient.name,
                last_seen=max(seen) if seen else None,
                hr=latest["hr_ecg"] if latest["hr_ecg"] is not None else latest["pulse"],
                spo2=latest["spo2"],
                temperature=latest["temperature"],
                beat_counts=dict(counts),
                device=device.device_uid if device is not None else None,
                battery=device.battery if device is not None else None,
                replay=bool(
                    device is not None and (device.firmware or "").startswith(REPLAY_FIRMWARE_PREFIX)
                ),
                top_alarm=_top_alarm(alarms),
                signal=", ".join(problems) if problems else ("good" if seen else None),
            )
        )
    return tiles


def alarm_rows(
    session: Session,
    user_id: int,
    role: str,
    *,
    patient_ids: Sequence[int] | None = None,
    priorities: Sequence[str] | None = None,
    states: Sequence[str] | None = None,
    since: datetime | None = None,
    limit: int = 200,
) -> list[AlarmRow]:
    """Alarms of the user's patients, newest first, filtered.

    ``None`` for a filter means no filter; patients outside the user's scope
    are silently dropped from ``patient_ids``.
    """
    names = {p.id: p.name for p in visible_patients(session, user_id, role)}
    wanted = [p for p in (patient_ids or names) if p in names]
    stmt = select(Alarm).where(Alarm.patient_id.in_(wanted))
    if priorities:
        stmt = stmt.where(Alarm.priority.in_([AlarmPriority(p) for p in priorities]))
    if states:
        stmt = stmt.where(Alarm.state.in_([AlarmState(s) for s in states]))
    if since is not None:
        stmt = stmt.where(Alarm.started_at >= since)
    stmt = stmt.order_by(Alarm.started_at.desc(), Alarm.id.desc()).limit(limit)
    return [_alarm_row(alarm, names[alarm.patient_id]) for alarm in session.scalars(stmt)]


def alarm_history(session: Session, user_id: int, role: str, alarm_id: int) -> list[tuple[datetime, str]]:
    """The story of one alarm: raised, acknowledged (by whom), resolved, audit lines.

    Raises
    ------
    AccessDeniedError
        If the alarm does not exist or its patient is outside the user's scope.
    """
    alarm = _visible_alarm(session, user_id, role, alarm_id)
    events = [(alarm.started_at, f"raised: {alarm.kind} ({alarm.priority.value}) {alarm.detail}".strip())]
    audit = session.scalars(
        select(AuditEntry).where(AuditEntry.target == f"alarm:{alarm.id}").order_by(AuditEntry.at)
    )
    users = {u.id: u.username for u in session.scalars(select(User))}
    for entry in audit:
        who = (
            users.get(int(entry.actor.split(":")[1]), entry.actor)
            if entry.actor.startswith("user:")
            else None
        )
        events.append((entry.at, f"{entry.action.replace('alarm.', '')} by {who or entry.actor}"))
    if alarm.ended_at is not None:
        events.append((alarm.ended_at, "condition ended"))
    if alarm.state == AlarmState.RESOLVED:
        events.append((alarm.ended_at or alarm.acknowledged_at or alarm.started_at, "resolved"))
    return sorted(events, key=lambda item: item[0])


def acknowledge(
    db: Database, user_id: int, role: str, alarm_id: int, *, note: str | None, at: datetime
) -> None:
    """Acknowledge an alarm as a user, after checking role and scope on the server.

    A latched alarm whose condition has ended is resolved by the
    acknowledgement. The audit line is written by
    :func:`storage.acknowledge_alarm` in the same transaction; a refused
    attempt is audited too.

    Raises
    ------
    AccessDeniedError
        If the role may not acknowledge, or the alarm is outside the scope.
    ValueError
        If the alarm is already resolved.
    """
    with db.session() as session:
        allowed = can_acknowledge(role)
        try:
            alarm = _visible_alarm(session, user_id, role, alarm_id) if allowed else None
        except AccessDeniedError:
            alarm = None
        if alarm is None:
            append_audit(session, f"user:{user_id}", "alarm.acknowledge_refused", target=f"alarm:{alarm_id}")
    if alarm is None:
        raise AccessDeniedError(f"user {user_id} ({role}) may not acknowledge alarm {alarm_id}")
    with db.session() as session:
        alarm = session.get(Alarm, alarm_id)
        if alarm is None or alarm.state == AlarmState.RESOLVED:
            raise ValueError(f"alarm {alarm_id} is already resolved")
        clean = (note or "").strip()[:500] or None
        acknowledge_alarm(
            session, alarm, user_id=user_id, at=at, note=clean, resolve=alarm.ended_at is not None
        )


def beat_points(session: Session, patient_id: int, start: datetime, end: datetime) -> list[BeatPoint]:
    """Beats of a patient in a window (the caller has checked access)."""
    return [
        BeatPoint(
            t=b.t,
            label=b.label,
            probabilities={"N": b.p_n, "S": b.p_s, "V": b.p_v, "F": b.p_f, "Q": b.p_q},
            p_abnormal=b.p_abnormal,
            p_early_alarm=b.p_early_alarm,
        )
        for b in beats_between(session, patient_id, start, end)
    ]


def ecg_window(session: Session, patient_id: int, start: datetime, end: datetime) -> EcgWindow | None:
    """The stored ECG of a patient in ``[start, end)``, read chunk by chunk.

    Returns ``None`` when nothing is stored there. Gaps between blocks are
    kept as one NaN row, so a plot shows a break instead of a line across.
    """
    times: list[npt.NDArray[np.float64]] = []
    values: list[npt.NDArray[np.float64]] = []
    leads: tuple[str, ...] = ()
    fs = 0.0
    for window in iter_samples(session, patient_id, start, end):
        block = window.block
        if leads and block.lead_names != leads:
            continue  # a second stream with other leads: show the first one's
        leads, fs = block.lead_names, block.fs
        offset = (window.t0 - start).total_seconds()
        if times:
            times.append(np.array([offset - 0.5 / fs]))
            values.append(np.full((1, len(leads)), np.nan))
        times.append(offset + np.arange(block.n_samples) / fs)
        values.append(block.physical())
    if not times:
        return None
    return EcgWindow(np.concatenate(times), np.concatenate(values), leads, fs, start)


def latest_stream(session: Session, patient_id: int) -> StreamInfo | None:
    """Leads and rate of the patient's newest recording session, or ``None``."""
    recording = session.scalar(
        select(RecordingSession)
        .where(RecordingSession.patient_id == patient_id)
        .order_by(RecordingSession.started_at.desc())
        .limit(1)
    )
    if recording is None:
        return None
    return StreamInfo(tuple(recording.lead_names), float(recording.fs), recording.started_at)


def ecg_envelope(
    session: Session, patient_id: int, start: datetime, end: datetime, *, bin_s: float
) -> tuple[list[datetime], list[float]]:
    """Min/max of the first lead per ``bin_s`` seconds over ``[start, end)``, streamed.

    Reads one stored chunk at a time and keeps two numbers per bin, so an
    overview of many hours never holds the samples of the range in memory.

    Raises
    ------
    ValueError
        If ``bin_s`` is not positive.
    """
    if not bin_s > 0:
        raise ValueError(f"`bin_s` must be positive, got {bin_s}")
    lows: dict[int, float] = {}
    highs: dict[int, float] = {}
    for window in iter_samples(session, patient_id, start, end):
        first = window.block.physical()[:, 0]
        offset = (window.t0 - start).total_seconds()
        bins = ((offset + np.arange(first.size) / window.block.fs) // bin_s).astype(np.int64)
        for b in np.unique(bins):
            seg = first[bins == b]
            key = int(b)
            lows[key] = min(lows.get(key, np.inf), float(seg.min()))
            highs[key] = max(highs.get(key, -np.inf), float(seg.max()))
    times: list[datetime] = []
    values: list[float] = []
    for key in sorted(lows):
        t = start + timedelta(seconds=key * bin_s)
        times += [t, t + timedelta(seconds=bin_s / 2)]
        values += [lows[key], highs[key]]
    return times, values


# Administration (callers check can_administer first) -----------------------------


def add_patient(
    db: Database, actor: str, name: str, mrn: str | None = None, *, ward: str | None = None
) -> int:
    """Create a patient, on ``ward`` if given (blank: no ward); audited.

    Raises
    ------
    ValueError
        For an empty name.
    """
    if not name.strip():
        raise ValueError("`name` must not be empty")
    with db.session() as session:
        patient = Patient(
            name=name.strip()[:200], mrn=(mrn or "").strip()[:64] or None, ward=normalize_ward(ward)
        )
        session.add(patient)
        session.flush()
        append_audit(
            session, actor, "patient.create", target=f"patient:{patient.id}", details={"ward": patient.ward}
        )
        return patient.id


def assign_patient(db: Database, actor: str, user_id: int, patient_id: int) -> None:
    """Let a caregiver follow a patient (idempotent); audited."""
    with db.session() as session:
        if session.get(CaregiverAssignment, (user_id, patient_id)) is None:
            session.add(CaregiverAssignment(user_id=user_id, patient_id=patient_id))
            append_audit(
                session,
                actor,
                "assignment.create",
                target=f"user:{user_id}",
                details={"patient_id": patient_id},
            )


def unassign_patient(db: Database, actor: str, user_id: int, patient_id: int) -> bool:
    """Stop a caregiver following a patient; audited. Whether there was such an assignment."""
    with db.session() as session:
        assignment = session.get(CaregiverAssignment, (user_id, patient_id))
        if assignment is None:
            return False
        session.delete(assignment)
        append_audit(
            session,
            actor,
            "assignment.delete",
            target=f"user:{user_id}",
            details={"patient_id": patient_id},
        )
        return True


def register_device(db: Database, actor: str, device_uid: str, patient_id: int | None) -> str:
    """Register a device and return its token, which is shown once and never stored.

    Raises
    ------
    ValueError
        For an empty or taken ``device_uid``.
    """
    uid = device_uid.strip()
    if not uid or len(uid) > 64:
        raise ValueError(f"`device_uid` must be 1-64 characters, got {device_uid!r}")
    token = secrets.token_urlsafe(32)
    with db.session() as session:
        if session.scalar(select(Device.id).where(Device.device_uid == uid)) is not None:
            raise ValueError(f"a device {uid!r} is already registered")
        create_device(session, uid, token, patient_id=patient_id)
        append_audit(
            session, actor, "device.register", target=f"device:{uid}", details={"patient_id": patient_id}
        )
    return token


def revoke_device(db: Database, actor: str, device_id: int, at: datetime) -> None:
    """Revoke a device's token (it can no longer connect); audited."""
    with db.session() as session:
        device = session.get(Device, device_id)
        if device is None or device.revoked_at is not None:
            return
        device.revoked_at = at
        append_audit(session, actor, "device.revoke", target=f"device:{device.device_uid}")


def parse_alarm_limits(text: str) -> dict[str, float]:
    """Alarm-limit overrides from the admin form: a JSON object of numbers.

    Raises
    ------
    ValueError
        For invalid JSON, a non-object, or values that are not finite numbers.

    Examples
    --------
    >>> parse_alarm_limits('{"tachycardia_bpm": 130}')
    {'tachycardia_bpm': 130.0}
    """
    try:
        obj = json.loads(text or "{}")
    except ValueError as exc:
        raise ValueError(f"alarm limits must be JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise ValueError('alarm limits must be a JSON object such as {"tachycardia_bpm": 130}')
    limits: dict[str, float] = {}
    for key, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise ValueError(f"alarm limit {key!r} must be a number, got {value!r}")
        limits[str(key)] = float(value)
    return limits


def set_alarm_limits(db: Database, actor: str, patient_id: int, limits: dict[str, float]) -> None:
    """Replace a patient's alarm-limit overrides; the change (before and after) is audited."""
    with db.session() as session:
        patient = session.get(Patient, patient_id)
        if patient is None:
            raise ValueError(f"no patient {patient_id}")
        before = dict(patient.alarm_limits or {})
        patient.alarm_limits = dict(limits)
        append_audit(
            session,
            actor,
            "patient.alarm_limits",
            target=f"patient:{patient_id}",
            details={"before": before, "after": dict(limits)},
        )


# Internals -------------------------------------------------------------------


def _latest_vitals(session: Session, patient_id: int, within_s: float = 120.0) -> dict[str, float | None]:
    """The newest value of each vital sign (readings carry only some of them), if recent enough."""
    newest = session.scalar(select(func.max(Vitals.t)).where(Vitals.patient_id == patient_id))
    values: dict[str, float | None] = dict.fromkeys(("hr_ecg", "pulse", "spo2", "temperature"))
    if newest is None:
        return values
    since = newest - timedelta(seconds=within_s)
    for name in values:
        column = getattr(Vitals, name)
        values[name] = session.scalar(
            select(column)
            .where(Vitals.patient_id == patient_id, Vitals.t >= since, column.is_not(None))
            .order_by(Vitals.t.desc())
            .limit(1)
        )
    return values


def _sessions_of(patient_id: int) -> Any:
    return select(RecordingSession.id).where(RecordingSession.patient_id == patient_id).scalar_subquery()


def _alarm_row(alarm: Alarm, patient_name: str) -> AlarmRow:
    return AlarmRow(
        id=alarm.id,
        patient_id=alarm.patient_id,
        patient_name=patient_name,
        kind=alarm.kind,
        priority=AlarmPriority(alarm.priority),
        state=AlarmState(alarm.state),
        started_at=alarm.started_at,
        ended_at=alarm.ended_at,
        detail=alarm.detail,
        acknowledged_by=alarm.acknowledged_by.username if alarm.acknowledged_by is not None else None,
        acknowledged_at=alarm.acknowledged_at,
        note=alarm.note,
    )


def _top_alarm(alarms: Sequence[AlarmRow]) -> AlarmRow | None:
    """The highest-priority open alarm; unacknowledged before acknowledged, then newest."""
    if not alarms:
        return None
    return max(alarms, key=lambda a: (a.priority.rank, a.state == AlarmState.ACTIVE, a.started_at))


def _visible_alarm(session: Session, user_id: int, role: str, alarm_id: int) -> Alarm:
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise AccessDeniedError(f"alarm {alarm_id} is not available to user {user_id}")
    check_patient(session, user_id, role, alarm.patient_id)
    return alarm
