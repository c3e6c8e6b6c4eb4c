"""Patient live monitor: ECG on paper pushed over ``/live``, beats, vitals, alarms."""

from __future__ import annotations

from typing import Any

import dash
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html
from flask_login import current_user

from dashboard.access import AccessDeniedError, check_patient, current_db
from dashboard.components import ack_note_input, alarm_table, attrs, empty_state, vital_tile
from dashboard.figures import GAINS_MM_MV, MISSING, SPEEDS_MM_S, ecg_paper_figure
from dashboard.queries import alarm_rows, latest_stream

dash.register_page(
    __name__, path_template="/patient/<patient_id>", name="Patient", title="Patient · Cardiac Monitor"
)

_DEFAULT_LEADS = ("MLII", "V1")


def layout(patient_id: str | None = None, **_query: Any) -> html.Div:
    """The monitor of one patient, or a refusal when the patient is outside the user's scope."""
    pid = int(patient_id) if patient_id is not None and patient_id.isdigit() else -1
    try:
        with current_db().session() as session:
            patient = check_patient(session, current_user.id, current_user.role, pid)
            name = patient.name
            stream = latest_stream(session, pid)
    except AccessDeniedError:
        return empty_state("This patient is not available to you.")
    leads = stream.lead_names if stream is not None else _DEFAULT_LEADS
    fs = stream.fs if stream is not None else 360.0
    controls = html.Div(
        [
            html.Label(
                [
                    "Speed ",
                    dcc.RadioItems(
                        id="ecg-speed",
                        value=25.0,
                        inline=True,
                        className="cm-radio",
                        options=[{"label": f"{s:g} mm/s", "value": s} for s in SPEEDS_MM_S],
                    ),
                ]
            ),
            html.Label(
                [
                    "Gain ",
                    dcc.RadioItems(
                        id="ecg-gain",
                        value=10.0,
                        inline=True,
                        className="cm-radio",
                        options=[{"label": f"{g:g} mm/mV", "value": g} for g in GAINS_MM_MV],
                    ),
                ]
            ),
        ],
        className="cm-controls",
    )
    return html.Div(
        [
            html.Div(
                [
                    html.H1(name, className="cm-title"),
                    html.Div(id="live-status", className="cm-live-status", role="status"),
                ],
                className="cm-page-head",
            ),
            dcc.Store(id="ecg-meta", data={"leads": list(leads), "fs": fs}),
            controls,
            html.Div(
                dcc.Graph(
                    id="ecg-graph",
                    figure=_figure(leads, fs, 25.0, 10.0),
                    config={"displayModeBar": False, "responsive": True},
                ),
                className="cm-ecg",
            ),
            html.Div(
                [
                    vital_tile(
                        "HR",
                        MISSING,
                        "bpm",
                        element_id="live-hr",
                        tooltip="Heart rate from the ECG; the averaging method appears when data arrives",
                    ),
                    vital_tile("SpO2", MISSING, "%", element_id="live-spo2"),
                    vital_tile("Pulse", MISSING, "bpm", element_id="live-pulse"),
                    vital_tile("Temp", MISSING, "°C", element_id="live-temp"),
                    vital_tile(
                        "Signal",
                        MISSING,
                        "",
                        element_id="live-quality",
                        tooltip="Signal quality of the last analysis window",
                    ),
                ],
                className="cm-vitals cm-vitals-large",
            ),
            html.H2("Active alarms", className="cm-subtitle"),
            ack_note_input(current_user.role),
            dcc.Interval(id="patient-refresh", interval=2000),
            html.Div(id="patient-alarms", **attrs(aria_live="polite")),
        ],
        className="cm-page",
        **attrs(data_live_view="patient", data_patient_id=str(pid)),
    )


@callback(
    Output("ecg-graph", "figure"),
    Input("ecg-speed", "value"),
    Input("ecg-gain", "value"),
    State("ecg-meta", "data"),
    prevent_initial_call=True,
)
def rescale(speed: float, gain: float, meta: dict[str, Any]) -> go.Figure:
    """A new paper for the chosen speed and gain; ``live.js`` refills it from its buffer."""
    return _figure(tuple(meta["leads"]), float(meta["fs"]), float(speed), float(gain))


@callback(
    Output("patient-alarms", "children"),
    Input("patient-refresh", "n_intervals"),
    Input("ack-result", "data"),
    State("_pages_location", "pathname"),
)
def refresh_alarms(_n: int | None, _ack: Any, pathname: str | None) -> Any:
    """The patient's open alarms, with acknowledge buttons for clinicians."""
    pid_text = (pathname or "").rstrip("/").rsplit("/", 1)[-1]
    if not pid_text.isdigit():
        return dash.no_update
    with current_db().session() as session:
        rows = alarm_rows(
            session,
            current_user.id,
            current_user.role,
            patient_ids=[int(pid_text)],
            states=["active", "acknowledged"],
        )
    return alarm_table(rows, current_user.role, show_patient=False, empty="No active alarms.")


def _figure(leads: tuple[str, ...], fs: float, speed: float, gain: float) -> go.Figure:
    return ecg_paper_figure(leads, speed_mm_s=speed, gain_mm_mv=gain, fs=fs)
