"""Figures and formatting for the dashboard: pure functions, no I/O, no Dash state.

ECG paper follows the clinical convention: small squares of 1 mm, large
ones of 5 mm; at 25 mm/s a small square is 40 ms and at 10 mm/mV it is
0.1 mV. The axes are locked to that aspect (``scaleanchor``), so a square
stays square whatever the window size, and the chosen speed and gain set
how many seconds and millivolts fit.

Beat classes are the AAMI classes with a colour and a letter each; alarm
priorities follow IEC 60601-1-8 (high: red, ``***``, flashing; medium:
yellow, ``**``; low: cyan, ``*``).
"""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "ALARM_STYLES",
    "BEAT_CLASSES",
    "GAINS_MM_MV",
    "MISSING",
    "SPEEDS_MM_S",
    "AlarmStyle",
    "alarm_style",
    "alarms_csv",
    "beat_hover",
    "beat_summary",
    "beats_csv",
    "ecg_paper_figure",
    "format_age",
    "format_value",
    "history_figure",
    "is_stale",
    "min_max_envelope",
    "strip_figure",
    "trend_figure",
]

#: Beat classes: letter -> (name, colour). Colours differ in hue and lightness
#: so that they stay distinct for the common colour-vision deficiencies.
BEAT_CLASSES: dict[str, tuple[str, str]] = {
    "N": ("normal", "#2ecc71"),
    "S": ("supraventricular ectopic", "#f1c40f"),
    "V": ("ventricular ectopic", "#e74c3c"),
    "F": ("fusion", "#e67e22"),
    "Q": ("unclassifiable", "#95a5a6"),
}

#: Selectable sweep speeds (mm/s) and gains (mm/mV).
SPEEDS_MM_S: tuple[float, ...] = (12.5, 25.0, 50.0)
GAINS_MM_MV: tuple[float, ...] = (5.0, 10.0, 20.0)

#: Shown for a missing value (an en dash).
MISSING = "\u2013"

_TRACE_COLOUR = "#111111"
_CAL_MARGIN_S = 0.4  # the calibration mark sits left of the sweep, in this many seconds of paper
_TREND_COLOURS = {"HR (bpm)": "#2ecc71", "SpO2 (%)": "#4da3ff", "Temp (°C)": "#f39c12"}
_PAPER = {"minor": "rgba(230, 90, 90, 0.22)", "major": "rgba(230, 90, 90, 0.55)", "bg": "#fff7f5"}


class AlarmStyle(tuple[str, str, str]):
    """``(marker, css_class, colour)`` of an alarm priority."""

    __slots__ = ()

    @property
    def marker(self) -> str:
        """``***``, ``**`` or ``*``."""
        return self[0]

    @property
    def css_class(self) -> str:
        """The class in ``assets/`` that colours (and for high, flashes) it."""
        return self[1]

    @property
    def colour(self) -> str:
        """The colour as CSS hex."""
        return self[2]


#: IEC 60601-1-8 alarm signal colours and markers, by priority.
ALARM_STYLES: dict[str, AlarmStyle] = {
    "high": AlarmStyle(("***", "alarm-high", "#e0001b")),
    "medium": AlarmStyle(("**", "alarm-medium", "#ffd200")),
    "low": AlarmStyle(("*", "alarm-low", "#00c8e6")),
}


def alarm_style(priority: str) -> AlarmStyle:
    """The marker, CSS class and colour of a priority.

    Raises
    ------
    ValueError
        For an unknown priority.

    Examples
    --------
    >>> alarm_style("high").marker
    '***'
    """
    try:
        return ALARM_STYLES[str(priority)]
    except KeyError:
        raise ValueError(f"`priority` must be one of {sorted(ALARM_STYLES)}, got {priority!r}") from None


def format_age(seconds: float | None) -> str:
    """How long ago, for stale data: ``"8 s ago"``, ``"3 min ago"``, ``"never"``.

    Examples
    --------
    >>> format_age(125)
    '2 min ago'
    """
    if seconds is None or not math.isfinite(seconds):
        return "never"
    seconds = max(seconds, 0.0)
    if seconds < 2:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds // 60:.0f} min ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600:.0f} h ago"
    return f"{seconds // 86400:.0f} d ago"


def is_stale(last_seen: datetime | None, now: datetime, threshold_s: float = 10.0) -> bool:
    """Whether data last seen at ``last_seen`` is older than ``threshold_s`` at ``now``."""
    return last_seen is None or (now - last_seen).total_seconds() > threshold_s


def format_value(value: float | None, decimals: int = 0) -> str:
    """A vital sign for a tile; missing values show as an en dash."""
    if value is None or not math.isfinite(value):
        return MISSING
    return f"{value:.{decimals}f}"


def beat_summary(counts: Mapping[str, int]) -> str:
    """Beat counts in class order, e.g. ``"N 71 · V 3"``; ``"no beats"`` when empty."""
    parts = [f"{label} {counts[label]}" for label in BEAT_CLASSES if counts.get(label)]
    return " · ".join(parts) if parts else "no beats"


def beat_hover(
    label: str,
    probabilities: Mapping[str, float],
    p_abnormal: float | None = None,
    early: Mapping[str, float] | float | None = None,
) -> str:
    """Hover text of a beat: class, class probabilities, abnormal and early-alarm probabilities."""
    name = BEAT_CLASSES.get(label, ("unknown", ""))[0]
    lines = [f"<b>{label}</b> {name}"]
    lines += [f"P({k}) {probabilities[k]:.2f}" for k in BEAT_CLASSES if k in probabilities]
    if p_abnormal is not None:
        lines.append(f"P(abnormal) {p_abnormal:.2f}")
    if isinstance(early, Mapping):
        lines += [f"early alarm {k}: {v:.2f}" for k, v in early.items()]
    elif early is not None:
        lines.append(f"P(early alarm) {early:.2f}")
    return "<br>".join(lines)


def ecg_paper_figure(
    lead_names: Sequence[str],
    *,
    speed_mm_s: float = 25.0,
    gain_mm_mv: float = 10.0,
    width_mm: float = 250.0,
    lead_height_mm: float = 30.0,
    fs: float = 360.0,
    theme: str = "dark",
) -> go.Figure:
    """An empty live ECG on paper: one row per lead, beat markers, a 1 mV calibration mark.

    ``assets/live.js`` fills it with ``Plotly.extendTraces`` in sweep mode,
    as bedside monitors draw: the axes stay fixed (no re-layout, so an
    update redraws only the traces), the trace wraps at the right edge and
    an erase gap runs ahead of the newest sample. Traces ``0 .. n_leads-1``
    are the leads, then one beat-marker trace, then the calibration mark
    (left of time 0). ``layout.meta`` tells the script the window and rate.

    Parameters
    ----------
    lead_names : sequence of str
        Leads top to bottom.
    speed_mm_s : float
        Sweep speed; the window holds ``width_mm / speed_mm_s`` seconds.
    gain_mm_mv : float
        Millimetres per millivolt.
    width_mm, lead_height_mm : float
        Size of the paper.
    fs : float
        Sampling rate, for the script's bound on points.
    theme : {"dark", "light"}
        Colours around the paper.

    Returns
    -------
    plotly.graph_objects.Figure

    Raises
    ------
    ValueError
        For no leads or non-positive sizes.
    """
    if not lead_names:
        raise ValueError("`lead_names` must name at least one lead")
    for name, value in (("speed_mm_s", speed_mm_s), ("gain_mm_mv", gain_mm_mv), ("fs", fs)):
        if not value > 0:
            raise ValueError(f"`{name}` must be positive, got {value}")
    window_s = width_mm / speed_mm_s
    half_mv = lead_height_mm / gain_mm_mv / 2
    n = len(lead_names)
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.0)
    # Lead traces carry empty text and marker arrays so that one extendTraces call can
    # extend the leads and the beat marks together (one redraw per screen update).
    empty_marks: dict[str, Any] = {
        "text": [],
        "hovertext": [],
        "marker": {"size": [], "color": [], "line": {"width": []}},
    }
    for row, lead in enumerate(lead_names, start=1):
        fig.add_trace(
            go.Scatter(
                x=[],
                y=[],
                mode="lines",
                line={"color": _TRACE_COLOUR, "width": 1.4},
                name=lead,
                hoverinfo="skip",
                **empty_marks,
            ),
            row=row,
            col=1,
        )
        _paper_axes(fig, row, speed_mm_s, gain_mm_mv, (-half_mv, half_mv), x_range=(-_CAL_MARGIN_S, window_s))
        fig.add_annotation(
            text=f"<b>{lead}</b>",
            x=0.005,
            y=1.0,
            xref="x domain",
            yref=f"y{'' if row == 1 else row} domain",
            xanchor="left",
            yanchor="top",
            showarrow=False,
            font={"color": "#333", "size": 13},
        )
    fig.add_trace(
        go.Scatter(
            x=[],
            y=[],
            mode="markers+text",
            text=[],
            textposition="top center",
            hovertext=[],
            hoverinfo="text",
            marker={
                "size": [],
                "color": [],
                "line": {"width": [], "color": "#e0001b"},
                "symbol": "triangle-down",
            },
            textfont={"size": 14, "color": "#111111", "family": "Arial Black, Arial, sans-serif"},
            name="beats",
            showlegend=False,
        ),
        row=1,
        col=1,
    )
    cal_x, cal_y = _calibration_pulse(-_CAL_MARGIN_S + 0.04)
    fig.add_trace(
        go.Scatter(
            x=cal_x,
            y=cal_y,
            mode="lines",
            line={"color": _TRACE_COLOUR, "width": 1.4},
            hoverinfo="skip",
            name="1 mV",
        ),
        row=n,
        col=1,
    )
    fig.add_annotation(
        text=f"{speed_mm_s:g} mm/s · {gain_mm_mv:g} mm/mV",
        x=1.0,
        y=0.0,
        xref="paper",
        yref="paper",
        xanchor="right",
        yanchor="bottom",
        showarrow=False,
        font={"size": 13, "color": "#333"},  # on the paper, like the lead labels, in either theme
        bgcolor="rgba(255, 247, 245, 0.85)",
    )
    _frame(fig, theme, height=int(160 * n + 30))
    fig.update_layout(
        showlegend=False,
        uirevision=f"{speed_mm_s}-{gain_mm_mv}",
        meta={
            "window_s": window_s,
            "fs": fs,
            "n_leads": n,
            "beat_trace": n,
            "half_mv": half_mv,
            "leads": list(lead_names),
            "erase_s": 0.25,
            "sweep": True,
        },
    )
    return fig


def strip_figure(
    t: npt.ArrayLike,
    values: npt.ArrayLike,
    lead_names: Sequence[str],
    *,
    marker_s: float | None = None,
    beats: Iterable[tuple[float, str]] = (),
    speed_mm_s: float = 25.0,
    gain_mm_mv: float = 10.0,
    title: str = "",
    theme: str = "dark",
) -> go.Figure:
    """A stored strip on ECG paper (event strips, history zoom) with a line at ``marker_s``.

    Parameters
    ----------
    t : array_like
        ``(n,)`` seconds.
    values : array_like
        ``(n, n_leads)`` millivolts (NaN rows are gaps).
    lead_names : sequence of str
        One name per column.
    marker_s : float, optional
        Where to draw the alarm line, in the same seconds.
    beats : iterable of (float, str)
        Beat times and labels, drawn as coloured letters above the first lead.
    speed_mm_s, gain_mm_mv : float
        Paper scale.
    title : str
        Above the strip.
    theme : {"dark", "light"}
        Colours around the paper.
    """
    tt = np.asarray(t, dtype=float)
    vv = np.asarray(values, dtype=float)
    vv = vv.reshape(len(tt), -1) if vv.size else np.empty((0, max(len(lead_names), 1)))
    n = vv.shape[1]
    fig = make_subplots(rows=n, cols=1, shared_xaxes=True, vertical_spacing=0.0)
    top = 1.5
    for row in range(1, n + 1):
        column = vv[:, row - 1] if vv.size else vv
        fig.add_trace(
            go.Scattergl(
                x=tt,
                y=column,
                mode="lines",
                line={"color": _TRACE_COLOUR, "width": 1.2},
                name=lead_names[row - 1] if row <= len(lead_names) else f"lead {row}",
                hoverinfo="skip",
            ),
            row=row,
            col=1,
        )
        x_range = (float(tt[0]), float(tt[-1])) if tt.size else (0.0, 10.0)
        _paper_axes(fig, row, speed_mm_s, gain_mm_mv, (-top, top), x_range=x_range)
    beat_list = list(beats)
    if beat_list:
        bx, labels = zip(*beat_list, strict=True)
        fig.add_trace(
            go.Scatter(
                x=list(bx),
                y=[top * 0.8] * len(bx),
                mode="text",
                text=list(labels),
                textfont={"color": [BEAT_CLASSES.get(lb, ("", "#555"))[1] for lb in labels], "size": 13},
                hoverinfo="skip",
            ),
            row=1,
            col=1,
        )
    if marker_s is not None:
        fig.add_vline(x=marker_s, line={"color": ALARM_STYLES["high"].colour, "width": 2, "dash": "dash"})
    _frame(fig, theme, height=int(120 * n + 60), title=title)
    fig.update_layout(showlegend=False)
    return fig


def min_max_envelope(
    t: npt.ArrayLike, y: npt.ArrayLike, n_bins: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Reduce a long trace to ``2 * n_bins`` points that keep every peak.

    Each bin contributes its minimum and its maximum, so an overview of
    hours still shows every QRS complex and artefact; a trace shorter than
    ``2 * n_bins`` is returned unchanged.

    Raises
    ------
    ValueError
        If ``n_bins`` is not positive or ``t`` and ``y`` differ in length.
    """
    tt, yy = np.asarray(t, dtype=float), np.asarray(y, dtype=float)
    if n_bins < 1:
        raise ValueError(f"`n_bins` must be positive, got {n_bins}")
    if tt.shape != yy.shape:
        raise ValueError(f"`t` and `y` must have the same shape, got {tt.shape} and {yy.shape}")
    if tt.size <= 2 * n_bins:
        return tt, yy
    edges = np.linspace(0, tt.size, n_bins + 1).astype(int)
    out_t = np.empty(2 * n_bins)
    out_y = np.empty(2 * n_bins)
    for i, (a, b) in enumerate(itertools.pairwise(edges)):
        seg = yy[a:b]
        lo, hi = (int(np.nanargmin(seg)), int(np.nanargmax(seg))) if np.isfinite(seg).any() else (0, 0)
        first, second = sorted((lo, hi))
        out_t[2 * i], out_t[2 * i + 1] = tt[a + first], tt[a + second]
        out_y[2 * i], out_y[2 * i + 1] = seg[first], seg[second]
    return out_t, out_y


def history_figure(
    ecg: tuple[Sequence[datetime], Sequence[float]] | None,
    beats: Sequence[tuple[datetime, str]],
    alarms: Sequence[tuple[datetime, datetime | None, str, str]],
    vitals: Mapping[str, tuple[Sequence[datetime], Sequence[float | None]]],
    *,
    x_range: tuple[datetime, datetime] | None = None,
    theme: str = "dark",
) -> go.Figure:
    """Full disclosure on one time axis: ECG overview, beats, HR, SpO2, temperature, alarms.

    Parameters
    ----------
    ecg : (times, mV) or None
        The first lead, already reduced (see :func:`min_max_envelope`).
    beats : sequence of (time, label)
        Beats, drawn as coloured marks in their own row.
    alarms : sequence of (start, end or None, priority, text)
        Shaded across every row in the priority's colour.
    vitals : mapping
        ``{"HR (bpm)": (times, values), "SpO2 (%)": ..., "Temp (°C)": ...}``.
    x_range : (datetime, datetime), optional
        The reviewed range (default: what the data spans).
    theme : {"dark", "light"}
        Colours.
    """
    names = list(vitals)
    rows = 2 + len(names)
    heights = [0.4, 0.12] + [0.48 / max(len(names), 1)] * len(names)
    fig = make_subplots(
        rows=rows,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.02,
        row_heights=heights,
        subplot_titles=["ECG", "Beats", *names],
    )
    if ecg is not None:
        fig.add_trace(
            go.Scattergl(
                x=list(ecg[0]),
                y=list(ecg[1]),
                mode="lines",
                name="ECG",
                line={"width": 1, "color": "#7fdbff"},
            ),
            row=1,
            col=1,
        )
    for label, (name, colour) in BEAT_CLASSES.items():
        times = [t for t, lb in beats if lb == label]
        if times:
            fig.add_trace(
                go.Scattergl(
                    x=times,
                    y=[label] * len(times),
                    mode="markers",
                    name=f"{label} {name}",
                    marker={"color": colour, "size": 6, "symbol": "line-ns-open"},
                ),
                row=2,
                col=1,
            )
    for row, name in enumerate(names, start=3):
        series_t, series_v = vitals[name]
        fig.add_trace(
            go.Scatter(
                x=list(series_t),
                y=list(series_v),
                mode="lines",
                name=name,
                line={"width": 1.5},
                connectgaps=False,
            ),
            row=row,
            col=1,
        )
    end_default = _latest(ecg, beats, vitals)
    for start, end, priority, text in alarms:
        style = ALARM_STYLES.get(priority, ALARM_STYLES["low"])
        fig.add_vrect(
            x0=start,
            x1=end or end_default or start,
            fillcolor=style.colour,
            opacity=0.25,
            line_width=0,
            annotation_text=f"{style.marker} {text}",
            annotation_position="top left",
        )
        fig.add_vline(x=start, line={"color": style.colour, "width": 1})
    _frame(fig, theme, height=180 + 110 * rows)
    dark = theme != "light"
    fig.update_layout(
        legend={"orientation": "h", "y": -0.05},
        hovermode="x",
        plot_bgcolor="#0b0f14" if dark else "#ffffff",
    )
    fig.update_xaxes(gridcolor="#2b3643" if dark else "#dde3ea")
    fig.update_yaxes(gridcolor="#2b3643" if dark else "#dde3ea")
    if x_range is not None:
        fig.update_xaxes(range=list(x_range))
    return fig


def trend_figure(
    vitals: Mapping[str, tuple[Sequence[datetime], Sequence[float | None]]],
    *,
    x_range: tuple[datetime, datetime] | None = None,
    theme: str = "dark",
) -> go.Figure:
    """A small trend of vital signs: one row per series that has at least one value.

    Parameters
    ----------
    vitals : mapping
        ``{"HR (bpm)": (times, values), "SpO2 (%)": ..., "Temp (°C)": ...}``;
        ``None`` values are gaps, and a series without any value is left out.
    x_range : (datetime, datetime), optional
        The time axis (for example the last 24 h); default: the data's extent.
    theme : {"dark", "light"}
        Colours around the plot.

    Returns
    -------
    plotly.graph_objects.Figure
        Empty (no rows, an annotation saying so) when no series has a value.

    Raises
    ------
    ValueError
        If a series' times and values differ in length.
    """
    rows: list[tuple[str, list[datetime], list[float | None]]] = []
    for name, (times, values) in vitals.items():
        if len(times) != len(values):
            raise ValueError(f"`{name}` has {len(times)} times and {len(values)} values")
        if any(v is not None and math.isfinite(v) for v in values):
            rows.append(
                (name, list(times), [v if v is not None and math.isfinite(v) else None for v in values])
            )
    dark = theme != "light"
    if not rows:
        fig = go.Figure()
        fig.add_annotation(text="No vital signs in this period", showarrow=False, x=0.5, y=0.5)
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    else:
        fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.06)
        for row, (name, times, values) in enumerate(rows, start=1):
            fig.add_trace(
                go.Scatter(
                    x=times,
                    y=values,
                    mode="lines+markers",
                    marker={"size": 3},
                    line={"width": 1.5, "color": _TREND_COLOURS.get(name, "#4da3ff")},
                    name=name,
                    connectgaps=False,
                ),
                row=row,
                col=1,
            )
            fig.update_yaxes(title={"text": name, "font": {"size": 11}}, row=row, col=1)
        if x_range is not None:
            fig.update_xaxes(range=list(x_range))
    grid = "#2a3440" if dark else "#d8dee6"
    fig.update_xaxes(gridcolor=grid)
    fig.update_yaxes(gridcolor=grid)
    fig.update_layout(
        height=70 + 90 * max(len(rows), 1),
        margin={"l": 8, "r": 8, "t": 8, "b": 8},
        showlegend=False,
        paper_bgcolor="#10151c" if dark else "#ffffff",
        plot_bgcolor="#0b0f14" if dark else "#ffffff",
        font={"color": "#e8edf2" if dark else "#1b1f24", "size": 11},
    )
    return fig


def beats_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV of beats: ``t, label, p_N .. p_Q, p_abnormal, p_early_alarm``."""
    return _csv(rows, ["t", "label", "p_N", "p_S", "p_V", "p_F", "p_Q", "p_abnormal", "p_early_alarm"])


def alarms_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """CSV of alarms: id, kind, priority, state, times, who acknowledged, detail."""
    return _csv(
        rows,
        [
            "id",
            "kind",
            "priority",
            "state",
            "started_at",
            "ended_at",
            "acknowledged_by",
            "acknowledged_at",
            "detail",
        ],
    )


# Internals -------------------------------------------------------------------


def _csv(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _csv_cell(v) for k, v in row.items()})
    return buffer.getvalue()


def _csv_cell(value: Any) -> Any:
    """ISO times; text that a spreadsheet would run as a formula is quoted (CSV injection)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@"):
        return "'" + value
    return value


def _paper_axes(
    fig: go.Figure,
    row: int,
    speed_mm_s: float,
    gain_mm_mv: float,
    y_range: tuple[float, float],
    *,
    x_range: tuple[float, float],
) -> None:
    """ECG paper on one row: 1 mm minor and 5 mm major grid, square millimetres."""
    mm_s = 1.0 / speed_mm_s  # seconds per millimetre
    mm_mv = 1.0 / gain_mm_mv  # millivolts per millimetre
    grid = {
        "showgrid": True,
        "gridcolor": _PAPER["major"],
        "gridwidth": 1,
        "zeroline": False,
        "showticklabels": False,
        "ticks": "",
        "fixedrange": True,
    }
    fig.update_xaxes(
        range=list(x_range),
        dtick=5 * mm_s,
        tick0=0,
        constrain="domain",
        minor={"dtick": mm_s, "showgrid": True, "gridcolor": _PAPER["minor"], "gridwidth": 0.5},
        row=row,
        col=1,
        **grid,
    )
    x_name = "x" if row == 1 else f"x{row}"
    fig.update_yaxes(
        range=list(y_range),
        dtick=5 * mm_mv,
        tick0=0,
        minor={"dtick": mm_mv, "showgrid": True, "gridcolor": _PAPER["minor"], "gridwidth": 0.5},
        scaleanchor=x_name,
        scaleratio=gain_mm_mv / speed_mm_s,
        constrain="domain",
        row=row,
        col=1,
        **grid,
    )


def _calibration_pulse(x0: float) -> tuple[list[float], list[float]]:
    """A 1 mV, 200 ms calibration mark starting at ``x0`` seconds."""
    return [x0, x0 + 0.04, x0 + 0.04, x0 + 0.24, x0 + 0.24, x0 + 0.28], [0, 0, 1, 1, 0, 0]


def _frame(fig: go.Figure, theme: str, *, height: int, title: str = "") -> None:
    dark = theme != "light"
    fig.update_layout(
        height=height,
        margin={"l": 8, "r": 8, "t": 36 if title else 8, "b": 8},
        title={"text": title, "font": {"size": 14}} if title else None,
        paper_bgcolor="#10151c" if dark else "#ffffff",
        plot_bgcolor=_PAPER["bg"],
        font={"color": "#e8edf2" if dark else "#1b1f24"},
    )


def _latest(
    ecg: tuple[Sequence[datetime], Sequence[float]] | None,
    beats: Sequence[tuple[datetime, str]],
    vitals: Mapping[str, tuple[Sequence[datetime], Sequence[float | None]]],
) -> datetime | None:
    """The newest time in any series (open alarms are shaded up to it)."""
    times: list[datetime] = []
    if ecg is not None and len(ecg[0]):
        times.append(ecg[0][-1])
    if beats:
        times.append(beats[-1][0])
    times += [series[0][-1] for series in vitals.values() if len(series[0])]
    return max(times) if times else None
