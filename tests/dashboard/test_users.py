"""User administration: disable/enable, role and ward, password reset, assignments; the admin callbacks."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from dashboard.access import AccessDeniedError
from dashboard.auth import LoginThrottle, authenticate, create_user, load_session_user
from dashboard.queries import assign_patient, unassign_patient
from dashboard.users import UserAdminError, _keep_an_admin, reset_password, set_user_active, set_user_role
from storage import AuditEntry, CaregiverAssignment, Database, Role, User

PASSWORD = "correct horse battery"
NEW_PASSWORD = "battery staple horse"


def _audit(db: Database) -> list[tuple[str, str, str | None, dict[str, Any]]]:
    with db.session() as session:
        return [
            (e.actor, e.action, e.target, e.details)
            for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


def _user(db: Database, user_id: int) -> User:
    with db.session() as session:
        user = session.get(User, user_id)
        assert user is not None
        session.expunge(user)
        return user


class TestSetUserActive:
    def test_basic(self, db: Database, sid: Any, seeded: Any) -> None:
        set_user_active(db, seeded.admin, seeded.clinician, False)
        assert not _user(db, seeded.clinician).is_active
        assert load_session_user(db, sid(seeded.clinician)) is None  # open sessions end
        user, _ = authenticate(db, "clin", PASSWORD, throttle=LoginThrottle(), remote="t")
        assert user is None
        set_user_active(db, seeded.admin, seeded.clinician, True)
        assert _user(db, seeded.clinician).is_active
        changes = [(a, t) for actor, a, t, _ in _audit(db) if actor == f"user:{seeded.admin}"]
        assert changes == [
            ("user.disable", f"user:{seeded.clinician}"),
            ("user.enable", f"user:{seeded.clinician}"),
        ]

    def test_edge_cases(self, db: Database, seeded: Any) -> None:
        before = len(_audit(db))
        set_user_active(db, seeded.admin, seeded.clinician, True)  # already active: nothing to audit
        assert len(_audit(db)) == before
        second = create_user(db, "admin2", PASSWORD, "admin")
        set_user_active(db, seeded.admin, second, False)  # another active admin is left
        assert not _user(db, second).is_active

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        with pytest.raises(UserAdminError, match="your own account"):
            set_user_active(db, seeded.admin, seeded.admin, False)
        second = create_user(db, "admin2", PASSWORD, "admin")
        set_user_active(db, second, seeded.admin, False)
        with pytest.raises(AccessDeniedError, match="may not administer"):
            set_user_active(db, seeded.admin, second, False)  # a disabled admin acts no more
        with pytest.raises(AccessDeniedError, match="may not administer"):
            set_user_active(db, seeded.clinician, seeded.caregiver, False)
        with pytest.raises(UserAdminError, match="no user 999"):
            set_user_active(db, second, 999, False)
        assert _user(db, second).is_active
        assert _user(db, seeded.caregiver).is_active

    def test_last_admin(self, db: Database, seeded: Any) -> None:
        """The rule on its own (for one admin at a time the self-rule already implies it)."""
        admin = _user(db, seeded.admin)
        with pytest.raises(UserAdminError, match="admin is the last active admin"):
            _keep_an_admin(frozenset({seeded.admin}), admin)
        _keep_an_admin(frozenset({seeded.admin, 99}), admin)  # another one is left
        _keep_an_admin(frozenset({99}), _user(db, seeded.clinician))  # not an admin: nothing to keep


class TestSetUserRole:
    def test_basic(self, db: Database, sid: Any, seeded: Any) -> None:
        set_user_role(db, seeded.admin, seeded.caregiver, "clinician", "  ICU ")
        user = _user(db, seeded.caregiver)
        assert (user.role, user.ward) == (Role.CLINICIAN, "ICU")
        loaded = load_session_user(db, sid(seeded.caregiver))
        assert loaded is not None
        assert loaded.role == Role.CLINICIAN  # the next request already has the new role
        entry = _audit(db)[-1]
        assert entry[:3] == (f"user:{seeded.admin}", "user.update", f"user:{seeded.caregiver}")
        assert entry[3] == {
            "before": {"role": "caregiver", "ward": None},
            "after": {"role": "clinician", "ward": "ICU"},
        }

    def test_edge_cases(self, db: Database, seeded: Any) -> None:
        before = len(_audit(db))
        set_user_role(db, seeded.admin, seeded.clinician, Role.CLINICIAN, " ")  # unchanged: not audited
        assert len(_audit(db)) == before
        set_user_role(db, seeded.admin, seeded.admin, "admin", "CCU")  # an admin may change their own ward
        assert _user(db, seeded.admin).ward == "CCU"
        second = create_user(db, "admin2", PASSWORD, "admin")
        set_user_role(db, seeded.admin, second, "clinician", None)
        assert _user(db, second).role == Role.CLINICIAN

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        with pytest.raises(UserAdminError, match="your own admin role"):
            set_user_role(db, seeded.admin, seeded.admin, "clinician", None)
        with pytest.raises(UserAdminError, match="role"):
            set_user_role(db, seeded.admin, seeded.clinician, "superuser", None)
        with pytest.raises(AccessDeniedError):
            set_user_role(db, seeded.clinician, seeded.clinician, "admin", None)  # no self-promotion
        assert _user(db, seeded.admin).role == Role.ADMIN
        assert _user(db, seeded.clinician).role == Role.CLINICIAN


class TestResetPassword:
    def test_basic(self, db: Database, sid: Any, seeded: Any) -> None:
        before = sid(seeded.caregiver)
        assert load_session_user(db, before) is not None
        reset_password(db, seeded.admin, seeded.caregiver, NEW_PASSWORD)
        assert load_session_user(db, before) is None  # sessions opened under the old password end
        after = sid(seeded.caregiver)
        assert after != before
        assert load_session_user(db, after) is not None
        throttle = LoginThrottle()
        old, _ = authenticate(db, "care", PASSWORD, throttle=throttle, remote="t")
        new, _ = authenticate(db, "care", NEW_PASSWORD, throttle=throttle, remote="t")
        assert old is None
        assert new is not None
        entry = next(e for e in _audit(db) if e[1] == "user.password_reset")
        assert entry[:3] == (f"user:{seeded.admin}", "user.password_reset", f"user:{seeded.caregiver}")
        assert NEW_PASSWORD not in json.dumps([e[3] for e in _audit(db)])
        assert _user(db, seeded.caregiver).password_hash.startswith("$argon2id$")

    def test_edge_cases(self, db: Database, seeded: Any) -> None:
        reset_password(db, seeded.admin, seeded.admin, NEW_PASSWORD)  # an admin may reset their own
        user, _ = authenticate(db, "admin", NEW_PASSWORD, throttle=LoginThrottle(), remote="t")
        assert user is not None

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        with pytest.raises(UserAdminError, match="at least 10 characters"):
            reset_password(db, seeded.admin, seeded.caregiver, "short")
        with pytest.raises(AccessDeniedError):
            reset_password(db, seeded.caregiver, seeded.admin, NEW_PASSWORD)
        user, _ = authenticate(db, "admin", PASSWORD, throttle=LoginThrottle(), remote="t")
        assert user is not None  # unchanged


class TestUnassignPatient:
    def test_basic(self, db: Database, seeded: Any) -> None:
        assert unassign_patient(db, "user:1", seeded.caregiver, seeded.ada)
        with db.session() as session:
            assert session.get(CaregiverAssignment, (seeded.caregiver, seeded.ada)) is None
        assert _audit(db)[-1][:4] == (
            "user:1",
            "assignment.delete",
            f"user:{seeded.caregiver}",
            {"patient_id": seeded.ada},
        )

    def test_edge_cases(self, db: Database, seeded: Any) -> None:
        before = len(_audit(db))
        assert not unassign_patient(db, "user:1", seeded.caregiver, seeded.bob)  # never assigned
        assert len(_audit(db)) == before
        unassign_patient(db, "user:1", seeded.caregiver, seeded.ada)
        assign_patient(db, "user:1", seeded.caregiver, seeded.bob)  # an edit: remove one, assign another
        with db.session() as session:
            rows = session.scalars(select(CaregiverAssignment.patient_id)).all()
        assert rows == [seeded.bob]


# The admin page's callbacks, through the Flask test client ------------------------------------


def _pattern_callback(client: FlaskClient, csrf: str, pattern_type: str, trigger: dict[str, Any]) -> Any:
    """Press a pattern-matching button of the admin page as the renderer would."""
    deps = client.get("/_dash-dependencies").get_json()
    spec = next(
        d
        for d in deps
        if any(isinstance(i["id"], str) and f'"type":"{pattern_type}"' in i["id"] for i in d["inputs"])
    )
    outputs = []
    for part in spec["output"].strip(".").split("..."):
        element, _, prop = part.partition(".")
        outputs.append({"id": element, "property": prop})
    payload = {
        "output": spec["output"],
        "outputs": outputs,
        "inputs": [[{"id": trigger, "property": "n_clicks", "value": 1}]],
        "changedPropIds": [json.dumps(trigger, separators=(",", ":"), sort_keys=True) + ".n_clicks"],
        "state": [],
    }
    return client.post("/_dash-update-component", json=payload, headers={"X-CSRFToken": csrf})


class TestAdminCallbacks:
    def test_basic(self, logged_in_client: Any, seeded: Any, db: Database) -> None:
        client, csrf = logged_in_client("admin", "/admin")
        response = _pattern_callback(
            client, csrf, "user-active", {"type": "user-active", "user": seeded.caregiver, "set": "disable"}
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        assert "User disabled." in response.get_data(as_text=True)
        assert not _user(db, seeded.caregiver).is_active
        response = _pattern_callback(
            client, csrf, "unassign", {"type": "unassign", "user": seeded.caregiver, "patient": seeded.ada}
        )
        assert "Assignment removed." in response.get_data(as_text=True)
        actions = [a for actor, a, _, _ in _audit(db) if actor == f"user:{seeded.admin}"]
        assert actions[-2:] == ["user.disable", "assignment.delete"]

    def test_edge_cases(self, logged_in_client: Any, seeded: Any, db: Database) -> None:
        client, csrf = logged_in_client("admin", "/admin")
        response = _pattern_callback(
            client, csrf, "user-active", {"type": "user-active", "user": seeded.admin, "set": "disable"}
        )
        assert "cannot disable your own account" in response.get_data(as_text=True)
        assert _user(db, seeded.admin).is_active

    def test_exceptions(self, logged_in_client: Any, seeded: Any, db: Database) -> None:
        """A clinician who forges the admin requests changes nothing."""
        client, csrf = logged_in_client("clin", "/admin")
        for pattern, trigger in (
            ("user-active", {"type": "user-active", "user": seeded.admin, "set": "disable"}),
            ("unassign", {"type": "unassign", "user": seeded.caregiver, "patient": seeded.ada}),
        ):
            response = _pattern_callback(client, csrf, pattern, trigger)
            assert response.status_code == 204  # PreventUpdate: no data, no change
        assert _user(db, seeded.admin).is_active
        with db.session() as session:
            assert session.get(CaregiverAssignment, (seeded.caregiver, seeded.ada)) is not None
