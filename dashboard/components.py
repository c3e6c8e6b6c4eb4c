"""Reusable pieces of layout: navigation, tiles, alarm badges and tables, the login page.

Functions here build Dash components from plain values (the dataclasses of
:mod:`dashboard.queries`); they read no database and no request, so the
unit tests call them directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from dashboard.access import can_acknowledge, can_administer
from dashboard.figures import MISSING, alarm_style, beat_summary, format_age, format_value, is_stale

__all__ = [
    "EMPTY_PATIENTS",
    "INDEX_STRING",
    "LOGIN_PAGE",
    "PUBLIC_STYLESHEETS",
    "THEME_SCRIPT",
    "ack_note_input",
    "alarm_badge",
    "alarm_history_table",
    "alarm_table",
    "attrs",
    "data_table",
    "empty_state",
    "navbar",
    "patient_tile",
    "secret_notice",
    "vital_tile",
]

#: What the central station says when there is nobody to show.
EMPTY_PATIENTS = (
    "No patients yet: start a replay with `cardiac-monitor serve --demo 100,208` "
    "or `cardiac-monitor replay 100`, or ask an administrator to assign patients to you."
)

#: Sets Bootstrap's ``data-bs-theme`` on ``<html>`` from the browser's stored choice before the first
#: paint (no flash of the wrong theme); ``assets/live.js`` toggles it and stores ``cm-theme``.
THEME_SCRIPT = (
    "<script>(function(){var t='dark';try{t=localStorage.getItem('cm-theme')==='light'?'light':'dark';}"
    "catch(e){}document.documentElement.setAttribute('data-bs-theme',t);})();</script>"
)

#: Dash's page template with the theme attribute and :data:`THEME_SCRIPT`.
INDEX_STRING = f"""<!DOCTYPE html>
<html lang="en" data-bs-theme="dark">
    <head>
        {{%metas%}}
        <title>{{%title%}}</title>
        {{%favicon%}}
        {THEME_SCRIPT}
        {{%css%}}
    </head>
    <body>
        {{%app_entry%}}
        <footer>
            {{%config%}}
            {{%scripts%}}
            {{%renderer%}}
        </footer>
    </body>
</html>"""

#: The static stylesheets the login page links; they carry no patient data, so the guard serves
#: them without a session (see :mod:`dashboard.factory`).
PUBLIC_STYLESHEETS = ("/assets/bootstrap.min.css", "/assets/monitor.css")

#: The login page: a plain Flask page (it works without the Dash bundles), styled by the same
#: Bootstrap and monitor stylesheets as the app, in the browser's stored theme.
LOGIN_PAGE = (
    """<!doctype html>
<html lang="en" data-bs-theme="dark"><head><meta charset="utf-8"><title>Sign in · Cardiac Monitor</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
"""
    + THEME_SCRIPT
    + "".join(f'\n<link rel="stylesheet" href="{href}">' for href in PUBLIC_STYLESHEETS)
    + """
</head>
<body class="cm-login">
<main class="card cm-login-card">
<form method="post" id="login-form" autocomplete="off" class="card-body">
<h1 class="cm-login-title"><span class="cm-logo" aria-hidden="true">&#9829;</span> Cardiac Monitor</h1>
{{ form.csrf_token }}
<div class="mb-3"><label for="username" class="form-label">Username</label>
{{ form.username(id="username", autofocus=true, class_="form-control form-control-lg") }}</div>
<div class="mb-3"><label for="password" class="form-label">Password</label>
{{ form.password(id="password", class_="form-control form-control-lg") }}</div>
<button type="submit" id="login-button" class="btn btn-ack btn-lg w-100">Sign in</button>
{% if message %}
<div class="alert alert-danger mt-3 mb-0" id="login-error" role="alert">{{ message }}</div>
{% endif %}
</form></main></body></html>"""
)


def attrs(**values: str) -> dict[str, Any]:
    """``data-*`` and ``aria-*`` attributes for Dash components (``data_patient`` -> ``data-patient``)."""
    return {key.replace("_", "-"): value for key, value in values.items()}


def navbar(user: Any | None, csrf_token: str = "") -> html.Header:
    """The top bar: links by role, theme and sound switches, the user, logout (a CSRF-protected POST)."""
    links = [("Central station", "/"), ("Alarms", "/alarms"), ("History", "/history")]
    if user is not None and user.role == "caregiver":
        links.insert(0, ("My patients", "/my-patients"))
    if user is not None and can_administer(user.role):
        links.append(("Admin", "/admin"))
    who = f"{user.display_name} · {user.role}" if user is not None else ""
    return html.Header(
        [
            # The first Tab stop: past the navigation to the page (Dash's page container).
            html.A("Skip to content", href="#_pages_content", className="visually-hidden-focusable cm-skip"),
            html.Div([html.Span("♥", className="cm-logo"), " Cardiac Monitor"], className="cm-brand"),
            html.Nav(
                [dcc.Link(text, href=href, className="cm-navlink") for text, href in links],
                className="cm-nav",
            ),
            html.Div(
                [
                    html.Button(
                        "Sound off",
                        id="cm-sound-toggle",
                        className="btn btn-outline",
                        title="Enable audible alarms",
                        **attrs(data_sound="off"),
                    ),
                    html.Button(
                        "Light",
                        id="cm-theme-toggle",
                        type="button",
                        className="btn btn-outline",
                        title="Switch between dark and light theme (remembered in this browser)",
                        **attrs(aria_pressed="false"),
                    ),
                    html.Span(who, id="cm-user", className="cm-user"),
                    html.Form(
                        [
                            dcc.Input(type="hidden", name="csrf_token", value=csrf_token, id="logout-csrf"),
                            html.Button(
                                "Log out", type="submit", id="logout-button", className="btn btn-outline"
                            ),
                        ],
                        method="post",
                        action="/logout",
                        id="logout-form",
                    ),
                ],
                className="cm-tools",
            ),
        ],
        className="cm-navbar",
    )


def ack_note_input(role: str) -> dcc.Input:
    """The optional note of an acknowledgement; hidden (but present) for roles that cannot acknowledge."""
    return dcc.Input(
        id="ack-note",
        type="text",
        placeholder="Note for the acknowledgement (optional)",
        className="form-control cm-note",
        maxLength=500,
        style=None if can_acknowledge(role) else {"display": "none"},
    )


def empty_state(text: str) -> html.Div:
    """A friendly placeholder for an empty list."""
    return html.Div(text, className="cm-empty", role="status")


def data_table(
    head: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    table_id: str | None = None,
    empty: str = "None yet.",
) -> html.Div:
    """A plain table of text and components, one list of cells per row; without rows, ``empty`` says so.

    Examples
    --------
    >>> data_table(["User", "Role"], [["ada", "admin"]], table_id="users-table").children.id
    'users-table'
    """
    if not rows:
        return empty_state(empty)
    props: dict[str, Any] = {"className": "table cm-table"}
    if table_id is not None:
        props["id"] = table_id
    return html.Div(
        html.Table(
            [
                html.Thead(html.Tr([html.Th(h) for h in head])),
                html.Tbody([html.Tr([html.Td(c) for c in row]) for row in rows]),
            ],
            **props,
        ),
        className="cm-table-wrap",
    )


def secret_notice(text: str, secret: str, *, element_id: str) -> html.Div:
    """A secret shown once, when it is issued (a device or API token), below ``text``."""
    return html.Div([html.Div(text), html.Div(secret, className="cm-secret", id=element_id)])


def alarm_badge(priority: str, text: str, *, acknowledged: bool = False) -> html.Span:
    """An alarm with its IEC 60601-1-8 colour and marker (high ones flash until acknowledged)."""
    style = alarm_style(priority)
    classes = f"cm-alarm {style.css_class}" + (" acknowledged" if acknowledged else "")
    return html.Span(
        [html.B(style.marker), " ", text], className=classes, **attrs(data_alarm_priority=str(priority))
    )


def vital_tile(
    label: str, value: str, unit: str, *, tooltip: str = "", element_id: str | None = None
) -> html.Div:
    """A big, readable vital-sign number with its label and unit."""
    props: dict[str, Any] = {"className": "cm-vital", "title": tooltip}
    if element_id is not None:
        props["id"] = element_id
    return html.Div(
        [
            html.Div(label, className="cm-vital-label"),
            html.Div(value, className="cm-vital-value"),
            html.Div(unit, className="cm-vital-unit"),
        ],
        **props,
    )


def patient_tile(tile: Any, now: datetime) -> html.A:
    """A central-station tile (:class:`dashboard.queries.PatientTile`)."""
    stale = is_stale(tile.last_seen, now)
    age = (now - tile.last_seen).total_seconds() if tile.last_seen is not None else None
    header = [html.Span(tile.name, className="cm-tile-name")]
    if tile.replay:
        header.append(
            html.Span("REPLAY", className="cm-tag", title="A replayed recording, not a live patient")
        )
    alarm = (
        alarm_badge(
            tile.top_alarm.priority, tile.top_alarm.kind, acknowledged=tile.top_alarm.state == "acknowledged"
        )
        if tile.top_alarm is not None
        else html.Span("no active alarm", className="cm-muted")
    )
    device = tile.device or "no device"
    if tile.battery is not None:
        device += f" · battery {tile.battery:.0f}%"
    return html.A(
        [
            html.Div(header, className="cm-tile-head"),
            html.Canvas(
                className="cm-mini", width=320, height=60, **attrs(data_mini_patient=str(tile.patient_id))
            ),
            html.Div(
                [
                    vital_tile(
                        "HR",
                        format_value(tile.hr),
                        "bpm",
                        tooltip="Heart rate from the ECG: mean of the RR intervals over the last beats",
                    ),
                    vital_tile("SpO2", format_value(tile.spo2), "%"),
                    vital_tile("Temp", format_value(tile.temperature, 1), "°C"),
                ],
                className="cm-vitals",
            ),
            html.Div(
                [
                    html.Span(beat_summary(tile.beat_counts), title="Beats in the last minute"),
                    _signal_badge(tile.signal, stale=stale),
                ],
                className="cm-beats",
            ),
            html.Div(alarm, className="cm-tile-alarm"),
            html.Div(
                [
                    html.Span(device),
                    html.Span(("stale · " if stale else "") + format_age(age), className="cm-age"),
                ],
                className="cm-tile-foot",
            ),
        ],
        href=f"/patient/{tile.patient_id}",
        className="cm-tile" + (" stale" if stale else ""),
        id=f"tile-{tile.patient_id}",
        **attrs(data_patient=str(tile.patient_id)),
    )


def _signal_badge(signal: str | None, *, stale: bool) -> html.Span:
    """Signal quality on a tile: good, the open technical problems, or unknown (no or stale data)."""
    if signal is None or stale:
        text, css = f"signal {MISSING}", "cm-signal"
    elif signal == "good":
        text, css = "signal good", "cm-signal cm-signal-good"
    else:
        text, css = f"signal: {signal}", "cm-signal cm-signal-bad"
    return html.Span(text, className=css, title="Signal quality (technical alarms of the analysis)")


def alarm_table(
    rows: Sequence[Any], role: str, *, show_patient: bool = True, empty: str = "No alarms match."
) -> html.Div:
    """Alarms (:class:`dashboard.queries.AlarmRow`) with acknowledge controls for clinicians.

    The acknowledge buttons carry pattern-matching ids ``{"type": "ack",
    "alarm": id}``; the server checks the role again when one is pressed.
    Without rows, the ``empty`` text says so.
    """
    if not rows:
        return empty_state(empty)
    ack = can_acknowledge(role)
    head = [
        "Priority",
        *(["Patient"] if show_patient else []),
        "Alarm",
        "Started",
        "State",
        "Acknowledged",
        "",
    ]
    body = []
    for row in rows:
        actions: list[Any] = [
            dbc.Button(
                "Strip",
                id={"type": "strip", "alarm": row.id},
                size="sm",
                className="btn btn-outline",
                n_clicks=0,
            )
        ]
        if ack and row.state == "active":
            actions.insert(
                0,
                dbc.Button(
                    "Acknowledge",
                    id={"type": "ack", "alarm": row.id},
                    size="sm",
                    className="btn btn-ack",
                    n_clicks=0,
                ),
            )
        acked = f"{row.acknowledged_by} {row.acknowledged_at:%H:%M:%S}" if row.acknowledged_at else ""
        cells: list[Any] = [
            alarm_badge(row.priority, row.priority, acknowledged=row.state != "active"),
            *([dcc.Link(row.patient_name, href=f"/patient/{row.patient_id}")] if show_patient else []),
            f"{row.kind} {row.detail}".strip(),
            f"{row.started_at:%Y-%m-%d %H:%M:%S}",
            html.Span(row.state, className=f"cm-state cm-state-{row.state}"),
            acked,
            html.Div(actions, className="cm-actions"),
        ]
        body.append(
            html.Tr([html.Td(c) for c in cells], id=f"alarm-row-{row.id}", **attrs(data_state=str(row.state)))
        )
    return html.Div(
        html.Table(
            [html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)], className="table cm-table"
        ),
        className="cm-table-wrap",
    )


def alarm_history_table(rows: Sequence[Any], *, element_id: str | None = None) -> html.Div:
    """A read-only alarm history (:class:`dashboard.queries.AlarmRow`, newest first): no buttons.

    Each row shows the priority with its IEC colour and marker, the alarm,
    when it started, its state, and when and by whom it was acknowledged.
    """
    props: dict[str, Any] = {"className": "cm-table-wrap"}
    if element_id is not None:
        props["id"] = element_id
    if not rows:
        return html.Div(empty_state("No alarms in this period."), **props)
    head = ["Priority", "Alarm", "Started", "State", "Acknowledged"]
    body = []
    for row in sorted(rows, key=lambda r: (r.started_at, r.id), reverse=True):
        acked = (
            f"{row.acknowledged_at:%Y-%m-%d %H:%M:%S} by {row.acknowledged_by or 'unknown'}"
            if row.acknowledged_at is not None
            else ""
        )
        cells: list[Any] = [
            alarm_badge(row.priority, row.priority, acknowledged=row.state != "active"),
            f"{row.kind} {row.detail}".strip(),
            f"{row.started_at:%Y-%m-%d %H:%M:%S}",
            html.Span(row.state, className=f"cm-state cm-state-{row.state}"),
            acked,
        ]
        body.append(
            html.Tr(
                [html.Td(c) for c in cells],
                id=f"history-row-{row.id}",
                **attrs(data_state=str(row.state)),
            )
        )
    return html.Div(
        html.Table(
            [html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(body)], className="table cm-table"
        ),
        **props,
    )
