"""The read-only FHIR API: authentication, scope, search parameters, searchset Bundles."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome
from flask.testing import FlaskClient
from sqlalchemy import select, update

from dashboard import FhirSearchError, bearer_token, create_user, parse_date_params, parse_patient_param
from storage import (
    ApiToken,
    AuditEntry,
    Database,
    Patient,
    issue_api_token,
    model_device_id,
    revoke_api_token,
    utcnow,
)

PASSWORD = "correct horse battery"


def _window(minutes: float = 55.0) -> str:
    now = utcnow()
    start = (now - timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"date=ge{start}&date=le{end}"


def _token(db: Database, name: str = "ehr", ward: str | None = None) -> str:
    with db.session() as session:
        _, secret = issue_api_token(session, name, actor="test", ward=ward)
    return secret


def _bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _bundle(response: Any) -> Bundle:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/fhir+json"
    bundle = Bundle.model_validate_json(response.get_data(as_text=True))
    assert bundle.type == "searchset"
    assert bundle.total == len(bundle.entry or [])
    return bundle


def _outcome(response: Any, status: int) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/fhir+json"
    outcome = OperationOutcome.model_validate_json(response.get_data(as_text=True))
    return outcome.issue[0].diagnostics or ""


def _actions(db: Database) -> list[tuple[str, str]]:
    with db.session() as session:
        return [(e.actor, e.action) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


class TestAuthentication:
    def test_unauthenticated_refused(self, app_factory: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        for path in ("/fhir/Patient", f"/fhir/Observation?patient={seeded.ada}&{_window()}"):
            response = client.get(path)
            assert "Authorization: Bearer" in _outcome(response, 401)
            assert response.headers["WWW-Authenticate"].startswith("Bearer")

    def test_bad_and_revoked_tokens_refused(self, app_factory: Any, db: Database, seeded: Any) -> None:
        secret = _token(db)
        client = app_factory().server.test_client()
        assert "unknown or revoked" in _outcome(
            client.get("/fhir/Patient", headers=_bearer(secret + "x")), 401
        )
        assert _outcome(client.get("/fhir/Patient", headers={"Authorization": "Basic abc"}), 401)
        _bundle(client.get("/fhir/Patient", headers=_bearer(secret)))
        with db.session() as session:
            revoke_api_token(session, "ehr", actor="test")
        _outcome(client.get("/fhir/Patient", headers=_bearer(secret)), 401)
        assert ("anonymous", "fhir.token_refused") in _actions(db)

    def test_bad_token_refused_even_with_a_session(
        self, app_factory: Any, seeded: Any, client_login: Any
    ) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "clin") == 302
        _bundle(client.get("/fhir/Patient"))
        _outcome(client.get("/fhir/Patient", headers=_bearer("cmfhir_wrong")), 401)

    def test_caregiver_role_refused(self, app_factory: Any, seeded: Any, client_login: Any) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "care") == 302
        assert "role may not" in _outcome(client.get(f"/fhir/Patient?patient={seeded.ada}"), 403)


class TestScope:
    def test_token_ward(self, app_factory: Any, db: Database, seeded: Any) -> None:
        with db.session() as session:
            session.execute(update(Patient).where(Patient.id == seeded.ada).values(ward="ICU"))
        secret = _token(db, "icu-ehr", ward="icu")
        client = app_factory().server.test_client()
        listed = _bundle(client.get("/fhir/Patient", headers=_bearer(secret)))
        assert [e.resource.id for e in listed.entry or []] == [str(seeded.ada)]
        refused = client.get(f"/fhir/Observation?patient={seeded.bob}&{_window()}", headers=_bearer(secret))
        assert "not available" in _outcome(refused, 403)
        # an unknown patient gets the same answer as one outside the scope
        _outcome(client.get("/fhir/Device?patient=99999", headers=_bearer(secret)), 403)
        assert ("api_token:icu-ehr", "fhir.refused") in _actions(db)

    def test_session_clinician_of_another_ward(
        self, app_factory: Any, db: Database, seeded: Any, client_login: Any
    ) -> None:
        create_user(db, "ccu", PASSWORD, "clinician", ward="CCU")
        with db.session() as session:
            session.execute(update(Patient).where(Patient.id == seeded.bob).values(ward="CCU"))
        client = app_factory().server.test_client()
        assert client_login(client, "ccu") == 302
        _outcome(client.get(f"/fhir/DiagnosticReport?patient={seeded.ada}&{_window()}"), 403)
        bundle = _bundle(client.get(f"/fhir/DiagnosticReport?patient={seeded.bob}&{_window()}"))
        assert [e.resource.id for e in bundle.entry or []] == [f"alarm-{seeded.bob_alarm}"]


class TestSearch:
    def test_observations(self, app_factory: Any, db: Database, seeded: Any) -> None:
        client = app_factory().server.test_client()
        response = client.get(
            f"/fhir/Observation?patient=Patient/{seeded.ada}&{_window()}", headers=_bearer(_token(db))
        )
        bundle = _bundle(response)
        ids = [e.resource.id or "" for e in bundle.entry or []]
        assert sum(i.startswith("ecg-") for i in ids) == 1
        assert sum(i.startswith("beat-") for i in ids) == 25
        assert sum(i.startswith("vitals-") for i in ids) == 30  # 10 rows of HR, SpO2, temperature
        assert f"alarm-{seeded.ada_alarm}" in ids
        assert all(e.resource.get_resource_type() == "Observation" for e in bundle.entry or [])
        assert all(e.search.mode == "match" for e in bundle.entry or [])
        assert (bundle.entry or [])[0].fullUrl.startswith("http://localhost/fhir/Observation/ecg-")
        ecg = (bundle.entry or [])[0].resource
        assert [c.code.coding[0].code for c in ecg.component] == ["131330", "131331"]  # MLII, V1
        with db.session() as session:
            entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "fhir.search")).one()
        assert entry.actor == "api_token:ehr"
        assert entry.target == f"patient:{seeded.ada}"
        assert entry.details["type"] == "Observation"
        assert entry.details["count"] == len(ids)
        assert entry.details["start"] is not None

    def test_reports_devices_patients(self, app_factory: Any, seeded: Any, client_login: Any) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "admin") == 302
        reports = _bundle(client.get(f"/fhir/DiagnosticReport?patient={seeded.ada}&{_window()}"))
        (report,) = [e.resource for e in reports.entry or []]
        assert report.code.coding[0].code == "11524-6"
        grouped = {r.reference for r in report.result or []}
        assert f"Observation/alarm-{seeded.ada_alarm}" in grouped
        assert any(r.startswith("Observation/beat-") for r in grouped)
        devices = _bundle(client.get(f"/fhir/Device?patient={seeded.ada}"))
        names = {e.resource.id: e.resource for e in devices.entry or []}
        assert model_device_id("test") in names
        assert any(d.deviceName and d.deviceName[0].name == "ecg-ada" for d in names.values())
        assert _bundle(client.get(f"/fhir/Device?patient={seeded.bob}")).total == 0
        patients = _bundle(client.get("/fhir/Patient"))
        assert {e.resource.id for e in patients.entry or []} == {str(seeded.ada), str(seeded.bob)}
        one = _bundle(client.get(f"/fhir/Patient?patient={seeded.bob}&_format=json"))
        assert [e.resource.name[0].text for e in one.entry or []] == ["Bob Babbage"]

    def test_paging(self, app_factory: Any, db: Database, seeded: Any) -> None:
        """Following the next links from _count=10 gives every match once, in the unpaged order."""
        client = app_factory().server.test_client()
        headers = _bearer(_token(db))
        query = f"/fhir/Observation?patient={seeded.ada}&{_window()}"
        whole = _bundle(client.get(query, headers=headers))
        ids = [e.resource.id for e in whole.entry or []]
        assert len(ids) > 20
        assert {link.relation for link in whole.link} == {"self"}  # one page holds it all
        url: str | None = f"{query}&_count=10"
        paged: list[str | None] = []
        pages = []
        while url is not None:
            response = client.get(url, headers=headers)
            assert response.status_code == 200, response.get_data(as_text=True)
            page = Bundle.model_validate_json(response.get_data(as_text=True))
            assert page.total == len(ids)
            assert len(page.entry or []) == min(10, len(ids) - len(paged))
            paged += [e.resource.id for e in page.entry or []]
            pages.append({link.relation: link.url for link in page.link})
            url = pages[-1].get("next")
        assert paged == ids
        assert "previous" not in pages[0]
        assert "_offset=0" in pages[1]["previous"]
        assert "next" not in pages[-1]
        with db.session() as session:
            last = session.scalars(
                select(AuditEntry).where(AuditEntry.action == "fhir.search").order_by(AuditEntry.id.desc())
            ).first()
        assert last is not None
        assert (last.details["count"], last.details["total"]) == (len(ids) - 10 * (len(pages) - 1), len(ids))
        counted = Bundle.model_validate_json(client.get(f"{query}&_count=0", headers=headers).get_data())
        assert (counted.total, counted.entry) == (len(ids), None)
        beyond = Bundle.model_validate_json(client.get(f"{query}&_offset=9999", headers=headers).get_data())
        assert (beyond.total, beyond.entry) == (len(ids), None)

    def test_date_window_filters(self, app_factory: Any, db: Database, seeded: Any) -> None:
        client = app_factory().server.test_client()
        headers = _bearer(_token(db))
        old = "date=ge2020-01-01&date=lt2020-01-01T01:00:00Z"
        assert (
            _bundle(client.get(f"/fhir/Observation?patient={seeded.ada}&{old}", headers=headers)).total == 0
        )

    @pytest.mark.parametrize(
        ("query", "status", "message"),
        [
            ("Observation?date=ge2026-01-01", 400, "needs `patient`"),
            ("Observation?patient={ada}", 400, "lower and an upper bound"),
            ("Observation?patient={ada}&date=ge2026-01-01", 400, "lower and an upper bound"),
            (
                "Observation?patient={ada}&date=ge2026-01-01T10:00:00&date=le2026-01-02",
                400,
                "must carry a zone",
            ),
            ("Observation?patient={ada}&date=sa2026-01-01", 400, "prefix 'sa' is not supported"),
            ("Observation?patient={ada}&date=2026-13-01", 400, "not a valid date"),
            (
                "Observation?patient={ada}&date=ge2026-01-01&date=le2026-01-02",
                400,
                "may span at most 1:00:00",
            ),
            ("Observation?patient=abc&date=2026-01-01", 400, "`patient` must be a patient id"),
            ("Observation?patient={ada}&code=8867-4", 400, "unsupported search parameters ['code']"),
            ("Patient?_format=xml", 400, "`_format` must be json"),
            ("Patient?_count=-1", 400, "`_count` must be an integer from 0 to 1000, got '-1'"),
            ("Patient?_count=1001", 400, "`_count` must be an integer from 0 to 1000"),
            ("Patient?_offset=x", 400, "`_offset` must be an integer >= 0, got 'x'"),
            ("Encounter?patient={ada}", 404, "this API serves"),
        ],
    )
    def test_bad_requests(
        self, app_factory: Any, db: Database, seeded: Any, query: str, status: int, message: str
    ) -> None:
        client = app_factory().server.test_client()
        response = client.get("/fhir/" + query.format(ada=seeded.ada), headers=_bearer(_token(db)))
        assert message in _outcome(response, status)


class TestParseDateParams:
    def test_basic(self) -> None:
        start, end = parse_date_params(["ge2026-01-01", "le2026-01-01"])
        assert start == datetime(2026, 1, 1, tzinfo=UTC)
        assert end == datetime(2026, 1, 2, tzinfo=UTC)
        start, end = parse_date_params(["gt2026-01-01T12:00:00+02:00", "lt2026-01-01T12:30:00.5Z"])
        assert start == datetime(2026, 1, 1, 10, 0, 1, tzinfo=UTC)
        assert end == datetime(2026, 1, 1, 12, 30, 0, 500000, tzinfo=UTC)

    def test_edge_cases(self) -> None:
        assert parse_date_params([]) == (None, None)
        assert parse_date_params(["2026-02"]) == (
            datetime(2026, 2, 1, tzinfo=UTC),
            datetime(2026, 3, 1, tzinfo=UTC),
        )
        assert parse_date_params(["eq2026"]) == (
            datetime(2026, 1, 1, tzinfo=UTC),
            datetime(2027, 1, 1, tzinfo=UTC),
        )
        # repeated bounds narrow the window
        start, end = parse_date_params(["ge2026-01-01", "ge2026-01-05", "le2026-02-01", "le2026-01-10"])
        assert (start, end) == (datetime(2026, 1, 5, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC))

    def test_exceptions(self) -> None:
        with pytest.raises(FhirSearchError, match="empty window"):
            parse_date_params(["ge2026-01-02", "lt2026-01-01"])
        with pytest.raises(FhirSearchError, match="must be a FHIR date or dateTime"):
            parse_date_params(["ge01/02/2026"])
        with pytest.raises(FhirSearchError, match="must carry a zone"):
            parse_date_params(["ge2026-01-01T10:00:00"])


class TestParams:
    def test_basic(self) -> None:
        assert parse_patient_param("12") == 12
        assert parse_patient_param("Patient/7") == 7
        assert parse_patient_param(None) is None
        assert bearer_token("Bearer abc") == "abc"
        assert bearer_token("bearer  abc ") == "abc"

    def test_edge_cases(self) -> None:
        assert bearer_token("Basic abc") is None
        assert bearer_token("Bearer") is None
        assert bearer_token("Bearer a b") is None

    def test_exceptions(self) -> None:
        with pytest.raises(FhirSearchError, match="`patient` must be a patient id"):
            parse_patient_param("Patient/abc")
        with pytest.raises(FhirSearchError, match="`patient` must be a patient id"):
            parse_patient_param("-1")


def test_route_registered(app_factory: Any) -> None:
    """The API answers on the dashboard's own Flask server (no second app)."""
    client = app_factory().server.test_client()
    assert isinstance(client, FlaskClient)
    assert any(rule.rule == "/fhir/<resource_type>" for rule in client.application.url_map.iter_rules())


# The /admin/ehr page's callbacks, through the Flask test client ------------------------------


def _page_callback(client: FlaskClient, input_match: str, inputs: list[Any], state: list[Any]) -> Any:
    """Fire the callback whose input id contains ``input_match`` as Dash's renderer would."""
    client.get("/admin/ehr", headers={"Accept": "text/html"})
    csrf = client.get_cookie("_csrf_token")
    assert csrf is not None
    deps = client.get("/_dash-dependencies").get_json()
    spec = next(d for d in deps if any(input_match in str(i["id"]) for i in d["inputs"]))
    outputs = []
    for part in spec["output"].strip(".").split("..."):
        element, _, prop = part.partition(".")
        outputs.append({"id": element, "property": prop})
    changed = inputs[0][0] if isinstance(inputs[0], list) else inputs[0]  # pattern-matching inputs: a list
    trigger = (
        changed["id"]
        if isinstance(changed["id"], str)
        else json.dumps(changed["id"], separators=(",", ":"), sort_keys=True)
    )
    payload = {
        "output": spec["output"],
        "outputs": outputs,
        "inputs": inputs,
        "changedPropIds": [f"{trigger}.{changed['property']}"],
        "state": state,
    }
    return client.post("/_dash-update-component", json=payload, headers={"X-CSRFToken": csrf.value})


def _issue(client: FlaskClient, name: str, ward: str | None = None) -> Any:
    return _page_callback(
        client,
        "ehr-issue",
        [{"id": "ehr-issue", "property": "n_clicks", "value": 1}],
        [
            {"id": "ehr-token-name", "property": "value", "value": name},
            {"id": "ehr-token-ward", "property": "value", "value": ward},
        ],
    )


class TestEhrPage:
    def test_basic(self, app_factory: Any, db: Database, seeded: Any, client_login: Any) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "admin") == 302
        response = _issue(client, "ehr-page")
        assert response.status_code == 200, response.get_data(as_text=True)
        secret = re.search(r"cmfhir_[A-Za-z0-9_-]+", response.get_data(as_text=True))
        assert secret is not None
        machine = app_factory().server.test_client()
        _bundle(machine.get("/fhir/Patient", headers=_bearer(secret.group(0))))
        with db.session() as session:
            row = session.scalars(select(ApiToken).where(ApiToken.name == "ehr-page")).one()
            assert row.created_by_id == seeded.admin
        trigger = {"token": "ehr-page", "type": "ehr-revoke"}
        response = _page_callback(
            client, '"type":"ehr-revoke"', [[{"id": trigger, "property": "n_clicks", "value": 1}]], []
        )
        assert "revoked" in response.get_data(as_text=True)
        _outcome(machine.get("/fhir/Patient", headers=_bearer(secret.group(0))), 401)
        assert (f"user:{seeded.admin}", "api_token.revoke") in _actions(db)

    def test_non_admin_refused(self, app_factory: Any, db: Database, seeded: Any, client_login: Any) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "clin") == 302
        response = _issue(client, "sneaky")
        assert response.status_code == 204
        with db.session() as session:
            assert session.scalars(select(ApiToken)).all() == []
