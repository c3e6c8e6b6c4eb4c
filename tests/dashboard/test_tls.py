"""The dashboard over https, and behind a TLS-terminating reverse proxy.

What is proven here: :func:`run_dashboard` with a TLS context serves the
login page over https to a client that trusts the self-signed certificate,
marks the session cookie ``Secure``, still refuses anonymous requests, and
does not speak plain http; ``/live-token`` tells the browser a ``wss://``
URL when the page is https; with ``BEHIND_PROXY`` the proxy's
``X-Forwarded-*`` headers give the browser's scheme, host and address (the
audit log records the real client), and without it they are ignored.
"""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest
from sqlalchemy import select

from dashboard import run_dashboard
from ingest.tls import client_ssl_context, server_ssl_context
from storage import AuditEntry, Database

PROXY_HEADERS = {
    "HTTP_X_FORWARDED_FOR": "203.0.113.9",
    "HTTP_X_FORWARDED_PROTO": "https",
    "HTTP_X_FORWARDED_HOST": "monitor.example.org",
    "HTTP_REFERER": "https://monitor.example.org/login",
}


def live_url_for(client: Any, domain: str = "localhost") -> str:
    """The ``/live`` URL that ``/live-token`` gives a logged-in client."""
    client.get("/", headers={"Accept": "text/html"})
    csrf = client.get_cookie("_csrf_token", domain=domain)
    assert csrf is not None
    response = client.post("/live-token", json={}, headers={"X-CSRFToken": csrf.value})
    assert response.status_code == 200, response.get_data(as_text=True)
    return str(response.get_json()["url"])


def failed_login_remotes(db: Database) -> list[str]:
    with db.session() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "auth.login_failed")).all()
        return [str(e.details.get("remote")) for e in entries]


class TestHttps:
    def test_basic(self, app_factory: Any, seeded: Any, tls_files: Any) -> None:
        app = app_factory()
        handle = run_dashboard(
            app, port=0, ssl_context=server_ssl_context(tls_files.certfile, tls_files.keyfile)
        )
        trust = client_ssl_context(tls_files.certfile)
        try:
            assert handle.url.startswith("https://127.0.0.1:")
            with urllib.request.urlopen(handle.url + "/login", timeout=5, context=trust) as response:
                assert response.status == 200
                cookies = response.headers.get_all("Set-Cookie") or []
            session_cookie = [c for c in cookies if c.startswith("cm_session=")]
            assert session_cookie, cookies
            assert "Secure" in session_cookie[0]
            with pytest.raises(urllib.error.HTTPError, match="401"):
                urllib.request.urlopen(handle.url + "/_dash-layout", timeout=5, context=trust)
        finally:
            handle.shutdown()
        assert app.server.config["SESSION_COOKIE_SECURE"] is True

    def test_exceptions(self, app_factory: Any, seeded: Any, tls_files: Any, make_cert: Any) -> None:
        """Plain http, and a client that does not trust the certificate, get nothing."""
        handle = run_dashboard(
            app_factory(), port=0, ssl_context=server_ssl_context(tls_files.certfile, tls_files.keyfile)
        )
        try:
            plain = handle.url.replace("https://", "http://")
            with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
                urllib.request.urlopen(plain + "/login", timeout=5)
            stranger = client_ssl_context(make_cert("stranger").certfile)
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
                urllib.request.urlopen(handle.url + "/login", timeout=5, context=stranger)
        finally:
            handle.shutdown()

    def test_idle_connection_blocks_nobody(self, app_factory: Any, seeded: Any, tls_files: Any) -> None:
        """A client that connects and never starts TLS does not hold up the next one."""
        handle = run_dashboard(
            app_factory(), port=0, ssl_context=server_ssl_context(tls_files.certfile, tls_files.keyfile)
        )
        trust = client_ssl_context(tls_files.certfile)
        try:
            with (
                socket.create_connection((handle.host, handle.port), timeout=5),  # idle: sends nothing
                urllib.request.urlopen(handle.url + "/login", timeout=5, context=trust) as response,
            ):
                assert response.status == 200
        finally:
            handle.shutdown()

    def test_plain_http_by_default(self, app_factory: Any) -> None:
        handle = run_dashboard(app_factory(), port=0)
        try:
            assert handle.url.startswith("http://")
        finally:
            handle.shutdown()


class TestLiveUrl:
    def test_basic(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        """``{host}`` is the name the browser used; the configured scheme is kept."""
        # The test client addresses requests to SERVER_NAME.
        app = app_factory(live_url="wss://{host}:8765/live", SERVER_NAME="monitor.example.org:8050")
        client = app.server.test_client()
        assert client_login(client, "clin") == 302
        assert live_url_for(client, "monitor.example.org") == "wss://monitor.example.org:8765/live"

    @pytest.mark.parametrize(("base", "expected"), [("https", "wss"), ("http", "ws")])
    def test_path_follows_the_page(
        self, app_factory: Any, client_login: Any, seeded: Any, base: str, expected: str
    ) -> None:
        """A bare path is on the page's own origin, wss:// when the page is https."""
        app = app_factory(live_url="/live", SERVER_NAME="monitor.example.org:8443", PREFERRED_URL_SCHEME=base)
        client = app.server.test_client()
        if base == "https":
            client.environ_base["HTTP_REFERER"] = "https://monitor.example.org:8443/login"
        assert client_login(client, "clin") == 302
        assert live_url_for(client, "monitor.example.org") == f"{expected}://monitor.example.org:8443/live"


class TestBehindProxy:
    def test_basic(self, app_factory: Any, client_login: Any, seeded: Any, db: Database) -> None:
        app = app_factory(live_url="/live", BEHIND_PROXY=1)
        assert app.server.config["SESSION_COOKIE_SECURE"] is True
        client = app.server.test_client()
        client.environ_base.update(PROXY_HEADERS)
        assert client_login(client, "clin", "wrong password") == 401
        assert client_login(client, "clin") == 302
        session_cookie = client.get_cookie("cm_session")
        assert session_cookie is not None
        assert session_cookie.secure
        assert live_url_for(client) == "wss://monitor.example.org/live"
        assert failed_login_remotes(db) == ["203.0.113.9"]  # the browser, not the proxy

    def test_edge_cases(self, app_factory: Any, client_login: Any, seeded: Any, db: Database) -> None:
        """Without BEHIND_PROXY, forged X-Forwarded-* headers change nothing."""
        client = app_factory(live_url="/live").server.test_client()
        client.environ_base.update(PROXY_HEADERS)
        assert client_login(client, "clin", "wrong password") == 401
        assert client_login(client, "clin") == 302
        assert live_url_for(client) == "ws://localhost/live"
        assert failed_login_remotes(db) == ["127.0.0.1"]

    def test_environment(self, app_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CARDIAC_MONITOR_BEHIND_PROXY", "2")
        assert app_factory().server.config["BEHIND_PROXY"] == 2
        monkeypatch.setenv("CARDIAC_MONITOR_BEHIND_PROXY", "true")
        assert app_factory().server.config["BEHIND_PROXY"] == 1

    def test_exceptions(self, app_factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("CARDIAC_MONITOR_BEHIND_PROXY", "nginx")
        with pytest.raises(ValueError, match="`CARDIAC_MONITOR_BEHIND_PROXY` must be a number of proxies"):
            app_factory()
        monkeypatch.delenv("CARDIAC_MONITOR_BEHIND_PROXY")
        with pytest.raises(
            ValueError, match=r"`BEHIND_PROXY` must be a number of proxies \(0 for none\), got -1"
        ):
            app_factory(BEHIND_PROXY=-1)
