"""One-page PDF reports of alarm events: the 10-second strip on true-scale ECG paper.

A report is an A4 landscape page: who and what (patient, alarm, who
acknowledged it, heart rate), the ten seconds around the alarm of every
lead on ECG paper at exactly 25 mm/s and 10 mm/mV (1 mm minor and 5 mm
major squares, a 1 mV calibration pulse, the alarm time marked, each beat's
class above the trace in its class colour), a table of the beats with
their class probabilities, and a footer with the model version, the time
of generation and the reminder that this is not a diagnostic device.

:func:`draw_event_report` and :func:`render_event_report` are pure: they
draw an :class:`EventReport` of plain values (matplotlib's object API, no
pyplot state, so they are safe in a threaded server).
:func:`load_event_report` gathers one from storage for an alarm, within
the user's scope; :func:`export_event_report` loads, draws and audits it,
for the download route that :func:`register_report_route` adds to the
dashboard (``GET /alarms/<id>/report.pdf``) and for the command line
(``cardiac-monitor report alarm ID --out FILE``).
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import flask
import numpy as np
import numpy.typing as npt
from flask_login import current_user
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from sqlalchemy import select
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from dashboard.access import AccessDeniedError, can_export, check_patient, current_db
from dashboard.figures import ALARM_STYLES, BEAT_CLASSES, MISSING
from dashboard.queries import beat_points, ecg_window, latest_stream
from storage import Alarm, Beat, Database, Patient, Role, User, append_audit, utcnow, vitals_between

__all__ = [
    "GAIN_MM_MV",
    "PAGE_MM",
    "SPEED_MM_S",
    "STRIP_S",
    "EventReport",
    "ReportBeat",
    "draw_event_report",
    "export_event_report",
    "load_event_report",
    "register_report_route",
    "render_event_report",
]

#: Paper speed and gain of the strip, exactly, on the printed page.
SPEED_MM_S = 25.0
GAIN_MM_MV = 10.0

#: Seconds of ECG around the alarm (half before, half after its start).
STRIP_S = 10.0

#: The page: A4 landscape, width and height in millimetres.
PAGE_MM = (297.0, 210.0)

_MM_PER_INCH = 25.4
_CAL_MARGIN_S = 0.4  # paper left of the strip that holds the calibration pulse
_LEAD_MAX_MM = 40.0  # a lead's paper height when there is room (4 mV at 10 mm/mV)
_LEAD_MIN_MM = 20.0  # the least that still holds the 1 mV pulse with room around it
_STRIP_TOP_MM = 163.0
_STRIP_BOTTOM_MM = 83.0
_TABLE_TOP_MM = 67.0
_FOOTER_MM = 10.0
_LEFT_MM = (PAGE_MM[0] - (STRIP_S + _CAL_MARGIN_S) * SPEED_MM_S) / 2
_PAPER = {"bg": "#fff7f5", "minor": "#f4c7c3", "major": "#e08a84", "trace": "#111111"}
_ALARM_LINE = ALARM_STYLES["high"].colour
_TEXT = "#1b1f24"
_MUTED = "#5b6470"
_ROW_MM = 4.0
_SMALL: dict[str, Any] = {"fontsize": 6.5, "ha": "center", "color": _MUTED}
_BLOCKS = 3  # side-by-side blocks of the beat table


@dataclass(frozen=True)
class ReportBeat:
    """A beat on the strip.

    Attributes
    ----------
    t_s : float
        Seconds from the start of the strip.
    label : str
        AAMI class letter (``N``, ``S``, ``V``, ``F``, ``Q``).
    probabilities : mapping of str to float
        Class probabilities, by letter.
    """

    t_s: float
    label: str
    probabilities: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EventReport:
    """Everything a report shows, as plain values.

    Attributes
    ----------
    patient_name, patient_mrn, patient_ward : str, str or None, str or None
        Who.
    alarm_id : int
        The alarm's id.
    alarm_kind, alarm_priority, alarm_state, alarm_detail : str
        What: kind (``"vtach"``), priority (``"high"``, ``"medium"``,
        ``"low"``), state and the alarm's detail text.
    alarm_start, alarm_end : datetime, datetime or None
        When the condition started and ended (UTC).
    acknowledged_by, acknowledged_at, ack_note : str or None, datetime or None, str or None
        Who acknowledged it, when, and their note.
    hr_bpm : float or None
        Heart rate at the alarm.
    strip_start : datetime
        Time of the first sample of the strip.
    fs : float
        Sampling rate of the strip in Hz.
    lead_names : tuple of str
        One name per column of ``samples``.
    samples : ndarray
        ``(n, n_leads)`` millivolts, one row per ``1 / fs`` seconds from
        ``strip_start``; NaN where nothing was recorded.
    beats : tuple of ReportBeat
        Beats on the strip.
    model_version : str or None
        The classifier that labelled the beats.
    """

    patient_name: str
    patient_mrn: str | None
    patient_ward: str | None
    alarm_id: int
    alarm_kind: str
    alarm_priority: str
    alarm_state: str
    alarm_start: datetime
    alarm_end: datetime | None
    alarm_detail: str
    acknowledged_by: str | None
    acknowledged_at: datetime | None
    ack_note: str | None
    hr_bpm: float | None
    strip_start: datetime
    fs: float
    lead_names: tuple[str, ...]
    samples: npt.NDArray[np.float64]
    beats: tuple[ReportBeat, ...] = ()
    model_version: str | None = None


def draw_event_report(report: EventReport, *, generated_at: datetime) -> Figure:
    """Draw a report on an A4 landscape :class:`~matplotlib.figure.Figure`.

    Each lead is an axes labelled ``"lead:<name>"`` whose size on the page
    makes one second 25 mm wide and one millivolt 10 mm tall; its grid
    lines are 1 mm (minor) and 5 mm (major) apart.

    Parameters
    ----------
    report : EventReport
        What to show.
    generated_at : datetime
        Printed in the footer.

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with ``savefig``.

    Raises
    ------
    ValueError
        If ``fs`` is not positive, ``samples`` is not ``(n, n_leads)``, or
        there are no leads.

    Examples
    --------
    >>> fig = draw_event_report(report, generated_at=utcnow())  # doctest: +SKIP
    >>> fig.savefig("event.pdf")  # doctest: +SKIP
    """
    samples = _check_report(report)
    fig = Figure(figsize=(PAGE_MM[0] / _MM_PER_INCH, PAGE_MM[1] / _MM_PER_INCH), facecolor="white")
    page = fig.add_axes((0.0, 0.0, 1.0, 1.0), label="page")
    page.set_xlim(0.0, PAGE_MM[0])
    page.set_ylim(0.0, PAGE_MM[1])
    page.set_axis_off()
    _draw_header(page, report)
    alarm_s = (report.alarm_start - report.strip_start).total_seconds()
    shown = _draw_strip(fig, page, report, samples, alarm_s)
    _draw_summary(page, report, shown)
    _draw_beat_table(page, report.beats, alarm_s)
    _draw_footer(page, report, generated_at)
    return fig


def render_event_report(report: EventReport, *, generated_at: datetime) -> bytes:
    """The report as a one-page PDF.

    Parameters
    ----------
    report : EventReport
        What to show.
    generated_at : datetime
        Printed in the footer and stored as the PDF's creation date.

    Returns
    -------
    bytes
        The PDF file.
    """
    fig = draw_event_report(report, generated_at=generated_at)
    buffer = io.BytesIO()
    fig.savefig(
        buffer,
        format="pdf",
        metadata={
            "Title": f"Alarm {report.alarm_id} event report",
            "Subject": f"{report.alarm_kind} alarm",
            "Creator": "cardiac-monitor",
            "CreationDate": generated_at,
        },
    )
    return buffer.getvalue()


def load_event_report(
    session: Session, alarm_id: int, *, user_id: int | None, role: Role | str | None
) -> EventReport:
    """Gather the :class:`EventReport` of an alarm from storage.

    Parameters
    ----------
    session : Session
        An open session.
    alarm_id : int
        The alarm.
    user_id, role : int and str, or None and None
        Whose report: the alarm's patient must be in the user's scope
        (:func:`dashboard.access.check_patient`) and the role must be
        allowed to export (:func:`dashboard.access.can_export`). ``None``
        for both is the operator of the command line, who holds the
        database and sees every alarm.

    Returns
    -------
    EventReport
        The ten seconds around the alarm's start, its beats, the heart rate
        the monitor measured last before the alarm (or, without one, from
        the beats on the strip) and the model version that labelled them.

    Raises
    ------
    AccessDeniedError
        If the role may not export, or the patient is outside the scope.
    LookupError
        If there is no alarm ``alarm_id``.
    ValueError
        If only one of ``user_id`` and ``role`` is ``None``.
    """
    if (user_id is None) != (role is None):
        raise ValueError("`user_id` and `role` must both be given, or both be None for the operator")
    if role is not None and not can_export(role):
        raise AccessDeniedError(f"role {role} may not export event reports")
    alarm = session.get(Alarm, alarm_id)
    if alarm is None:
        raise LookupError(f"there is no alarm {alarm_id}")
    if user_id is not None and role is not None:
        patient = check_patient(session, user_id, role, alarm.patient_id)
    else:
        found = session.get(Patient, alarm.patient_id)
        if found is None:
            raise LookupError(f"alarm {alarm_id} has no patient {alarm.patient_id}")
        patient = found
    start = alarm.started_at - timedelta(seconds=STRIP_S / 2)
    end = start + timedelta(seconds=STRIP_S)
    window = ecg_window(session, patient.id, start, end)
    if window is not None:
        lead_names, fs = window.lead_names, window.fs
        samples = _regular(window.t, window.values, fs)
    else:  # nothing stored then: empty paper, labelled as the patient's stream is
        stream = latest_stream(session, patient.id)
        lead_names, fs = (stream.lead_names, stream.fs) if stream is not None else (("ECG",), 250.0)
        samples = np.full((0, len(lead_names)), np.nan)
    beats = tuple(
        ReportBeat((b.t - start).total_seconds(), b.label, dict(b.probabilities))
        for b in beat_points(session, patient.id, start, end)
    )
    versions = session.scalars(
        select(Beat.model_version)
        .where(Beat.patient_id == patient.id, Beat.t >= start, Beat.t < end)
        .distinct()
        .order_by(Beat.model_version)
    )
    user = alarm.acknowledged_by
    return EventReport(
        patient_name=patient.name,
        patient_mrn=patient.mrn,
        patient_ward=patient.ward,
        alarm_id=alarm.id,
        alarm_kind=alarm.kind,
        alarm_priority=alarm.priority.value,
        alarm_state=alarm.state.value,
        alarm_start=alarm.started_at,
        alarm_end=alarm.ended_at,
        alarm_detail=alarm.detail,
        acknowledged_by=_user_name(user) if user is not None else None,
        acknowledged_at=alarm.acknowledged_at,
        ack_note=alarm.note,
        hr_bpm=_heart_rate(session, patient.id, alarm.started_at, beats),
        strip_start=start,
        fs=fs,
        lead_names=lead_names,
        samples=samples,
        beats=beats,
        model_version=", ".join(versions) or None,
    )


def export_event_report(
    db: Database,
    alarm_id: int,
    *,
    actor: str,
    user_id: int | None,
    role: Role | str | None,
    now: datetime | None = None,
) -> bytes:
    """Load, draw and audit an alarm's report: what the route and the CLI share.

    The export is written to the audit log as ``export.event_report_pdf``
    (target ``alarm:<id>``); a refused one as
    ``export.event_report_refused``.

    Parameters
    ----------
    db : Database
        The monitor's database.
    alarm_id : int
        The alarm.
    actor : str
        Who, as the audit log names them (``"user:12"``, ``"cli"``).
    user_id, role : int and str, or None and None
        The scope, as in :func:`load_event_report`.
    now : datetime, optional
        Generation time (default: now).

    Returns
    -------
    bytes
        The PDF.

    Raises
    ------
    AccessDeniedError, LookupError
        As :func:`load_event_report`.
    """
    at = now or utcnow()
    with db.session() as session:
        try:
            report: EventReport | None = load_event_report(session, alarm_id, user_id=user_id, role=role)
        except AccessDeniedError:
            report = None
            append_audit(session, actor, "export.event_report_refused", target=f"alarm:{alarm_id}", at=at)
    if report is None:
        raise AccessDeniedError(f"{actor} may not export the report of alarm {alarm_id}")
    pdf = render_event_report(report, generated_at=at)  # recorded once it exists
    with db.session() as session:
        append_audit(
            session,
            actor,
            "export.event_report_pdf",
            target=f"alarm:{alarm_id}",
            details={"patient_id": _patient_id(session, alarm_id), "bytes": len(pdf)},
            at=at,
        )
    return pdf


def register_report_route(server: flask.Flask) -> None:
    """Add ``GET /alarms/<id>/report.pdf`` to the dashboard's Flask server.

    The factory's guard has already refused requests without a session;
    the view checks role and scope on the server: ``403`` for a role that
    may not export or a patient outside the scope, ``404`` for an unknown
    alarm.
    """

    @server.route("/alarms/<int:alarm_id>/report.pdf", methods=["GET"])
    def alarm_report_pdf(alarm_id: int) -> Response:
        user = current_user._get_current_object()
        try:
            pdf = export_event_report(
                current_db(), alarm_id, actor=user.actor, user_id=user.id, role=user.role
            )
        except AccessDeniedError:
            return _json_error("this alarm's report is not available to you", 403)
        except LookupError:
            return _json_error(f"there is no alarm {alarm_id}", 404)
        response = Response(pdf, mimetype="application/pdf")
        response.headers["Content-Disposition"] = f'attachment; filename="alarm-{alarm_id}-report.pdf"'
        return response


# Internals -------------------------------------------------------------------


def _json_error(message: str, status: int) -> Response:
    return Response(flask.json.dumps({"error": message}), status=status, mimetype="application/json")


def _patient_id(session: Session, alarm_id: int) -> int | None:
    return session.scalar(select(Alarm.patient_id).where(Alarm.id == alarm_id))


def _check_report(report: EventReport) -> npt.NDArray[np.float64]:
    """The samples as ``(n, n_leads)`` floats, after checking the report's shape."""
    if not report.lead_names:
        raise ValueError("`lead_names` must name at least one lead")
    if not (math.isfinite(report.fs) and report.fs > 0):
        raise ValueError(f"`fs` must be positive, got {report.fs}")
    samples = np.asarray(report.samples, dtype=float)
    if samples.size == 0:
        return np.full((0, len(report.lead_names)), np.nan)
    if samples.ndim != 2 or samples.shape[1] != len(report.lead_names):
        raise ValueError(
            f"`samples` must be (n, {len(report.lead_names)}) for leads {report.lead_names}, "
            f"got shape {samples.shape}"
        )
    return samples


def _regular(
    t: npt.NDArray[np.float64], values: npt.NDArray[np.float64], fs: float
) -> npt.NDArray[np.float64]:
    """Samples of :func:`~dashboard.queries.ecg_window` on a regular grid of ``STRIP_S`` seconds."""
    n = round(STRIP_S * fs)
    out = np.full((n, values.shape[1]), np.nan)
    keep = np.all(np.isfinite(values), axis=1)
    index = np.round(t[keep] * fs).astype(np.int64)
    inside = (index >= 0) & (index < n)
    out[index[inside]] = values[keep][inside]
    return out


def _heart_rate(session: Session, patient_id: int, at: datetime, beats: Sequence[ReportBeat]) -> float | None:
    """The monitor's last HR in the minute before ``at`` (and 1 s after), else from the strip's RR."""
    readings = [
        v.hr_ecg
        for v in vitals_between(session, patient_id, at - timedelta(seconds=60), at + timedelta(seconds=1))
        if v.hr_ecg is not None
    ]
    if readings:
        return float(readings[-1])
    times = np.array([b.t_s for b in beats])
    if times.size < 2:
        return None
    return float(60.0 / np.median(np.diff(np.sort(times))))


def _user_name(user: User) -> str:
    """``"Display Name (username)"``, or the username alone."""
    return f"{user.display_name} ({user.username})" if user.display_name else user.username


def _when(t: datetime | None) -> str:
    return f"{t:%Y-%m-%d %H:%M:%S} UTC" if t is not None else MISSING


def _ink(colour: str) -> str:
    """Black or white text, whichever reads better on ``colour`` (``#rrggbb``)."""
    r, g, b = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return "#000000" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.45 else "#ffffff"


def _text(page: Axes, x: float, y: float, s: str, **kwargs: Any) -> None:
    """Text at page millimetres; never parsed as mathtext (names and notes may hold ``$``)."""
    kwargs.setdefault("color", _TEXT)
    kwargs.setdefault("fontsize", 9)
    kwargs.setdefault("va", "baseline")
    page.text(x, y, s, parse_math=False, **kwargs)


def _badge(page: Axes, x: float, y: float, label: str, colour: str, *, fontsize: float, pad: float) -> None:
    """Bold text centred on a rounded box of ``colour``, in black or white, whichever reads better."""
    _text(
        page,
        x,
        y,
        label,
        fontsize=fontsize,
        fontweight="bold",
        ha="center",
        color=_ink(colour),
        bbox={"boxstyle": f"round,pad={pad}", "facecolor": colour, "edgecolor": "none"},
    )


def _class_colour(label: str) -> str:
    """The colour of a beat class; grey for a label that is not an AAMI class."""
    return BEAT_CLASSES.get(label, ("", "#95a5a6"))[1]


def _draw_header(page: Axes, report: EventReport) -> None:
    """Title and alarm badge; patient and HR; the alarm, its detail and its acknowledgement."""
    style = ALARM_STYLES.get(report.alarm_priority)
    colour = style.colour if style is not None else "#95a5a6"
    marker = style.marker if style is not None else ""
    left, right = 10.0, PAGE_MM[0] - 10.0
    _text(page, left, 197.0, "Alarm event report", fontsize=15, fontweight="bold")
    kind = _clip(report.alarm_kind, 40)
    _text(
        page,
        left + 62.0,
        197.0,
        f" {marker} {kind.replace('_', ' ').upper()} · {report.alarm_priority} priority ",
        fontsize=11,
        fontweight="bold",
        color=_ink(colour),
        bbox={"boxstyle": "round,pad=0.3", "facecolor": colour, "edgecolor": "none"},
    )
    _text(page, right, 197.0, f"Alarm #{report.alarm_id}", fontsize=10, ha="right", color=_MUTED)
    patient = (
        f"Patient: {_clip(report.patient_name, 48)}    MRN: {_clip(report.patient_mrn or MISSING, 24)}"
        f"    Ward: {_clip(report.patient_ward or MISSING, 24)}"
    )
    _text(page, left, 189.0, patient, fontsize=11, fontweight="bold")
    hr = f"{report.hr_bpm:.0f}" if report.hr_bpm is not None and math.isfinite(report.hr_bpm) else MISSING
    _text(page, right, 189.0, f"HR {hr} bpm", fontsize=16, fontweight="bold", ha="right")
    _text(
        page,
        left,
        182.5,
        f"Alarm: {kind} ({report.alarm_state})    Started: {_when(report.alarm_start)}"
        f"    Ended: {_when(report.alarm_end)}",
    )
    _text(page, left, 177.0, f"Detail: {_clip(report.alarm_detail or MISSING, 110)}")
    if report.acknowledged_by is not None or report.acknowledged_at is not None:
        who = _clip(report.acknowledged_by or MISSING, 40)
        ack = f"Acknowledged by {who} at {_when(report.acknowledged_at)}"
        if report.ack_note:
            ack += f"    Note: {_clip(report.ack_note, 60)}"
    else:
        ack = "Not acknowledged"
    _text(page, left, 171.5, ack)


def _clip(text: str, limit: int) -> str:
    """``text`` on one line, cut to ``limit`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def _lead_height_mm(n_leads: int) -> tuple[float, int]:
    """Paper height per lead (a whole number of 5 mm squares) and how many leads fit."""
    room = _STRIP_TOP_MM - _STRIP_BOTTOM_MM
    height = min(_LEAD_MAX_MM, max(_LEAD_MIN_MM, 5.0 * math.floor(room / n_leads / 5.0)))
    return height, min(n_leads, int(room // height))


def _draw_strip(
    fig: Figure, page: Axes, report: EventReport, samples: npt.NDArray[np.float64], alarm_s: float
) -> int:
    """The leads on ECG paper, top to bottom; returns how many were drawn."""
    height, shown = _lead_height_mm(len(report.lead_names))
    width = (STRIP_S + _CAL_MARGIN_S) * SPEED_MM_S
    t = np.arange(samples.shape[0]) / report.fs
    for row in range(shown):
        y0 = _STRIP_TOP_MM - (row + 1) * height
        ax = fig.add_axes(
            (_LEFT_MM / PAGE_MM[0], y0 / PAGE_MM[1], width / PAGE_MM[0], height / PAGE_MM[1]),
            label=f"lead:{report.lead_names[row]}",
        )
        trace = samples[:, row]
        span_mv = height / GAIN_MM_MV
        baseline, bottom = _lead_window(trace, span_mv)
        _paper(ax, (-_CAL_MARGIN_S, STRIP_S), (bottom, bottom + span_mv))
        ax.plot(t, trace, color=_PAPER["trace"], linewidth=0.6, solid_joinstyle="round")
        if not np.isfinite(trace).any():
            ax.text(STRIP_S / 2, bottom + span_mv / 2, "no ECG stored here", ha="center", color=_MUTED)
        cal_x, cal_y = _calibration_pulse(-_CAL_MARGIN_S + 0.04, baseline)
        ax.plot(cal_x, cal_y, color=_PAPER["trace"], linewidth=0.8)
        ax.axvline(alarm_s, color=_ALARM_LINE, linewidth=1.0, linestyle=(0, (4, 2)))
        ax.text(
            0.05,
            bottom + span_mv - 0.1,
            report.lead_names[row],
            va="top",
            fontsize=8,
            fontweight="bold",
            parse_math=False,
        )
    _draw_beat_marks(page, report.beats)
    bottom_mm = _STRIP_TOP_MM - shown * height
    for second in range(int(STRIP_S) + 1):
        if abs(second - alarm_s) >= 0.5:  # leave room for the alarm's own label
            _text(page, _x_mm(second), bottom_mm - 3.5, f"{second - alarm_s:+.0f} s", **_SMALL)
    if 0.0 <= alarm_s <= STRIP_S:
        _text(
            page,
            _x_mm(alarm_s),
            bottom_mm - 3.5,
            f"▲ alarm {report.alarm_start:%H:%M:%S}",
            **{**_SMALL, "color": _ALARM_LINE, "fontweight": "bold"},
        )
    scale = f"{SPEED_MM_S:g} mm/s · {GAIN_MM_MV:g} mm/mV · 1 mV pulse"
    if shown < len(report.lead_names):
        scale = f"{shown} of {len(report.lead_names)} leads · " + scale
    _text(
        page, _LEFT_MM, bottom_mm - 7.5, f"Strip from {_when(report.strip_start)}", fontsize=7, color=_MUTED
    )
    _text(page, _x_mm(STRIP_S), bottom_mm - 7.5, scale, fontsize=7, ha="right", color=_MUTED)
    return shown


def _lead_window(trace: npt.NDArray[np.float64], span_mv: float) -> tuple[float, float]:
    """Baseline (median) of a lead and the bottom of its paper, on a 5 mm line.

    The scale is fixed, so the window only moves: it centres the trace
    (0.5th to 99.5th percentile) when it fits, and otherwise puts the
    baseline 40 % up, since QRS complexes are mostly upright.
    """
    finite = trace[np.isfinite(trace)]
    if not finite.size:
        return 0.0, -0.4 * span_mv
    baseline = float(np.median(finite))
    low, high = (float(v) for v in np.percentile(finite, [0.5, 99.5]))
    centre = (low + high) / 2 if high - low <= span_mv else baseline + 0.1 * span_mv
    major_mv = 5.0 / GAIN_MM_MV
    return baseline, major_mv * round((centre - span_mv / 2) / major_mv)


def _x_mm(t_s: float) -> float:
    """Page millimetres of a strip time."""
    return _LEFT_MM + (t_s + _CAL_MARGIN_S) * SPEED_MM_S


def _paper(ax: Axes, x_range: tuple[float, float], y_range: tuple[float, float]) -> None:
    """ECG paper on an axes: 1 mm minor and 5 mm major grid at the report's speed and gain.

    The lines are two collections (``gid`` ``"grid-minor"`` and
    ``"grid-major"``) rather than tick gridlines: a page of leads has
    hundreds of them, and ticks would make drawing several times slower.
    """
    ax.set_xlim(*x_range)
    ax.set_ylim(*y_range)
    ax.set_facecolor(_PAPER["bg"])
    ax.set_xticks([])
    ax.set_yticks([])
    xs = np.arange(math.ceil(x_range[0] * SPEED_MM_S - 1e-6), math.floor(x_range[1] * SPEED_MM_S + 1e-6) + 1)
    ys = np.arange(math.ceil(y_range[0] * GAIN_MM_MV - 1e-6), math.floor(y_range[1] * GAIN_MM_MV + 1e-6) + 1)
    for major, colour, width in ((False, _PAPER["minor"], 0.25), (True, _PAPER["major"], 0.55)):
        segments = [
            [(x / SPEED_MM_S, y_range[0]), (x / SPEED_MM_S, y_range[1])] for x in xs if (x % 5 == 0) == major
        ] + [
            [(x_range[0], y / GAIN_MM_MV), (x_range[1], y / GAIN_MM_MV)] for y in ys if (y % 5 == 0) == major
        ]
        ax.add_collection(
            LineCollection(
                segments,
                colors=colour,
                linewidths=width,
                zorder=0.5,
                gid="grid-major" if major else "grid-minor",
            ),
            autolim=False,
        )
    for spine in ax.spines.values():
        spine.set_color(_PAPER["major"])
        spine.set_linewidth(0.7)


def _calibration_pulse(x0: float, baseline: float) -> tuple[list[float], list[float]]:
    """A 1 mV, 200 ms calibration pulse from ``x0`` seconds, on ``baseline`` mV."""
    top = baseline + 1.0
    return [x0, x0 + 0.04, x0 + 0.04, x0 + 0.24, x0 + 0.24, x0 + 0.32], [
        baseline,
        baseline,
        top,
        top,
        baseline,
        baseline,
    ]


def _draw_beat_marks(page: Axes, beats: Sequence[ReportBeat]) -> None:
    """Class letters above the strip, on badges in class colours."""
    for beat in beats:
        if not 0.0 <= beat.t_s <= STRIP_S:
            continue
        _badge(
            page,
            _x_mm(beat.t_s),
            _STRIP_TOP_MM + 2.5,
            beat.label,
            _class_colour(beat.label),
            fontsize=7.5,
            pad=0.25,
        )


def _draw_summary(page: Axes, report: EventReport, shown: int) -> None:
    """The left box under the strip: beat counts by class and the legend of colours."""
    x, y = 10.0, _TABLE_TOP_MM
    _text(page, x, y, "Beats on the strip", fontsize=9.5, fontweight="bold")
    counts = {k: sum(1 for b in report.beats if b.label == k) for k in BEAT_CLASSES}
    others = len(report.beats) - sum(counts.values())
    y -= 6.0
    for label, (name, colour) in BEAT_CLASSES.items():
        _badge(page, x + 2.0, y, label, colour, fontsize=8, pad=0.25)
        _text(page, x + 6.0, y, name, fontsize=8)
        _text(page, x + 62.0, y, str(counts[label]), fontsize=8, ha="right", fontweight="bold")
        y -= 5.0
    if others:
        _text(page, x + 6.0, y, "other labels", fontsize=8)
        _text(page, x + 62.0, y, str(others), fontsize=8, ha="right", fontweight="bold")
        y -= 5.0
    y -= 2.0
    _text(page, x, y, f"{len(report.beats)} beats in {STRIP_S:g} s", fontsize=8, color=_MUTED)
    y -= 4.5
    _text(
        page,
        x,
        y,
        f"Leads: {', '.join(report.lead_names[:shown])} · {report.fs:g} Hz",
        fontsize=8,
        color=_MUTED,
    )


def _draw_beat_table(page: Axes, beats: Sequence[ReportBeat], alarm_s: float) -> None:
    """The beats with class and probabilities, in side-by-side blocks; overflow is counted."""
    x0, width = 85.0, (PAGE_MM[0] - 10.0 - 85.0) / _BLOCKS
    rows = int((_TABLE_TOP_MM - _FOOTER_MM - 12.0) // _ROW_MM) - 1
    columns = [("t (s)", 10.0, "right"), ("class", 17.0, "center")] + [
        (f"P({k})", 23.0 + 8.0 * i, "right") for i, k in enumerate(BEAT_CLASSES, start=1)
    ]
    capacity = rows * _BLOCKS
    # when they do not all fit, the last row says how many more there are
    listed = list(beats) if len(beats) <= capacity else list(beats)[: capacity - 1]
    _text(page, x0, _TABLE_TOP_MM, "Beat classification", fontsize=9.5, fontweight="bold")
    for block in range(_BLOCKS):
        chunk = listed[block * rows : (block + 1) * rows]
        if not chunk and block:
            break
        bx = x0 + block * width
        y = _TABLE_TOP_MM - 6.0
        for title, dx, ha in columns:
            _text(page, bx + dx, y, title, fontsize=7, fontweight="bold", ha=ha, color=_MUTED)
        page.plot([bx, bx + width - 4.0], [y - 1.3, y - 1.3], color="#c9ced6", linewidth=0.5)
        for beat in chunk:
            y -= _ROW_MM
            best = max(beat.probabilities.values(), default=None)
            _text(page, bx + columns[0][1], y, f"{beat.t_s - alarm_s:+.2f}", fontsize=7, ha="right")
            _badge(page, bx + columns[1][1], y, beat.label, _class_colour(beat.label), fontsize=7, pad=0.15)
            for title, dx, ha in columns[2:]:
                p = beat.probabilities.get(title[2])
                _text(
                    page,
                    bx + dx,
                    y,
                    f"{p:.2f}" if p is not None else MISSING,
                    fontsize=7,
                    ha=ha,
                    fontweight="bold" if p is not None and p == best else "normal",
                )
    if not beats:
        _text(page, x0, _TABLE_TOP_MM - 10.0, "No beats were classified on this strip.", fontsize=8)
    elif len(beats) > len(listed):
        _text(
            page,
            x0 + (_BLOCKS - 1) * width,
            _TABLE_TOP_MM - 6.0 - rows * _ROW_MM,
            f"+ {len(beats) - len(listed)} more beats (not listed)",
            fontsize=7,
            color=_MUTED,
        )
    _text(page, x0, _TABLE_TOP_MM - 6.0 - (rows + 1) * _ROW_MM, "t: seconds from the alarm", fontsize=6.5)


def _draw_footer(page: Axes, report: EventReport, generated_at: datetime) -> None:
    page.plot([10.0, PAGE_MM[0] - 10.0], [_FOOTER_MM + 4.0] * 2, color="#c9ced6", linewidth=0.5)
    _text(
        page,
        10.0,
        _FOOTER_MM,
        f"Model: {report.model_version or 'unknown'}    Generated: {_when(generated_at)} by Cardiac Monitor",
        fontsize=7.5,
        color=_MUTED,
    )
    _text(
        page,
        PAGE_MM[0] - 10.0,
        _FOOTER_MM,
        "Not a diagnostic device: for review by a qualified clinician",
        fontsize=8,
        fontweight="bold",
        ha="right",
    )
