"""Administration: users, patients, caregiver assignments, devices, alarm limits, the audit log."""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, callback, dcc, html
from flask_login import current_user
from sqlalchemy import select

from dashboard.access import AccessDeniedError, can_administer, current_db
from dashboard.auth import MIN_PASSWORD_CHARS, AuthError, create_user
from dashboard.components import attrs, data_table, empty_state, secret_notice
from dashboard.pages._admin import action_outputs, done, pressed_id, refused, require_admin
from dashboard.queries import (
    add_patient,
    assign_patient,
    parse_alarm_limits,
    register_device,
    revoke_device,
    set_alarm_limits,
    unassign_patient,
)
from dashboard.users import UserAdminError, reset_password, set_user_active, set_user_role
from storage import AuditEntry, CaregiverAssignment, Device, Patient, Role, User, utcnow

dash.register_page(__name__, path="/admin", name="Admin", title="Admin · Cardiac Monitor")

_AUDIT_ROWS = 100


def layout(**_query: Any) -> html.Div:
    """Forms and tables; every action is checked again on the server."""
    if not can_administer(current_user.role):
        return empty_state("Administrators only.")
    return html.Div(
        [
            html.H1("Administration", className="cm-title"),
            dcc.Store(id="admin-changed"),
            html.H2("Users", className="cm-subtitle"),
            html.Div(
                [
                    dcc.Input(id="new-username", placeholder="username", className="form-control"),
                    dcc.Input(id="new-display", placeholder="display name", className="form-control"),
                    dcc.Input(id="new-user-ward", placeholder="ward (optional)", className="form-control"),
                    dcc.Dropdown(
                        id="new-role",
                        options=[r.value for r in Role],
                        value="clinician",
                        clearable=False,
                        className="cm-filter-small",
                    ),
                    dcc.Input(
                        id="new-password",
                        type="password",
                        placeholder=f"password ({MIN_PASSWORD_CHARS}+ chars)",
                        className="form-control",
                    ),
                    html.Button("Add user", id="add-user", className="btn btn-ack", n_clicks=0),
                ],
                className="cm-form",
            ),
            html.Div(
                [
                    dcc.Dropdown(id="edit-user", placeholder="user to change", className="cm-filter-small"),
                    dcc.Dropdown(
                        id="edit-role",
                        options=[r.value for r in Role],
                        placeholder="role",
                        clearable=False,
                        className="cm-filter-small",
                    ),
                    dcc.Input(id="edit-ward", placeholder="ward (blank: none)", className="form-control"),
                    html.Button("Save role and ward", id="save-user", className="btn btn-ack", n_clicks=0),
                    dcc.Input(
                        id="edit-password",
                        type="password",
                        placeholder=f"new password ({MIN_PASSWORD_CHARS}+ chars)",
                        className="form-control",
                        autoComplete="new-password",
                    ),
                    html.Button("Reset password", id="reset-password", className="btn", n_clicks=0),
                ],
                className="cm-form",
                id="edit-user-form",
            ),
            html.Div(id="admin-users"),
            html.H2("Patients and caregivers", className="cm-subtitle"),
            html.Div(
                [
                    dcc.Input(id="new-patient", placeholder="patient name", className="form-control"),
                    dcc.Input(id="new-mrn", placeholder="MRN (optional)", className="form-control"),
                    dcc.Input(id="new-patient-ward", placeholder="ward (optional)", className="form-control"),
                    html.Button("Add patient", id="add-patient", className="btn btn-ack", n_clicks=0),
                    dcc.Dropdown(id="assign-user", placeholder="caregiver", className="cm-filter-small"),
                    dcc.Dropdown(id="assign-patient", placeholder="patient", className="cm-filter-small"),
                    html.Button("Assign", id="assign", className="btn", n_clicks=0),
                ],
                className="cm-form",
            ),
            html.Div(id="admin-patients"),
            html.H3("Caregiver assignments", className="cm-subtitle cm-subtitle-small"),
            html.Div(id="admin-assignments"),
            html.H2("Devices", className="cm-subtitle"),
            html.Div(
                [
                    dcc.Input(id="new-device", placeholder="device id", className="form-control"),
                    dcc.Dropdown(id="device-patient", placeholder="patient", className="cm-filter-small"),
                    html.Button("Register", id="add-device", className="btn btn-ack", n_clicks=0),
                ],
                className="cm-form",
            ),
            html.Div(id="admin-devices"),
            html.H2("Alarm limits", className="cm-subtitle"),
            html.Div(
                [
                    dcc.Dropdown(id="limits-patient", placeholder="patient", className="cm-filter-small"),
                    dcc.Textarea(
                        id="limits-json",
                        placeholder='{"tachycardia_bpm": 130, "spo2_low": 92}',
                        className="form-control",
                        style={"width": "420px", "height": "5rem"},
                    ),
                    html.Button("Save limits", id="save-limits", className="btn btn-ack", n_clicks=0),
                ],
                className="cm-form",
            ),
            html.Div(id="admin-message", role="status"),
            html.H2("Audit log", className="cm-subtitle"),
            html.Div(id="admin-audit"),
        ],
        className="cm-page",
    )


@callback(
    Output("admin-users", "children"),
    Output("admin-patients", "children"),
    Output("admin-devices", "children"),
    Output("admin-audit", "children"),
    Output("admin-assignments", "children"),
    Output("edit-user", "options"),
    Output("assign-user", "options"),
    Output("assign-patient", "options"),
    Output("device-patient", "options"),
    Output("limits-patient", "options"),
    Input("admin-changed", "data"),
)
def tables(_changed: Any) -> tuple[Any, ...]:
    """Users, patients with their caregivers, assignments, devices and the newest audit lines."""
    require_admin()
    with current_db().session() as session:
        users = list(session.scalars(select(User).order_by(User.username)))
        patients = list(session.scalars(select(Patient).order_by(Patient.name)))
        devices = list(session.scalars(select(Device).order_by(Device.device_uid)))
        assignments = list(session.scalars(select(CaregiverAssignment)))
        audit = list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(_AUDIT_ROWS)))
        names = {u.id: u.username for u in users}
        user_rows = [
            [
                u.username,
                u.display_name,
                u.role.value,
                u.ward or "",
                html.Span(
                    "active" if u.is_active else "disabled",
                    className="cm-state-ok" if u.is_active else "cm-state-disabled",
                ),
                _active_button(u.id, u.username, u.is_active, own=u.id == current_user.id),
            ]
            for u in users
        ]
        patient_rows = [
            [
                p.name,
                p.mrn or "",
                p.ward or "",
                ", ".join(names[a.user_id] for a in assignments if a.patient_id == p.id),
                json.dumps(p.alarm_limits or {}),
            ]
            for p in patients
        ]
        device_rows = [
            [
                d.device_uid,
                next((p.name for p in patients if p.id == d.patient_id), ""),
                f"{d.last_seen_at:%Y-%m-%d %H:%M:%S}" if d.last_seen_at else "never",
                f"revoked {d.revoked_at:%Y-%m-%d %H:%M}"
                if d.revoked_at
                else html.Button(
                    "Revoke", id={"type": "revoke", "device": d.id}, className="btn", n_clicks=0
                ),
            ]
            for d in devices
        ]
        audit_rows = [
            [f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target or "", json.dumps(e.details)]
            for e in audit
        ]
        patient_names = {p.id: p.name for p in patients}
        assignment_rows = [
            [
                names[a.user_id],
                patient_names.get(a.patient_id, f"#{a.patient_id}"),
                f"{a.created_at:%Y-%m-%d %H:%M}",
                html.Button(
                    "Remove",
                    id={"type": "unassign", "user": a.user_id, "patient": a.patient_id},
                    className="btn btn-warn btn-sm",
                    n_clicks=0,
                    **attrs(
                        aria_label=f"Remove {names[a.user_id]} from {patient_names.get(a.patient_id, '')}"
                    ),
                ),
            ]
            for a in sorted(
                assignments, key=lambda a: (names[a.user_id], patient_names.get(a.patient_id, ""))
            )
        ]
        user_options = [{"label": f"{u.username} ({u.role.value})", "value": u.id} for u in users]
        caregivers = [{"label": u.username, "value": u.id} for u in users if u.role == Role.CAREGIVER]
        patient_options = [{"label": p.name, "value": p.id} for p in patients]
    return (
        data_table(["User", "Name", "Role", "Ward", "State", ""], user_rows, table_id="users-table"),
        data_table(["Patient", "MRN", "Ward", "Caregivers", "Alarm limits"], patient_rows),
        data_table(["Device", "Patient", "Last seen", ""], device_rows),
        data_table(["At (UTC)", "Actor", "Action", "Target", "Details"], audit_rows, table_id="audit-table"),
        data_table(
            ["Caregiver", "Patient", "Since (UTC)", ""], assignment_rows, table_id="assignments-table"
        ),
        user_options,
        caregivers,
        patient_options,
        patient_options,
        patient_options,
    )


@callback(
    *action_outputs("admin"),
    Input("add-user", "n_clicks"),
    State("new-username", "value"),
    State("new-display", "value"),
    State("new-role", "value"),
    State("new-password", "value"),
    State("new-user-ward", "value"),
    prevent_initial_call=True,
)
def add_user(
    _n: int,
    username: str | None,
    display: str | None,
    role: str,
    password: str | None,
    ward: str | None = None,
) -> Any:
    """Create a user (argon2 hash; audited)."""
    require_admin()
    try:
        create_user(
            current_db(),
            username or "",
            password or "",
            role,
            display_name=display or "",
            actor=current_user.actor,
            ward=ward,
        )
    except AuthError as exc:
        return refused(exc)
    return done(f"User {username} added.")


@callback(
    *action_outputs("admin"),
    Input("add-patient", "n_clicks"),
    Input("assign", "n_clicks"),
    State("new-patient", "value"),
    State("new-mrn", "value"),
    State("assign-user", "value"),
    State("assign-patient", "value"),
    State("new-patient-ward", "value"),
    prevent_initial_call=True,
)
def patients(
    _a: int,
    _b: int,
    name: str | None,
    mrn: str | None,
    user: int | None,
    patient: int | None,
    ward: str | None = None,
) -> Any:
    """Add a patient, or assign one to a caregiver."""
    require_admin()
    db = current_db()
    if dash.ctx.triggered_id == "assign":
        if user is None or patient is None:
            return refused("Choose a caregiver and a patient.")
        assign_patient(db, current_user.actor, int(user), int(patient))
        return done("Assigned.")
    try:
        add_patient(db, current_user.actor, name or "", mrn, ward=ward)
    except ValueError as exc:
        return refused(exc)
    return done(f"Patient {name} added.")


@callback(
    *action_outputs("admin"),
    Input("add-device", "n_clicks"),
    State("new-device", "value"),
    State("device-patient", "value"),
    prevent_initial_call=True,
)
def add_device(_n: int, uid: str | None, patient: int | None) -> Any:
    """Register a device; its token is shown here once and never again."""
    require_admin()
    try:
        token = register_device(current_db(), current_user.actor, uid or "", patient)
    except ValueError as exc:
        return refused(exc)
    message = secret_notice(
        f"Device {uid} registered. Copy its token now; it is not shown again:",
        token,
        element_id="device-token",
    )
    return done(message)


@callback(
    *action_outputs("admin"),
    Input({"type": "revoke", "device": dash.ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def revoke(clicks: list[int | None]) -> Any:
    """Revoke the pressed device."""
    require_admin()
    trigger = pressed_id()
    revoke_device(current_db(), current_user.actor, int(trigger["device"]), utcnow())
    return done("Device revoked.")


@callback(
    *action_outputs("admin"),
    Input("save-limits", "n_clicks"),
    State("limits-patient", "value"),
    State("limits-json", "value"),
    prevent_initial_call=True,
)
def save_limits(_n: int, patient: int | None, text: str | None) -> Any:
    """Replace a patient's alarm limits (validated; the change is audited)."""
    require_admin()
    if patient is None:
        return refused("Choose a patient.")
    try:
        set_alarm_limits(current_db(), current_user.actor, int(patient), parse_alarm_limits(text or "{}"))
    except ValueError as exc:
        return refused(exc)
    return done("Alarm limits saved.")


@callback(
    Output("edit-role", "value"),
    Output("edit-ward", "value"),
    Input("edit-user", "value"),
    prevent_initial_call=True,
)
def pick_user(user_id: int | None) -> tuple[Any, Any]:
    """Fill the edit form with the chosen user's role and ward."""
    require_admin()
    if user_id is None:
        return None, ""
    with current_db().session() as session:
        user = session.get(User, int(user_id))
        if user is None:
            raise dash.exceptions.PreventUpdate
        return Role(user.role).value, user.ward or ""


@callback(
    *action_outputs("admin"),
    Output("edit-password", "value"),
    Input("save-user", "n_clicks"),
    Input("reset-password", "n_clicks"),
    State("edit-user", "value"),
    State("edit-role", "value"),
    State("edit-ward", "value"),
    State("edit-password", "value"),
    prevent_initial_call=True,
)
def edit_user(
    _save: int, _reset: int, user_id: int | None, role: str | None, ward: str | None, password: str | None
) -> Any:
    """Change the chosen user's role and ward, or reset their password (checked and audited)."""
    require_admin()
    if user_id is None:
        return *refused("Choose a user."), dash.no_update
    db = current_db()
    try:
        if dash.ctx.triggered_id == "reset-password":
            reset_password(db, current_user.id, int(user_id), password or "")
            return *done("Password reset."), ""
        set_user_role(db, current_user.id, int(user_id), role or "", ward)
    except (UserAdminError, AccessDeniedError) as exc:
        return *refused(exc), dash.no_update
    return *done("User updated."), dash.no_update


@callback(
    *action_outputs("admin"),
    Input({"type": "user-active", "user": dash.ALL, "set": dash.ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def toggle_user(_clicks: list[int | None]) -> Any:
    """Disable or enable the pressed user (not yourself, never the last active admin)."""
    require_admin()
    trigger = pressed_id()
    active = trigger["set"] == "enable"
    try:
        set_user_active(current_db(), current_user.id, int(trigger["user"]), active)
    except (UserAdminError, AccessDeniedError) as exc:
        return refused(exc)
    return done("User enabled." if active else "User disabled.")


@callback(
    *action_outputs("admin"),
    Input({"type": "unassign", "user": dash.ALL, "patient": dash.ALL}, "n_clicks"),
    prevent_initial_call=True,
)
def unassign(_clicks: list[int | None]) -> Any:
    """Remove the pressed caregiver assignment."""
    require_admin()
    trigger = pressed_id()
    unassign_patient(current_db(), current_user.actor, int(trigger["user"]), int(trigger["patient"]))
    return done("Assignment removed.")


def _active_button(user_id: int, username: str, active: bool, *, own: bool) -> Any:
    """Disable (or enable) a user; none on your own row, which you cannot disable."""
    if own:
        return html.Span("you", className="cm-muted")
    action = "disable" if active else "enable"
    return html.Button(
        action.capitalize(),
        id={"type": "user-active", "user": user_id, "set": action},
        className="btn btn-sm " + ("btn-warn" if active else "btn-outline"),
        n_clicks=0,
        **attrs(aria_label=f"{action.capitalize()} {username}"),
    )
