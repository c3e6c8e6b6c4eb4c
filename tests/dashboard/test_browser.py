"""The dashboard in a real browser (dash_duo, headless chromium): login, roles, alarms."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from sqlalchemy import select

from storage import Alarm, AlarmState, AuditEntry, Database

pytestmark = pytest.mark.browser


def _audit_actions(db: Database) -> list[tuple[str, str, str | None]]:
    with db.session() as session:
        return [
            (e.actor, e.action, e.target) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        ]


class TestLogin:
    def test_login_and_logout(
        self, dash_duo: Any, app_factory: Any, seeded: Any, db: Database, browser_login: Any, screenshot: Any
    ) -> None:
        dash_duo.start_server(app_factory(), navigate=False)
        dash_duo.driver.get(dash_duo.server.url + "/alarms")
        dash_duo.wait_for_element("#login-form")
        assert "/login" in dash_duo.driver.current_url
        screenshot(dash_duo, "login")
        browser_login(dash_duo, "clin")
        dash_duo.wait_for_element("#tile-1")
        dash_duo.wait_for_text_to_equal("#cm-user", "Dr Clinician · clinician")
        screenshot(dash_duo, "central_station")
        dash_duo.find_element("#logout-button").click()
        dash_duo.wait_for_element("#login-form")
        dash_duo.driver.get(dash_duo.server.url + "/")
        dash_duo.wait_for_element("#login-form")
        actions = [a for _, a, _ in _audit_actions(db)]
        assert "auth.login" in actions
        assert "auth.logout" in actions

    def test_wrong_password_fails_and_is_audited(
        self, dash_duo: Any, app_factory: Any, seeded: Any, db: Database, screenshot: Any
    ) -> None:
        dash_duo.start_server(app_factory(), navigate=False)
        dash_duo.driver.get(dash_duo.server.url + "/login")
        dash_duo.wait_for_element("#username").send_keys("clin")
        dash_duo.find_element("#password").send_keys("not the password")
        dash_duo.find_element("#login-button").click()
        dash_duo.wait_for_text_to_equal("#login-error", "Wrong username or password.")
        screenshot(dash_duo, "login_failed")
        failures = [
            (actor, action) for actor, action, _ in _audit_actions(db) if action == "auth.login_failed"
        ]
        assert failures == [("anonymous", "auth.login_failed")]
        assert "auth.login" not in [a for _, a, _ in _audit_actions(db)]

    def test_unauthenticated_callback_gets_no_data(
        self, dash_duo: Any, app_factory: Any, seeded: Any
    ) -> None:
        dash_duo.start_server(app_factory(), navigate=False)
        dash_duo.driver.get(dash_duo.server.url + "/login")
        dash_duo.wait_for_element("#login-form")
        body = json.dumps(
            {
                "output": "central-tiles.children",
                "outputs": {"id": "central-tiles", "property": "children"},
                "inputs": [{"id": "central-refresh", "property": "n_intervals", "value": 1}],
                "changedPropIds": [],
                "state": [],
            }
        )
        result = dash_duo.driver.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "Promise.all(['/_dash-update-component', '/_dash-layout', '/_dash-dependencies', '/live-token']"
            ".map((u, i) => fetch(u, {method: i === 0 || i === 3 ? 'POST' : 'GET',"
            " body: i === 0 ? arguments[0] : undefined, headers: {'Content-Type': 'application/json'}})"
            ".then(r => r.text()"
            ".then(t => [r.status, t]))))"
            ".then(done, e => done(String(e)));",
            body,
        )
        for status, text in result:
            assert status == 401
            assert "Ada" not in text
            assert "Bob" not in text


class TestRoles:
    def test_caregiver_sees_assigned_patients_without_acknowledge(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, db: Database, screenshot: Any
    ) -> None:
        start_logged_in("care")
        dash_duo.wait_for_element(f"#my-patient-{seeded.ada}")  # caregivers land on their patients
        dash_duo.driver.get(dash_duo.server.url + "/")
        dash_duo.wait_for_element(f"#tile-{seeded.ada}")
        assert dash_duo.find_elements(f"#tile-{seeded.bob}") == []
        dash_duo.driver.get(dash_duo.server.url + "/alarms")
        dash_duo.wait_for_element(f"#alarm-row-{seeded.ada_alarm}")
        assert dash_duo.find_elements(f"#alarm-row-{seeded.bob_alarm}") == []
        assert dash_duo.find_elements("button.btn-ack") == []
        screenshot(dash_duo, "caregiver_alarms")
        dash_duo.driver.get(dash_duo.server.url + f"/patient/{seeded.bob}")
        dash_duo.wait_for_text_to_equal(".cm-empty", "This patient is not available to you.")

    def test_forged_acknowledge_is_refused(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, db: Database, browser_login: Any
    ) -> None:
        start_logged_in("care")
        dash_duo.wait_for_element(f"#my-patient-{seeded.ada}")  # caregivers land on their patients
        dash_duo.driver.get(dash_duo.server.url + "/")
        dash_duo.wait_for_element(f"#tile-{seeded.ada}")
        http = requests.Session()
        # Flask-Login's "strong" session protection ties the session to the browser's user agent.
        http.headers["User-Agent"] = dash_duo.driver.execute_script("return navigator.userAgent")
        for cookie in dash_duo.driver.get_cookies():
            http.cookies.set(cookie["name"], cookie["value"])
        csrf = http.cookies.get("_csrf_token")
        assert csrf
        for alarm in (seeded.ada_alarm, seeded.bob_alarm):
            trigger = {"alarm": alarm, "type": "ack"}
            payload: dict[str, Any] = {
                "output": "ack-result.data",
                "outputs": {"id": "ack-result", "property": "data"},
                "inputs": [[{"id": trigger, "property": "n_clicks", "value": 1}]],
                "changedPropIds": [json.dumps(trigger, separators=(",", ":"), sort_keys=True) + ".n_clicks"],
                "state": [{"id": "ack-note", "property": "value", "value": "forged"}],
            }
            response = http.post(
                dash_duo.server.url + "/_dash-update-component", json=payload, headers={"X-CSRFToken": csrf}
            )
            assert response.status_code == 200, response.text
            assert '"ok":false' in response.text.replace(" ", "")
            without_csrf = requests.post(
                dash_duo.server.url + "/_dash-update-component",
                json=payload,
                cookies=http.cookies,
                headers={"User-Agent": http.headers["User-Agent"]},
            )
            assert without_csrf.status_code == 400
        with db.session() as session:
            states = {a.id: a.state for a in session.scalars(select(Alarm))}
        assert states[seeded.ada_alarm] == AlarmState.ACTIVE
        assert states[seeded.bob_alarm] == AlarmState.ACTIVE
        refused = [t for _, a, t in _audit_actions(db) if a == "alarm.acknowledge_refused"]
        assert refused == [f"alarm:{seeded.ada_alarm}", f"alarm:{seeded.bob_alarm}"]


class TestCaregiverView:
    def test_caregiver_lands_on_read_only_patient_cards(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, screenshot: Any
    ) -> None:
        start_logged_in("care")
        card = f"#my-patient-{seeded.ada}"
        dash_duo.wait_for_element(f"{card} .js-plotly-plot")
        assert dash_duo.driver.current_url.endswith("/my-patients")
        assert "Ada Lovelace" in dash_duo.find_element(card).text
        assert dash_duo.find_elements(f"#my-patient-{seeded.bob}") == []
        assert "Bob Babbage" not in dash_duo.find_element("#my-patients-cards").text
        row = f"#history-row-{seeded.ada_alarm}"
        dash_duo.wait_for_contains_text(row, "pvc isolated PVC")
        assert dash_duo.find_element(f"{row} .cm-alarm.alarm-medium").text.startswith("**")
        assert dash_duo.find_element(f"{row} .cm-state").text == "active"
        assert dash_duo.find_elements(f"#history-row-{seeded.bob_alarm}") == []
        assert "75" in dash_duo.find_element(f"{card} .cm-vitals").text
        assert dash_duo.find_elements("button.btn-ack") == []
        assert dash_duo.find_elements(f"{card} button") == []
        assert any(link.text == "My patients" for link in dash_duo.find_elements(".cm-navlink"))
        screenshot(dash_duo, "caregiver_view")

    def test_clinician_opens_it_with_the_patients_they_can_see(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, browser_login: Any
    ) -> None:
        start_logged_in("clin", next_path="/my-patients")
        dash_duo.wait_for_element(f"#my-patient-{seeded.bob}")
        dash_duo.wait_for_element(f"#my-patient-{seeded.ada}")
        assert dash_duo.find_elements("button.btn-ack") == []


class TestAlarms:
    def test_acknowledge_changes_state_everywhere_and_is_audited(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, db: Database, screenshot: Any
    ) -> None:
        start_logged_in("clin")
        dash_duo.driver.get(dash_duo.server.url + "/alarms")
        row = f"#alarm-row-{seeded.bob_alarm}"
        dash_duo.wait_for_element(f"{row} button.btn-ack")
        screenshot(dash_duo, "alarms_before_ack")
        dash_duo.find_element("#ack-note").send_keys("seen, nurse at bedside")
        dash_duo.find_element(f"{row} button.btn-ack").click()
        dash_duo.wait_for_text_to_equal(f"{row} .cm-state", "acknowledged")
        assert dash_duo.find_elements(f"{row} button.btn-ack") == []
        with db.session() as session:
            alarm = session.get(Alarm, seeded.bob_alarm)
            assert alarm is not None
            assert alarm.state == AlarmState.ACKNOWLEDGED
            assert alarm.acknowledged_by_id == seeded.clinician
            assert alarm.note == "seen, nurse at bedside"
        assert (
            f"user:{seeded.clinician}",
            "alarm.acknowledge",
            f"alarm:{seeded.bob_alarm}",
        ) in _audit_actions(db)
        dash_duo.driver.get(dash_duo.server.url + "/")
        dash_duo.wait_for_element(f"#tile-{seeded.bob} .cm-alarm.acknowledged")
        dash_duo.driver.get(dash_duo.server.url + f"/patient/{seeded.bob}")
        dash_duo.wait_for_text_to_equal(f"#alarm-row-{seeded.bob_alarm} .cm-state", "acknowledged")
        dash_duo.driver.get(dash_duo.server.url + "/alarms")
        dash_duo.wait_for_element(f"#alarm-row-{seeded.ada_alarm} button")
        dash_duo.find_element(f"#alarm-row-{seeded.ada_alarm} button.btn-outline").click()
        dash_duo.wait_for_element("#alarm-strip .js-plotly-plot")
        dash_duo.wait_for_contains_text("#alarm-history", "raised: pvc")
        screenshot(dash_duo, "alarm_strip")


class TestHistoryAndAdmin:
    def test_history_shows_known_alarm_and_exports(
        self,
        dash_duo: Any,
        start_logged_in: Any,
        seeded: Any,
        db: Database,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        start_logged_in("clin", next_path="/history")
        dash_duo.wait_for_element("#history-patient")
        dash_duo.select_dcc_dropdown("#history-patient", value="Ada Lovelace")
        dash_duo.find_element("#history-show").click()
        dash_duo.wait_for_contains_text("#history-overview", f"pvc #{seeded.ada_alarm}")
        dash_duo.find_element("#export-alarms").click()
        assert wait_until(lambda: any(a == "export.alarms_csv" for _, a, _ in _audit_actions(db)))
        screenshot(dash_duo, "history")

    def test_admin_registers_device_and_reads_audit(
        self, dash_duo: Any, start_logged_in: Any, seeded: Any, db: Database, screenshot: Any
    ) -> None:
        start_logged_in("admin", next_path="/admin")
        dash_duo.wait_for_element("#audit-table")
        dash_duo.find_element("#new-device").send_keys("ecg-bed-7")
        dash_duo.find_element("#add-device").click()
        token = dash_duo.wait_for_element("#device-token").text
        assert len(token) > 30
        dash_duo.wait_for_contains_text("#audit-table", "device.register")
        screenshot(dash_duo, "admin")
        with db.session() as session:
            stored = session.scalars(
                select(AuditEntry.details).where(AuditEntry.action == "device.register")
            ).all()
        assert token not in json.dumps(stored)


class TestSound:
    def test_tones_by_priority_and_audio_pause(
        self,
        dash_duo: Any,
        start_logged_in: Any,
        seeded: Any,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        start_logged_in("clin")
        dash_duo.wait_for_element(f"#tile-{seeded.bob} .cm-alarm.alarm-high")
        assert (
            dash_duo.driver.execute_script("return window.cmLive.lastTone || null") is None
        )  # silent until enabled
        dash_duo.find_element("#cm-sound-toggle").click()
        assert wait_until(lambda: dash_duo.driver.execute_script("return window.cmLive.lastTone") == "high")
        dash_duo.wait_for_element("#cm-audio-pause").click()
        dash_duo.wait_for_contains_text("#cm-sound-bar", "AUDIO PAUSED 1:")
        assert dash_duo.find_element(f"#tile-{seeded.bob} .cm-alarm.alarm-high").is_displayed()
        screenshot(dash_duo, "audio_paused")
