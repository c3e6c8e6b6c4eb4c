"""Alarms: every alarm of the user's patients, filters, acknowledgement, event strips."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dash
from dash import ALL, Input, Output, State, callback, ctx, dcc, html
from flask_login import current_user

from dashboard.access import AccessDeniedError, can_export, current_db, visible_patients
from dashboard.components import ack_note_input, alarm_table, attrs, empty_state
from dashboard.figures import strip_figure
from dashboard.queries import acknowledge, alarm_history, alarm_rows, beat_points, ecg_window
from storage import Alarm, utcnow

dash.register_page(__name__, path="/alarms", name="Alarms", title="Alarms · Cardiac Monitor")

_SINCE = {"1 h": 1.0, "6 h": 6.0, "24 h": 24.0, "7 days": 168.0, "all": None}
_STRIP_HALF_S = 5.0


def layout(**_query: Any) -> html.Div:
    """Filters, the alarm list, and the selected alarm's strip and history."""
    with current_db().session() as session:
        patients = [
            {"label": p.name, "value": p.id}
            for p in visible_patients(session, current_user.id, current_user.role)
        ]
    return html.Div(
        [
            html.H1("Alarms", className="cm-title"),
            html.Div(
                [
                    dcc.Dropdown(
                        id="alarm-patients",
                        options=patients,
                        multi=True,
                        placeholder="All patients",
                        className="cm-filter",
                    ),
                    dcc.Checklist(
                        id="alarm-priorities",
                        value=["high", "medium", "low"],
                        inline=True,
                        options=[{"label": p, "value": p} for p in ("high", "medium", "low")],
                    ),
                    dcc.Checklist(
                        id="alarm-states",
                        value=["active", "acknowledged", "resolved"],
                        inline=True,
                        options=[{"label": s, "value": s} for s in ("active", "acknowledged", "resolved")],
                    ),
                    dcc.Dropdown(
                        id="alarm-since",
                        value="24 h",
                        clearable=False,
                        className="cm-filter-small",
                        options=[
                            {"label": f"last {k}" if k != "all" else "all time", "value": k} for k in _SINCE
                        ],
                    ),
                ],
                className="cm-filters",
            ),
            ack_note_input(current_user.role),
            dcc.Interval(id="alarms-refresh", interval=3000),
            html.Div(id="alarm-list", **attrs(aria_live="polite")),
            html.Div(id="alarm-detail", className="cm-detail"),
        ],
        className="cm-page",
    )


@callback(
    Output("alarm-list", "children"),
    Input("alarms-refresh", "n_intervals"),
    Input("alarm-patients", "value"),
    Input("alarm-priorities", "value"),
    Input("alarm-states", "value"),
    Input("alarm-since", "value"),
    Input("ack-result", "data"),
)
def refresh(
    _n: int | None,
    patients: list[int] | None,
    priorities: list[str],
    states: list[str],
    since: str,
    _ack: Any,
) -> Any:
    """The filtered list, newest first."""
    hours = _SINCE.get(since)
    start = utcnow() - timedelta(hours=hours) if hours is not None else None
    with current_db().session() as session:
        rows = alarm_rows(
            session,
            current_user.id,
            current_user.role,
            patient_ids=patients or None,
            priorities=priorities or ["none"],
            states=states or ["none"],
            since=start,
        )
    return alarm_table(rows, current_user.role)


@callback(
    Output("ack-result", "data"),
    Input({"type": "ack", "alarm": ALL}, "n_clicks"),
    State("ack-note", "value"),
    prevent_initial_call=True,
)
def acknowledge_clicked(clicks: list[int | None], note: str | None) -> dict[str, Any]:
    """Acknowledge the pressed alarm; the server checks role and scope (forged requests fail)."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks):
        raise dash.exceptions.PreventUpdate
    alarm_id = int(trigger["alarm"])
    try:
        acknowledge(current_db(), current_user.id, current_user.role, alarm_id, note=note, at=utcnow())
    except AccessDeniedError:
        return {"alarm": alarm_id, "ok": False, "error": "not allowed"}
    except ValueError as exc:
        return {"alarm": alarm_id, "ok": False, "error": str(exc)}
    return {"alarm": alarm_id, "ok": True}


@callback(
    Output("alarm-detail", "children"),
    Input({"type": "strip", "alarm": ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def show_strip(clicks: list[int | None]) -> Any:
    """A 10-second strip around the alarm with a line at its time, and its history."""
    trigger = ctx.triggered_id
    if not isinstance(trigger, dict) or not any(clicks):
        raise dash.exceptions.PreventUpdate
    alarm_id = int(trigger["alarm"])
    db = current_db()
    try:
        with db.session() as session:
            history = alarm_history(session, current_user.id, current_user.role, alarm_id)
            alarm = session.get(Alarm, alarm_id)
            if alarm is None:
                raise AccessDeniedError(f"alarm {alarm_id} vanished")
            start = alarm.started_at - timedelta(seconds=_STRIP_HALF_S)
            end = alarm.started_at + timedelta(seconds=_STRIP_HALF_S)
            window = ecg_window(session, alarm.patient_id, start, end)
            beats = [
                ((b.t - start).total_seconds(), b.label)
                for b in beat_points(session, alarm.patient_id, start, end)
            ]
            title = f"{alarm.kind} · {alarm.priority.value} · {alarm.started_at:%Y-%m-%d %H:%M:%S}"
    except AccessDeniedError:
        return empty_state("This alarm is not available to you.")
    strip: Any = (
        dcc.Graph(
            id="alarm-strip",
            figure=strip_figure(
                window.t, window.values, window.lead_names, marker_s=_STRIP_HALF_S, beats=beats, title=title
            ),
            config={"displaylogo": False},
        )
        if window is not None
        else empty_state("No ECG stored around this alarm.")
    )
    return [
        html.H2(f"Alarm {alarm_id}", className="cm-subtitle"),
        html.A(
            "PDF report",
            href=f"/alarms/{alarm_id}/report.pdf",
            download=f"alarm-{alarm_id}-report.pdf",
            id="alarm-report-link",
            className="btn btn-outline",
        )
        if can_export(current_user.role)
        else None,
        strip,
        html.Ol([html.Li(f"{t:%Y-%m-%d %H:%M:%S} — {text}") for t, text in history], id="alarm-history"),
    ]
