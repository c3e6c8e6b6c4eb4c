"""What the admin pages' callbacks share: the role check, the pressed button, an action's outcome.

An admin action writes a message (``<page>-message``) and, when it changed
something, a new stamp in the page's ``<page>-changed`` store, which reloads
its tables.

Not a page: Dash's pages API skips modules whose name starts with ``_``, so
importing this from a page registers nothing.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Output
from flask_login import current_user

from dashboard.access import can_administer
from storage import utcnow

__all__ = ["action_outputs", "done", "pressed_id", "refused", "require_admin"]


def action_outputs(page: str) -> tuple[Output, Output]:
    """The message and the change stamp of ``page`` (``"admin"``, ``"ehr"``), which every action writes."""
    return (
        Output(f"{page}-message", "children", allow_duplicate=True),
        Output(f"{page}-changed", "data", allow_duplicate=True),
    )


def done(message: Any) -> tuple[Any, float]:
    """An action that changed something: its message, and a new stamp so the tables reload."""
    return message, utcnow().timestamp()


def refused(reason: object) -> tuple[str, Any]:
    """An action that changed nothing: why (a message or the exception), the tables left as they are."""
    return str(reason), dash.no_update


def require_admin() -> None:
    """Refuse (no update) unless the user is an admin: pages are not the only way to call callbacks."""
    if not can_administer(current_user.role):
        raise dash.exceptions.PreventUpdate


def pressed_id() -> dict[str, Any]:
    """The pattern-matching id of the button just pressed; no update when none was (a re-render)."""
    trigger = dash.ctx.triggered_id
    pressed = dash.ctx.triggered[0].get("value") if dash.ctx.triggered else None
    if not isinstance(trigger, dict) or not pressed:
        raise dash.exceptions.PreventUpdate
    return dict(trigger)
