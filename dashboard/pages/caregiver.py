"""My patients: a read-only card per patient of the user, with latest vitals, 24 h trends and alarms.

Made for caregivers (their landing page after login); other roles see the
patients of their own scope. Nothing here acknowledges or exports.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import dash
from dash import Input, Output, callback, dcc, html
from flask_login import current_user

from dashboard.access import current_db
from dashboard.components import alarm_history_table, attrs, empty_state, vital_tile
from dashboard.figures import format_value, trend_figure
from dashboard.queries import alarm_rows, patient_tiles
from storage import utcnow, vitals_between

dash.register_page(__name__, path="/my-patients", name="My patients", title="My patients · Cardiac Monitor")

#: How far back the trends and the alarm history reach.
WINDOW_H = 24.0
_ALARM_LIMIT = 50
_REFRESH_MS = 30_000

NO_PATIENTS = "No patient is assigned to you yet. Ask an administrator to assign your patients."


def layout(**_query: Any) -> html.Div:
    """The title and the cards (filled, and refreshed, by :func:`refresh`)."""
    return html.Div(
        [
            html.H1("My patients", className="cm-title"),
            html.P(
                f"Read-only view: the last {WINDOW_H:g} h of vital signs and alarms.", className="cm-muted"
            ),
            dcc.Interval(id="my-patients-refresh", interval=_REFRESH_MS),
            html.Div(id="my-patients-cards", className="cm-cards", **attrs(aria_live="polite")),
        ],
        className="cm-page",
    )


@callback(Output("my-patients-cards", "children"), Input("my-patients-refresh", "n_intervals"))
def refresh(_n: int | None) -> Any:
    """A card per visible patient: latest vitals, trend plot, alarm history."""

    end = utcnow()
    start = end - timedelta(hours=WINDOW_H)
    cards: list[Any] = []
    with current_db().session() as session:
        tiles = patient_tiles(session, current_user.id, current_user.role)
        for tile in tiles:
            vitals = list(vitals_between(session, tile.patient_id, start, end))
            alarms = alarm_rows(
                session,
                current_user.id,
                current_user.role,
                patient_ids=[tile.patient_id],
                since=start,
                limit=_ALARM_LIMIT,
            )
            times = [v.t for v in vitals]
            trends = {
                "HR (bpm)": (times, [v.hr_ecg if v.hr_ecg is not None else v.pulse for v in vitals]),
                "SpO2 (%)": (times, [v.spo2 for v in vitals]),
                "Temp (°C)": (times, [v.temperature for v in vitals]),
            }
            cards.append(_card(tile, trends, alarms, (start, end)))
    return cards or empty_state(NO_PATIENTS)


def _card(tile: Any, trends: Any, alarms: Any, x_range: Any) -> html.Section:
    pid = tile.patient_id
    return html.Section(
        [
            html.H2(tile.name, className="cm-subtitle cm-card-name"),
            html.Div(
                [
                    vital_tile("HR", format_value(tile.hr), "bpm"),
                    vital_tile("SpO2", format_value(tile.spo2), "%"),
                    vital_tile("Temp", format_value(tile.temperature, 1), "°C"),
                ],
                className="cm-vitals",
            ),
            dcc.Graph(
                id=f"my-patient-trend-{pid}",
                figure=trend_figure(trends, x_range=x_range),
                config={"displaylogo": False, "displayModeBar": False},
                className="cm-trend",
            ),
            html.H3("Alarm history", className="cm-card-section"),
            alarm_history_table(alarms, element_id=f"my-patient-alarms-{pid}"),
        ],
        id=f"my-patient-{pid}",
        className="cm-card",
        **attrs(data_patient=str(pid)),
    )
