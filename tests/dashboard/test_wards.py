"""Wards: a clinician sees the patients of their ward, on every read and write path."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from dashboard import create_user
from dashboard.access import (
    AccessDeniedError,
    check_patient,
    normalize_ward,
    visible_patient_ids,
    visible_patients,
)
from dashboard.queries import acknowledge, add_patient, alarm_history, alarm_rows, patient_tiles
from ingest.live_tokens import verify_live_token
from storage import Alarm, AlarmState, AuditEntry, Database, Patient, User, utcnow

LIVE_SECRET = "live-secret-for-tests-0123456789"
PASSWORD = "correct horse battery"
WARDS = {1: "Ward A", 2: "Ward B", 3: None}


class TestVisiblePatientIds:
    def test_basic(self) -> None:
        assert visible_patient_ids("clinician", [1, 2, 3], [], ward="Ward A", patient_wards=WARDS) == {1}
        assert visible_patient_ids("clinician", [1, 2, 3], [], ward="Ward B", patient_wards=WARDS) == {2}
        assert visible_patient_ids("clinician", [1, 2, 3], [], ward=None, patient_wards=WARDS) == {1, 2, 3}
        assert visible_patient_ids("admin", [1, 2, 3], [], ward="Ward A", patient_wards=WARDS) == {1, 2, 3}

    def test_caregiver_unaffected_by_wards(self) -> None:
        for ward in (None, "Ward A", "Ward B"):
            assert visible_patient_ids("caregiver", [1, 2, 3], [2], ward=ward, patient_wards=WARDS) == {2}

    def test_edge_cases(self) -> None:
        # names compare without case and surrounding spaces; a blank ward is no ward
        assert visible_patient_ids("clinician", [1, 2], [], ward=" ward a ", patient_wards=WARDS) == {1}
        assert visible_patient_ids("clinician", [1, 2], [], ward="  ", patient_wards=WARDS) == {1, 2}
        # a patient without a ward is not on anybody's ward
        assert 3 not in visible_patient_ids("clinician", [1, 2, 3], [], ward="Ward A", patient_wards=WARDS)
        # a ward nobody lies on: nothing; no ward map: nobody is on a ward
        assert visible_patient_ids("clinician", [1, 2], [], ward="ICU", patient_wards=WARDS) == frozenset()
        assert visible_patient_ids("clinician", [1, 2], [], ward="ICU") == frozenset()
        # assignments do not widen a clinician's ward
        assert visible_patient_ids("clinician", [1, 2], [2], ward="Ward A", patient_wards=WARDS) == {1}
        assert visible_patient_ids("somebody", [1, 2], [1], ward=None, patient_wards=WARDS) == frozenset()

    def test_normalize_ward(self) -> None:
        assert normalize_ward(" ICU ") == "ICU"
        assert normalize_ward("") is None
        assert normalize_ward(None) is None
        assert normalize_ward("x" * 100) == "x" * 64


@dataclass(frozen=True)
class Wards:
    """The seeded database with Ada on ward A, Bob on ward B and a clinician per ward."""

    clin_a: int
    clin_b: int


@pytest.fixture
def wards(db: Database, seeded: Any) -> Wards:
    with db.session() as session:
        for pid, ward in ((seeded.ada, "Ward A"), (seeded.bob, "Ward B")):
            patient = session.get(Patient, pid)
            assert patient is not None
            patient.ward = ward
    clin_a = create_user(db, "clin-a", PASSWORD, "clinician", ward=" ward a ")
    clin_b = create_user(db, "clin-b", PASSWORD, "clinician", ward="Ward B")
    return Wards(clin_a, clin_b)


class TestScopedQueries:
    def test_basic(self, db: Database, seeded: Any, wards: Wards) -> None:
        with db.session() as session:
            assert session.get(User, wards.clin_a).ward == "ward a"  # type: ignore[union-attr]
            assert [p.id for p in visible_patients(session, wards.clin_a, "clinician")] == [seeded.ada]
            assert [p.id for p in visible_patients(session, wards.clin_b, "clinician")] == [seeded.bob]
            # the seeded clinician has no ward: a site without wards, every patient
            assert len(visible_patients(session, seeded.clinician, "clinician")) == 2
            assert len(visible_patients(session, seeded.admin, "admin")) == 2
            assert [p.id for p in visible_patients(session, seeded.caregiver, "caregiver")] == [seeded.ada]
            assert [t.patient_id for t in patient_tiles(session, wards.clin_a, "clinician")] == [seeded.ada]
            rows = alarm_rows(session, wards.clin_a, "clinician")
            assert [r.id for r in rows] == [seeded.ada_alarm]
            assert alarm_rows(session, wards.clin_a, "clinician", patient_ids=[seeded.bob]) == []
            assert alarm_history(session, wards.clin_a, "clinician", seeded.ada_alarm)

    def test_exceptions(self, db: Database, seeded: Any, wards: Wards) -> None:
        with db.session() as session, pytest.raises(AccessDeniedError, match="not available"):
            check_patient(session, wards.clin_a, "clinician", seeded.bob)
        with db.session() as session, pytest.raises(AccessDeniedError, match="not available"):
            alarm_history(session, wards.clin_a, "clinician", seeded.bob_alarm)
        with pytest.raises(AccessDeniedError, match="may not acknowledge"):
            acknowledge(db, wards.clin_a, "clinician", seeded.bob_alarm, note=None, at=utcnow())
        with db.session() as session:
            alarm = session.get(Alarm, seeded.bob_alarm)
            assert alarm is not None
            assert alarm.state == AlarmState.ACTIVE
            refused = [
                a.target
                for a in session.scalars(select(AuditEntry))
                if a.action == "alarm.acknowledge_refused"
            ]
        assert refused == [f"alarm:{seeded.bob_alarm}"]
        acknowledge(db, wards.clin_b, "clinician", seeded.bob_alarm, note=None, at=utcnow())

    def test_ward_is_stored_and_audited(self, db: Database, seeded: Any) -> None:
        pid = add_patient(db, "user:1", "Cleo", ward="  ICU ")
        blank = add_patient(db, "user:1", "Dan", ward=" ")
        uid = create_user(db, "icu-clin", PASSWORD, "clinician", ward="ICU")
        with db.session() as session:
            assert session.get(Patient, pid).ward == "ICU"  # type: ignore[union-attr]
            assert session.get(Patient, blank).ward is None  # type: ignore[union-attr]
            assert [p.name for p in visible_patients(session, uid, "clinician")] == ["Cleo"]
            details = {a.target: a.details for a in session.scalars(select(AuditEntry))}
        assert details[f"patient:{pid}"] == {"ward": "ICU"}
        assert details[f"user:{uid}"] == {"role": "clinician", "ward": "ICU"}


def _callback(client: FlaskClient, csrf: str, payload: dict[str, Any]) -> str:
    response = client.post("/_dash-update-component", json=payload, headers={"X-CSRFToken": csrf})
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    return response.get_data(as_text=True)


class TestServer:
    """Through the Flask test client, as a clinician of ward A."""

    def test_live_token_scope(self, logged_in_client: Any, seeded: Any, wards: Wards) -> None:
        client, csrf = logged_in_client("clin-a")
        response = client.post("/live-token", json={}, headers={"X-CSRFToken": csrf})
        assert response.status_code == 200
        body = response.get_json()
        assert body["patient_ids"] == [seeded.ada]
        claims = verify_live_token(LIVE_SECRET, body["token"], now=utcnow().timestamp())
        assert claims.patient_ids == {seeded.ada}

    def test_patient_page(self, logged_in_client: Any, seeded: Any, wards: Wards) -> None:
        client, csrf = logged_in_client("clin-a")

        def page(pid: int) -> str:
            return _callback(
                client,
                csrf,
                {
                    "output": ".._pages_content.children..._pages_store.data..",
                    "outputs": [
                        {"id": "_pages_content", "property": "children"},
                        {"id": "_pages_store", "property": "data"},
                    ],
                    "inputs": [
                        {"id": "_pages_location", "property": "pathname", "value": f"/patient/{pid}"},
                        {"id": "_pages_location", "property": "search", "value": ""},
                    ],
                    "changedPropIds": ["_pages_location.pathname"],
                    "state": [],
                },
            )

        def alarms(pid: int) -> str:
            return _callback(
                client,
                csrf,
                {
                    "output": "patient-alarms.children",
                    "outputs": {"id": "patient-alarms", "property": "children"},
                    "inputs": [
                        {"id": "patient-refresh", "property": "n_intervals", "value": 1},
                        {"id": "ack-result", "property": "data", "value": None},
                    ],
                    "changedPropIds": ["patient-refresh.n_intervals"],
                    "state": [{"id": "_pages_location", "property": "pathname", "value": f"/patient/{pid}"}],
                },
            )

        assert "Ada Lovelace" in page(seeded.ada)
        other = page(seeded.bob)
        assert "This patient is not available to you." in other
        assert "Bob" not in other
        assert "isolated PVC" in alarms(seeded.ada)
        assert "HR 180" not in alarms(seeded.bob)

    def test_forged_acknowledge(self, logged_in_client: Any, seeded: Any, wards: Wards, db: Database) -> None:
        client, csrf = logged_in_client("clin-a")
        results = {}
        for alarm in (seeded.bob_alarm, seeded.ada_alarm):
            trigger = {"alarm": alarm, "type": "ack"}
            body = _callback(
                client,
                csrf,
                {
                    "output": "ack-result.data",
                    "outputs": {"id": "ack-result", "property": "data"},
                    "inputs": [[{"id": trigger, "property": "n_clicks", "value": 1}]],
                    "changedPropIds": [
                        json.dumps(trigger, separators=(",", ":"), sort_keys=True) + ".n_clicks"
                    ],
                    "state": [{"id": "ack-note", "property": "value", "value": "forged"}],
                },
            )
            results[alarm] = json.loads(body)["response"]["ack-result"]["data"]["ok"]
        assert results == {seeded.bob_alarm: False, seeded.ada_alarm: True}
        with db.session() as session:
            states = {a.id: a.state for a in session.scalars(select(Alarm))}
        assert states[seeded.bob_alarm] == AlarmState.ACTIVE
        assert states[seeded.ada_alarm] == AlarmState.ACKNOWLEDGED
