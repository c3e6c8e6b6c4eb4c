"""Central station: a tile per patient the user may see, with a live mini-trace."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, callback, dcc, html
from flask_login import current_user

from dashboard.access import current_db
from dashboard.components import EMPTY_PATIENTS, attrs, empty_state, patient_tile
from dashboard.queries import patient_tiles
from storage import utcnow

dash.register_page(__name__, path="/", name="Central station", title="Central station · Cardiac Monitor")


def layout(**_query: Any) -> html.Div:
    """Tiles, refreshed from storage; the mini-traces come over ``/live`` (``assets/live.js``)."""
    return html.Div(
        [
            html.H1("Central station", className="cm-title"),
            html.Div(id="live-status", className="cm-live-status", role="status"),
            dcc.Interval(id="central-refresh", interval=2000),
            html.Div(tiles(), id="central-tiles", className="cm-tiles"),
        ],
        className="cm-page",
        **attrs(data_live_view="central"),
    )


@callback(dash.Output("central-tiles", "children"), Input("central-refresh", "n_intervals"))
def refresh(_n: int | None) -> list[Any]:
    """Re-read the tiles (vitals, beats, alarms, device state) from storage."""
    return tiles()


def tiles() -> list[Any]:
    """The tiles of the logged-in user's patients, or the empty state."""
    with current_db().session() as session:
        rows = patient_tiles(session, current_user.id, current_user.role)
    now = utcnow()
    return [patient_tile(row, now) for row in rows] or [empty_state(EMPTY_PATIENTS)]
