"""EHR access: the bearer tokens of the read-only FHIR API (issue once, list, revoke). Admins only."""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html
from flask_login import current_user
from sqlalchemy import select

from dashboard.access import can_administer, current_db
from dashboard.components import data_table, empty_state, secret_notice
from dashboard.fhir_api import FHIR_PREFIX
from dashboard.pages._admin import action_outputs, done, pressed_id, refused, require_admin
from storage import User, issue_api_token, list_api_tokens, revoke_api_token

dash.register_page(__name__, path="/admin/ehr", name="EHR access", title="EHR access · Cardiac Monitor")


def layout(**_query: Any) -> html.Div:
    """The issue form and the token table; every action is checked again on the server."""
    if not can_administer(current_user.role):
        return empty_state("Administrators only.")
    return html.Div(
        [
            html.H1("EHR access (FHIR API)", className="cm-title"),
            html.P(
                [
                    "EHR systems read ",
                    html.Code(f"GET {FHIR_PREFIX}/{{Patient|Device|Observation|DiagnosticReport}}"),
                    " (FHIR R4B) with ",
                    html.Code("Authorization: Bearer <token>"),
                    ". A token is shown once, when it is issued; only its SHA-256 is kept. "
                    "A ward limits it to that ward's patients.",
                ],
                className="cm-muted",
            ),
            dcc.Store(id="ehr-changed"),
            html.Div(
                [
                    dcc.Input(id="ehr-token-name", placeholder="client name", className="form-control"),
                    dcc.Input(
                        id="ehr-token-ward",
                        placeholder="ward (empty: every patient)",
                        className="form-control",
                    ),
                    html.Button("Issue token", id="ehr-issue", className="btn btn-ack", n_clicks=0),
                ],
                className="cm-form",
            ),
            html.Div(id="ehr-message", role="status"),
            html.H2("Tokens", className="cm-subtitle"),
            html.Div(id="ehr-tokens"),
        ],
        className="cm-page",
    )


@callback(Output("ehr-tokens", "children"), Input("ehr-changed", "data"))
def tokens(_changed: Any) -> Any:
    """Every token, live and revoked, with who issued it and when it was last used."""
    require_admin()
    with current_db().session() as session:
        names = dict(session.execute(select(User.id, User.username)).all())
        rows = [
            [
                t.name,
                t.ward or "every patient",
                names.get(t.created_by_id or -1, "cli"),
                f"{t.created_at:%Y-%m-%d %H:%M}",
                f"{t.last_used_at:%Y-%m-%d %H:%M:%S}" if t.last_used_at else "never",
                f"revoked {t.revoked_at:%Y-%m-%d %H:%M}"
                if t.revoked_at
                else html.Button(
                    "Revoke", id={"type": "ehr-revoke", "token": t.name}, className="btn", n_clicks=0
                ),
            ]
            for t in list_api_tokens(session)
        ]
    head = ["Client", "Scope", "Issued by", "Issued (UTC)", "Last used (UTC)", ""]
    return data_table(head, rows, table_id="ehr-token-table", empty="No tokens yet.")


@callback(
    *action_outputs("ehr"),
    Input("ehr-issue", "n_clicks"),
    State("ehr-token-name", "value"),
    State("ehr-token-ward", "value"),
    prevent_initial_call=True,
)
def issue(_n: int, name: str | None, ward: str | None) -> Any:
    """Issue a token (audited); it is shown here once and never again."""
    require_admin()
    try:
        with current_db().session() as session:
            row, secret = issue_api_token(
                session, name or "", actor=current_user.actor, ward=ward, created_by_id=current_user.id
            )
            label = row.name
    except ValueError as exc:
        return refused(exc)
    message = secret_notice(
        f"Token for {label} issued. Copy it now; it is not shown again:", secret, element_id="ehr-token"
    )
    return done(message)


@callback(
    *action_outputs("ehr"),
    Input({"type": "ehr-revoke", "token": dash.ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def revoke(_clicks: list[int | None]) -> Any:
    """Revoke the token whose button was pressed (audited)."""
    require_admin()
    trigger = pressed_id()
    try:
        with current_db().session() as session:
            revoke_api_token(session, str(trigger["token"]), actor=current_user.actor)
    except LookupError as exc:
        return refused(exc)
    return done(f"Token {trigger['token']} revoked.")
