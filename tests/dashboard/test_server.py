"""The Flask side of the dashboard, through its test client: guard, CSRF, sessions, tokens."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from sqlalchemy import select

from dashboard import create_app, run_dashboard
from dashboard.queries import acknowledge
from ingest.live_tokens import verify_live_token
from storage import Alarm, AlarmState, AuditEntry, Database, utcnow

LIVE_SECRET = "live-secret-for-tests-0123456789"


class TestGuard:
    @pytest.mark.parametrize(
        "path", ["/", "/alarms", "/patient/1", "/_dash-layout", "/_dash-dependencies", "/assets/live.js"]
    )
    def test_basic(self, app_factory: Any, seeded: Any, path: str) -> None:
        client = app_factory().server.test_client()
        page = client.get(path, headers={"Accept": "text/html"})
        data = client.get(path)
        assert page.status_code in (302, 401)
        assert data.status_code == 401
        assert b"Ada" not in page.data + data.data

    def test_callback_without_login(self, app_factory: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        response = client.post("/_dash-update-component", json={"output": "central-tiles.children"})
        assert response.status_code == 401
        assert client.post("/live-token", json={}).status_code == 401

    def test_login_page_is_public_and_hardened(
        self, app_factory: Any, client_login: Any, seeded: Any
    ) -> None:
        client = app_factory().server.test_client()
        response = client.get("/login")
        assert response.status_code == 200
        assert response.headers["X-Frame-Options"] == "DENY"
        assert client_login(client, "clin") == 302
        cookie = client.get_cookie("cm_session")
        assert cookie is not None
        assert cookie.http_only
        assert cookie.same_site == "Lax"
        assert client.get("/", headers={"Accept": "text/html"}).status_code == 200

    def test_open_redirect_refused(self, app_factory: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        html = client.get("/login").get_data(as_text=True)
        token = html.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        response = client.post(
            "/login?next=//evil.example/x",
            data={"csrf_token": token, "username": "clin", "password": "correct horse battery"},
        )
        assert response.headers["Location"] == "/"


class TestCsrf:
    def test_login_without_token_fails(self, app_factory: Any, seeded: Any, db: Database) -> None:
        client = app_factory().server.test_client()
        response = client.post("/login", data={"username": "clin", "password": "correct horse battery"})
        assert response.status_code == 400
        with db.session() as session:
            assert "auth.login" not in [a.action for a in session.scalars(select(AuditEntry))]

    def test_callback_needs_token(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        client_login(client, "clin")
        response = client.post("/_dash-update-component", json={"output": "central-tiles.children"})
        assert response.status_code == 400


class TestSession:
    def test_idle_timeout(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory(IDLE_TIMEOUT_S=-1).server.test_client()
        client_login(client, "clin")
        assert client.get("/_dash-layout").status_code == 401

    def test_throttled_after_failures(
        self, app_factory: Any, client_login: Any, seeded: Any, db: Database
    ) -> None:
        client = app_factory(LOGIN_MAX_FAILURES=2).server.test_client()
        assert client_login(client, "clin", "wrong password 1") == 401
        assert client_login(client, "clin", "wrong password 2") == 401
        assert client_login(client, "clin") == 401  # right password, but locked
        with db.session() as session:
            actions = [a.action for a in session.scalars(select(AuditEntry))]
        assert actions.count("auth.login_failed") == 2
        assert "auth.login_throttled" in actions

    def test_throttle_survives_restart(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        """Failures are counted in the audit log, so a new process (a new app) still refuses."""
        first = app_factory(LOGIN_MAX_FAILURES=2).server.test_client()
        assert client_login(first, "clin", "wrong password 1") == 401
        assert client_login(first, "clin", "wrong password 2") == 401
        restarted = app_factory(LOGIN_MAX_FAILURES=2).server.test_client()
        assert client_login(restarted, "clin") == 401
        assert client_login(restarted, "admin") == 401  # the address is locked too
        fresh = app_factory(LOGIN_MAX_FAILURES=2).server.test_client()
        fresh.environ_base["REMOTE_ADDR"] = "10.9.9.9"
        assert client_login(fresh, "admin") == 302  # another user from another address is not

    def test_logout_clears_session(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        client_login(client, "clin")
        page = client.get("/", headers={"Accept": "text/html"})
        assert page.status_code == 200
        csrf = client.get_cookie("_csrf_token")
        assert csrf is not None
        assert client.post("/logout", data={"csrf_token": csrf.value}).status_code == 302
        assert client.get("/_dash-layout").status_code == 401


class TestStyling:
    def test_login_page_is_styled(self, app_factory: Any) -> None:
        client = app_factory().server.test_client()
        html = client.get("/login").get_data(as_text=True)
        assert '<link rel="stylesheet" href="/assets/bootstrap.min.css">' in html
        assert html.index("bootstrap.min.css") < html.index("monitor.css")
        assert 'data-bs-theme="dark"' in html
        assert "localStorage.getItem('cm-theme')" in html  # the stored theme before first paint

    def test_public_stylesheets_only(self, app_factory: Any) -> None:
        client = app_factory().server.test_client()
        with client.get("/assets/bootstrap.min.css") as bootstrap:  # a file response: close it
            assert bootstrap.status_code == 200
            assert b"Bootstrap" in bootstrap.data[:200]  # with its license header
            assert b"data-bs-theme=dark" in bootstrap.data
        with client.get("/assets/monitor.css") as monitor:
            assert monitor.status_code == 200
        for private in ("/assets/live.js", "/assets/bootstrap.LICENSE.txt", "/assets/../dashboard/auth.py"):
            assert client.get(private).status_code == 401, private
        assert client.get("/assets/monitor.css/../live.js").status_code == 401

    def test_app_pages_load_bootstrap_before_monitor(
        self, app_factory: Any, client_login: Any, seeded: Any
    ) -> None:
        client = app_factory().server.test_client()
        client_login(client, "clin")
        html = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
        assert '<html lang="en" data-bs-theme="dark">' in html
        assert html.index("/assets/bootstrap.min.css") < html.index("/assets/monitor.css")


class TestLiveToken:
    def test_basic(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        client_login(client, "care")
        client.get("/", headers={"Accept": "text/html"})
        csrf = client.get_cookie("_csrf_token")
        assert csrf is not None
        response = client.post("/live-token", json={}, headers={"X-CSRFToken": csrf.value})
        assert response.status_code == 200
        body = response.get_json()
        claims = verify_live_token(LIVE_SECRET, body["token"], now=utcnow().timestamp())
        assert claims.patient_ids == {seeded.ada}  # the caregiver's scope only
        assert claims.user_id == seeded.caregiver

    def test_not_configured(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory(live_url=None, LIVE_SECRET=None).server.test_client()
        client_login(client, "clin")
        client.get("/", headers={"Accept": "text/html"})
        csrf = client.get_cookie("_csrf_token")
        assert csrf is not None
        assert client.post("/live-token", json={}, headers={"X-CSRFToken": csrf.value}).status_code == 503

    def test_exceptions(self, db: Database, tmp_path: Any) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            create_app(database=db, instance_path=tmp_path, live_secret="short", live_url="ws://x/live")


class TestAcknowledge:
    def test_basic(self, db: Database, seeded: Any) -> None:
        acknowledge(db, seeded.clinician, "clinician", seeded.bob_alarm, note=" ok ", at=utcnow())
        with db.session() as session:
            alarm = session.get(Alarm, seeded.bob_alarm)
            assert alarm is not None
            assert (alarm.state, alarm.note) == (AlarmState.ACKNOWLEDGED, "ok")

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        from dashboard.access import AccessDeniedError

        for user, role in ((seeded.caregiver, "caregiver"), (seeded.admin, "admin")):
            with pytest.raises(AccessDeniedError, match="may not acknowledge"):
                acknowledge(db, user, role, seeded.ada_alarm, note=None, at=utcnow())
        with pytest.raises(AccessDeniedError):
            acknowledge(db, seeded.clinician, "clinician", 12345, note=None, at=utcnow())


class TestFactory:
    def test_secret_key_kept_in_instance_folder(self, db: Database, tmp_path: Any) -> None:
        first = create_app(database=db, instance_path=tmp_path).server.config["SECRET_KEY"]
        second = create_app(database=db, instance_path=tmp_path).server.config["SECRET_KEY"]
        assert first == second
        assert len(first) == 64
        assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0

    def test_run_dashboard(self, app_factory: Any, seeded: Any) -> None:
        import urllib.error
        import urllib.request

        handle = run_dashboard(app_factory(), port=0)
        try:
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(handle.url + "/_dash-layout", timeout=5)
            with urllib.request.urlopen(handle.url + "/login", timeout=5) as response:
                assert response.status == 200
        finally:
            handle.shutdown()

    def test_never_imports_torch(self) -> None:
        code = "import sys, dashboard; sys.exit('torch' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


class TestLanding:
    def test_caregiver_lands_on_my_patients(self, app_factory: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        html = client.get("/login").get_data(as_text=True)
        token = html.split('name="csrf_token" type="hidden" value="')[1].split('"')[0]
        response = client.post(
            "/login", data={"csrf_token": token, "username": "care", "password": "correct horse battery"}
        )
        assert response.headers["Location"] == "/my-patients"
        assert client.get("/my-patients", headers={"Accept": "text/html"}).status_code == 200
