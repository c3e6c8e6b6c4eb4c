"""History review: full disclosure of a patient over a time range, zoom to 25 mm/s, exports."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import dash
from dash import Input, Output, State, callback, clientside_callback, dcc, html
from flask_login import current_user

from dashboard.access import AccessDeniedError, can_export, check_patient, current_db, visible_patients
from dashboard.components import attrs, empty_state
from dashboard.figures import alarms_csv, beats_csv, history_figure, strip_figure
from dashboard.queries import beat_points, ecg_envelope, ecg_window
from storage import alarms_between, append_audit, utcnow, vitals_between

dash.register_page(__name__, path="/history", name="History", title="History · Cardiac Monitor")

_DURATIONS = {"10 min": 600, "1 h": 3600, "6 h": 6 * 3600, "24 h": 24 * 3600}
_OVERVIEW_POINTS = 1500  # min/max pairs across the range, whatever its length
_STRIP_S = 10.0


def layout(**_query: Any) -> html.Div:
    """Patient, range, overview, the zoomed strip and the exports."""
    with current_db().session() as session:
        patients: list[dict[str, Any]] = [
            {"label": p.name, "value": p.id}
            for p in visible_patients(session, current_user.id, current_user.role)
        ]
    if not patients:
        return empty_state("No patients to review.")
    # The field holds whole minutes: start a minute later so that the default hour reaches now.
    start = (utcnow() - timedelta(minutes=59)).strftime("%Y-%m-%dT%H:%M")
    exports = (
        [
            html.Button("Beats CSV", id="export-beats", className="btn", n_clicks=0),
            html.Button("Alarms CSV", id="export-alarms", className="btn", n_clicks=0),
            html.Button("Strip PNG", id="export-png", className="btn", n_clicks=0),
        ]
        if can_export(current_user.role)
        else []
    )
    return html.Div(
        [
            html.H1("History", className="cm-title"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="history-patient",
                        options=patients,
                        value=patients[0]["value"],
                        clearable=False,
                        className="cm-filter",
                    ),
                    html.Label(
                        [
                            "Start (UTC) ",
                            dcc.Input(
                                id="history-start",
                                type="text",
                                value=start,
                                placeholder="YYYY-MM-DDTHH:MM",
                                className="form-control cm-datetime",
                            ),
                        ]
                    ),
                    dcc.Dropdown(
                        id="history-duration",
                        value="1 h",
                        clearable=False,
                        className="cm-filter-small",
                        options=[{"label": k, "value": k} for k in _DURATIONS],
                    ),
                    html.Button("Show", id="history-show", className="btn btn-ack", n_clicks=0),
                    *exports,
                ],
                className="cm-filters",
            ),
            dcc.Store(id="history-range"),
            dcc.Store(id="history-png-done"),
            dcc.Download(id="history-download"),
            dcc.Loading(html.Div(id="history-overview", **attrs(aria_live="polite"))),
            html.P("Click the overview to see 10 s at 25 mm/s.", className="cm-muted"),
            html.Div(id="history-strip"),
        ],
        className="cm-page",
    )


@callback(
    Output("history-overview", "children"),
    Output("history-range", "data"),
    Input("history-show", "n_clicks"),
    State("history-patient", "value"),
    State("history-start", "value"),
    State("history-duration", "value"),
)
def show(_n: int, patient_id: int, start_text: str | None, duration: str) -> tuple[Any, Any]:
    """The overview of the range: ECG envelope, beats, alarms and vitals on one time axis."""
    start = _parse_start(start_text)
    end = start + timedelta(seconds=_DURATIONS.get(duration, 3600))
    bin_s = max((end - start).total_seconds() / _OVERVIEW_POINTS, 0.01)
    try:
        with current_db().session() as session:
            check_patient(session, current_user.id, current_user.role, patient_id)
            ecg = ecg_envelope(session, patient_id, start, end, bin_s=bin_s)
            beats = [(b.t, b.label) for b in beat_points(session, patient_id, start, end)]
            alarms = [
                (a.started_at, a.ended_at, a.priority.value, f"{a.kind} #{a.id}")
                for a in alarms_between(session, patient_id, start, end)
            ]
            vitals = list(vitals_between(session, patient_id, start, end))
    except AccessDeniedError:
        return empty_state("This patient is not available to you."), None
    if not ecg[0] and not beats and not alarms and not vitals:
        return empty_state("Nothing recorded in this range."), None
    trends = {
        "HR (bpm)": ([v.t for v in vitals], [v.hr_ecg if v.hr_ecg is not None else v.pulse for v in vitals]),
        "SpO2 (%)": ([v.t for v in vitals], [v.spo2 for v in vitals]),
        "Temp (°C)": ([v.t for v in vitals], [v.temperature for v in vitals]),
    }
    figure = history_figure(ecg if ecg[0] else None, beats, alarms, trends, x_range=(start, end))
    rng = {"patient": patient_id, "start": start.isoformat(), "end": end.isoformat()}
    return dcc.Graph(id="history-graph", figure=figure, config={"displaylogo": False}), rng


@callback(
    Output("history-strip", "children"),
    Input("history-graph", "clickData"),
    State("history-range", "data"),
    prevent_initial_call=True,
)
def zoom(click: dict[str, Any] | None, rng: dict[str, Any] | None) -> Any:
    """Ten seconds of ECG at 25 mm/s around the clicked time, read from storage."""
    if not click or not rng:
        raise dash.exceptions.PreventUpdate
    centre = datetime.fromisoformat(str(click["points"][0]["x"]).replace(" ", "T"))
    centre = centre if centre.tzinfo is not None else centre.replace(tzinfo=UTC)
    start = centre - timedelta(seconds=_STRIP_S / 2)
    end = centre + timedelta(seconds=_STRIP_S / 2)
    patient_id = int(rng["patient"])
    try:
        with current_db().session() as session:
            check_patient(session, current_user.id, current_user.role, patient_id)
            window = ecg_window(session, patient_id, start, end)
            beats = [
                ((b.t - start).total_seconds(), b.label) for b in beat_points(session, patient_id, start, end)
            ]
    except AccessDeniedError:
        return empty_state("This patient is not available to you.")
    if window is None:
        return empty_state("No ECG stored at this time.")
    title = f"{start:%Y-%m-%d %H:%M:%S} UTC · 25 mm/s · 10 mm/mV"
    figure = strip_figure(window.t, window.values, window.lead_names, beats=beats, title=title)
    return dcc.Graph(id="history-strip-graph", figure=figure, config={"displaylogo": False})


@callback(
    Output("history-download", "data"),
    Input("export-beats", "n_clicks"),
    Input("export-alarms", "n_clicks"),
    State("history-range", "data"),
    prevent_initial_call=True,
)
def export_csv(_beats: int, _alarms: int, rng: dict[str, Any] | None) -> dict[str, Any]:
    """The range's beats or alarms as CSV (clinicians and admins; audited)."""
    what = "beats" if dash.ctx.triggered_id == "export-beats" else "alarms"
    if not rng or not can_export(current_user.role):
        raise dash.exceptions.PreventUpdate
    patient_id = int(rng["patient"])
    start, end = datetime.fromisoformat(rng["start"]), datetime.fromisoformat(rng["end"])
    with current_db().session() as session:
        check_patient(session, current_user.id, current_user.role, patient_id)
        if what == "beats":
            rows = [
                {
                    "t": b.t,
                    "label": b.label,
                    **{f"p_{k}": v for k, v in b.probabilities.items()},
                    "p_abnormal": b.p_abnormal,
                    "p_early_alarm": b.p_early_alarm,
                }
                for b in beat_points(session, patient_id, start, end)
            ]
            content = beats_csv(rows)
        else:
            rows = [
                {
                    "id": a.id,
                    "kind": a.kind,
                    "priority": a.priority.value,
                    "state": a.state.value,
                    "started_at": a.started_at,
                    "ended_at": a.ended_at,
                    "acknowledged_by": a.acknowledged_by_id,
                    "acknowledged_at": a.acknowledged_at,
                    "detail": a.detail,
                }
                for a in alarms_between(session, patient_id, start, end)
            ]
            content = alarms_csv(rows)
        append_audit(
            session,
            current_user.actor,
            f"export.{what}_csv",
            target=f"patient:{patient_id}",
            details={"start": rng["start"], "end": rng["end"], "rows": len(rows)},
        )
    return {"content": content, "filename": f"patient-{patient_id}-{what}-{start:%Y%m%dT%H%M}.csv"}


# The PNG is drawn in the browser by plotly.js; the server only records that it was exported.
clientside_callback(
    """function (n) {
        const gd = document.querySelector('#history-strip-graph .js-plotly-plot');
        if (n && gd && window.Plotly) {
            window.Plotly.downloadImage(gd, {format: 'png', filename: 'ecg-strip'});
        }
        return n;
    }""",
    Output("history-png-done", "data"),
    Input("export-png", "n_clicks"),
    prevent_initial_call=True,
)


@callback(
    Output("history-png-done", "clear_data"),
    Input("export-png", "n_clicks"),
    State("history-range", "data"),
    prevent_initial_call=True,
)
def audit_png(_n: int, rng: dict[str, Any] | None) -> bool:
    """Record the strip export in the audit log."""
    if not can_export(current_user.role):
        raise dash.exceptions.PreventUpdate
    with current_db().session() as session:
        append_audit(
            session, current_user.actor, "export.strip_png", target=f"patient:{(rng or {}).get('patient')}"
        )
    return False


def _parse_start(text: str | None) -> datetime:
    """The start field (``YYYY-MM-DDTHH:MM``, UTC); an empty or bad value means an hour ago."""
    try:
        return datetime.fromisoformat(text or "").replace(tzinfo=UTC)
    except ValueError:
        return utcnow() - timedelta(hours=1)
