"""The application factory: Dash on a hardened Flask server, and its WSGI runner.

Nothing happens at import time. :func:`create_app` builds a new Flask server
and Dash app each call; configuration layers defaults, then the environment
(``CARDIAC_MONITOR_*``), then the caller's overrides.

Security on the server side, for every route (pages, ``/_dash-*`` callback
and layout routes, ``/assets``, component bundles, downloads) except the
login page and the two static stylesheets it links:

* a ``before_request`` guard: no valid session, no data. HTML page requests
  are redirected to ``/login``; everything else gets ``401``. Only
  ``/fhir/...`` is left to :mod:`dashboard.fhir_api`, which takes an API
  bearer token or the session and refuses with its own ``401``;
* idle timeout: a session without user activity (timer callbacks do not
  count, see :func:`dashboard.auth.is_user_activity`) for
  ``IDLE_TIMEOUT_S`` is ended;
* CSRF (Flask-WTF) on the login form and on every POST, including Dash
  callbacks: the renderer sends the ``_csrf_token`` cookie back as the
  ``X-CSRFToken`` header;
* session cookies HttpOnly and SameSite=Lax (``Secure`` with
  ``SESSION_COOKIE_SECURE``, set when served over https or behind a
  proxy); the session is cleared on login and logout;
* TLS: :func:`run_dashboard` serves https with an :class:`ssl.SSLContext`;
  behind a reverse proxy, ``BEHIND_PROXY`` (the number of proxies, from
  ``$CARDIAC_MONITOR_BEHIND_PROXY``) trusts their ``X-Forwarded-For``,
  ``-Proto`` and ``-Host`` headers (Werkzeug's ``ProxyFix``), so that the
  client's address, the scheme and the host are the browser's;
* login throttling per username and per address, counted in the audit log
  (:class:`~dashboard.auth.AuditLoginThrottle`); logins, failures,
  logouts, acknowledgements and exports are written to the audit log.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import dash
import flask
from dash import _callback, dcc, html
from flask.typing import ResponseReturnValue
from flask_login import LoginManager, current_user, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect, generate_csrf
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import BaseWSGIServer, make_server
from werkzeug.wrappers import Response
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from dashboard import components
from dashboard.access import visible_patients
from dashboard.auth import AuditLoginThrottle, SessionUser, authenticate, is_user_activity, load_session_user
from dashboard.fhir_api import FHIR_PREFIX, register_fhir_api
from dashboard.report import register_report_route
from ingest.live_tokens import issue_live_token, live_secret_key
from storage import Database, append_audit

__all__ = ["ASSETS_FOLDER", "DashboardServer", "create_app", "run_dashboard"]

logger = logging.getLogger(__name__)

#: The top-level ``assets/`` folder: CSS (ECG paper, alarm colours, themes) and ``live.js``.
ASSETS_FOLDER = Path(__file__).resolve().parent.parent / "assets"

#: Environment variables read by :func:`create_app`.
SECRET_KEY_ENV = "CARDIAC_MONITOR_SECRET_KEY"
LIVE_SECRET_ENV = "CARDIAC_MONITOR_LIVE_SECRET"
LIVE_URL_ENV = "CARDIAC_MONITOR_LIVE_URL"
BEHIND_PROXY_ENV = "CARDIAC_MONITOR_BEHIND_PROXY"

_DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "SESSION_COOKIE_SECURE": False,  # True behind TLS; the embedded default is plain HTTP on localhost
    "SESSION_COOKIE_NAME": "cm_session",
    "REMEMBER_COOKIE_DURATION": 0,
    "PERMANENT_SESSION_LIFETIME": 12 * 3600,
    "WTF_CSRF_TIME_LIMIT": None,  # valid for the session, which the idle timeout bounds
    "IDLE_TIMEOUT_S": 15 * 60,
    "LIVE_TOKEN_TTL_S": 60.0,
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_WINDOW_S": 15 * 60,
    "LOGIN_LOCKOUT_S": 5 * 60,
    "TILE_REFRESH_MS": 2000,
    "EXTERNAL_STYLESHEETS": [],
    "BEHIND_PROXY": 0,  # reverse proxies in front whose X-Forwarded-* headers are trusted
}

# Requests that need no session: the login page, its favicon and the static stylesheets it links
# (Bootstrap and the theme; no patient data). Every other asset (live.js included) needs a session.
_PUBLIC_PATHS = frozenset({"/login", "/favicon.ico", *components.PUBLIC_STYLESHEETS})


def create_app(
    *,
    database: Database,
    secret_key: str | None = None,
    instance_path: str | Path | None = None,
    live_url: str | None = None,
    live_secret: str | bytes | None = None,
    config: Mapping[str, Any] | None = None,
) -> dash.Dash:
    """Build the dashboard: a Dash app (pages API) on a hardened Flask server.

    Parameters
    ----------
    database : Database
        Initialised, migrated database shared with the ingest server.
    secret_key : str, optional
        Flask session key. Default ``$CARDIAC_MONITOR_SECRET_KEY``, else a
        random key generated once and kept in ``instance_path/secret_key``.
    instance_path : path, optional
        Instance folder (default ``./instance``).
    live_url : str, optional
        ``ws(s)://host:port/live`` of the ingest server, as the browser
        reaches it; ``{host}`` in it stands for the host name the browser
        used, and a bare path (``/live``, behind a proxy) for the page's own
        origin, with ``wss`` when the page is https. Default
        ``$CARDIAC_MONITOR_LIVE_URL``; without it the live views say that
        live data is not configured.
    live_secret : str or bytes, optional
        Secret shared with the ingest server for ``/live`` tokens. Default
        ``$CARDIAC_MONITOR_LIVE_SECRET``.
    config : mapping, optional
        Flask config overrides (tests: ``IDLE_TIMEOUT_S``, ``LOGIN_*``, ...;
        ``BEHIND_PROXY``, ``SESSION_COOKIE_SECURE``).

    Returns
    -------
    dash.Dash
        ``app.server`` is the Flask app to serve with any WSGI server.
    """
    folder = Path(instance_path if instance_path is not None else Path.cwd() / "instance").resolve()
    server = flask.Flask("dashboard", instance_path=str(folder))
    server.config.update(_DEFAULTS)
    server.config.update(
        SECRET_KEY=secret_key or os.environ.get(SECRET_KEY_ENV) or _instance_secret(folder),
        LIVE_URL=live_url or os.environ.get(LIVE_URL_ENV),
        LIVE_SECRET=live_secret or os.environ.get(LIVE_SECRET_ENV),
        BEHIND_PROXY=_proxy_count(os.environ.get(BEHIND_PROXY_ENV, "0"), BEHIND_PROXY_ENV),
    )
    server.config.update(dict(config or {}))
    _init_proxy(server)
    if server.config["LIVE_SECRET"] is not None:
        live_secret_key(server.config["LIVE_SECRET"])  # fail now on a short secret, not at first use
    server.extensions["cardiac_db"] = database
    _init_security(server, database)
    _init_live_token(server, database)
    register_report_route(server)  # GET /alarms/<id>/report.pdf, behind the guard
    register_fhir_api(server)  # GET /fhir/..., bearer token or session (dashboard.fhir_api)
    _forget_unclaimed_callbacks()
    app = dash.Dash(
        "dashboard",
        server=cast(Any, server),  # Dash's annotation (bool | zero-argument callable) predates Flask servers
        use_pages=True,
        pages_folder="pages",
        assets_folder=str(ASSETS_FOLDER),
        title="Cardiac Monitor",
        update_title="",
        suppress_callback_exceptions=True,
        external_stylesheets=list(server.config["EXTERNAL_STYLESHEETS"]),
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
        index_string=components.INDEX_STRING,  # Bootstrap's data-bs-theme, set before first paint
    )
    app.layout = _layout
    return app


class DashboardServer:
    """A running dashboard: werkzeug's threaded WSGI server in a daemon thread.

    Attributes
    ----------
    host : str
        Bound address.
    port : int
        Bound port (useful after asking for port 0).
    """

    def __init__(self, wsgi_server: BaseWSGIServer) -> None:
        self._server = wsgi_server
        self.host = str(wsgi_server.host)
        self.port = int(wsgi_server.port)
        self.scheme = "https" if wsgi_server.ssl_context is not None else "http"
        self._thread = threading.Thread(target=wsgi_server.serve_forever, name="dashboard", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port``, or ``https://`` when served over TLS."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self) -> DashboardServer:
        """Start serving in the background thread."""
        self._thread.start()
        return self

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Stop accepting requests and wait for the thread."""
        self._server.shutdown()
        self._thread.join(timeout_s)
        self._server.server_close()


def run_dashboard(
    app: dash.Dash,
    host: str = "127.0.0.1",
    port: int = 8050,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> DashboardServer:
    """Serve ``app`` in a background thread and return its handle.

    With ``ssl_context`` (see :func:`ingest.tls.server_ssl_context`) it
    serves https only, and the session and CSRF cookies are marked
    ``Secure``.

    Werkzeug's threaded server (one thread per request) is enough for a
    monitoring room's handful of browsers; behind a reverse proxy at larger
    sites, serve ``app.server`` with a production WSGI server (waitress,
    gunicorn) instead.

    Examples
    --------
    >>> handle = run_dashboard(app, port=0)  # doctest: +SKIP
    >>> handle.url  # doctest: +SKIP
    'http://127.0.0.1:40123'
    >>> handle.shutdown()  # doctest: +SKIP
    """
    wsgi_server = make_server(host, port, app.server, threaded=True)
    if ssl_context is not None:
        app.server.config["SESSION_COOKIE_SECURE"] = True
        # Not make_server(ssl_context=...): its socket shakes hands inside accept(), so one client
        # that connects and says nothing would block every browser. Here each request's thread does.
        wsgi_server.socket = ssl_context.wrap_socket(
            wsgi_server.socket, server_side=True, do_handshake_on_connect=False
        )
        wsgi_server.ssl_context = ssl_context  # https in the WSGI environ and the handler's TLS errors
    return DashboardServer(wsgi_server).start()


# Internals -------------------------------------------------------------------


class _LoginForm(FlaskForm):
    """The login form; Flask-WTF adds and checks its CSRF token."""

    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


def _forget_unclaimed_callbacks() -> None:
    """Drop page callbacks that an earlier app registered but never served.

    Dash's pages API executes the page modules per app and parks their
    ``@callback`` registrations in process-wide lists until the app's first
    request claims them; an app built and never served (a test, a CLI
    check) would hand its copies to the next app, which would then see
    every callback twice.
    """
    _callback.GLOBAL_CALLBACK_LIST.clear()
    _callback.GLOBAL_CALLBACK_MAP.clear()


def _instance_secret(folder: Path) -> str:
    """A random key kept in the instance folder (created once, mode 0600)."""
    path = folder / "secret_key"
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    folder.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key)
    return key


def _layout() -> html.Div:
    """The frame around every page: navigation bar, page container, timers."""
    user = current_user if current_user.is_authenticated else None
    return html.Div(
        [
            components.navbar(user, generate_csrf() if user is not None else ""),
            html.Main(dash.page_container, className="cm-main"),
            dcc.Store(id="ack-result"),
            html.Div(id="cm-sound-bar", className="cm-sound-bar", role="status"),
        ],
        id="cm-root",
    )


def _init_security(server: flask.Flask, db: Database) -> None:
    """Login manager, CSRF, throttle, login and logout views, the guard."""
    server.before_request(_guard)  # first: an anonymous request is refused before anything else runs
    manager = LoginManager()
    manager.session_protection = "strong"
    manager.init_app(server)
    manager.user_loader(lambda user_id: load_session_user(db, user_id))
    CSRFProtect(server)
    throttle = AuditLoginThrottle(  # counted in the audit log: holds across processes and restarts
        db,
        max_failures=int(server.config["LOGIN_MAX_FAILURES"]),
        window_s=float(server.config["LOGIN_WINDOW_S"]),
        lockout_s=float(server.config["LOGIN_LOCKOUT_S"]),
    )

    @server.route("/login", methods=["GET", "POST"])
    def login() -> ResponseReturnValue:
        form = _LoginForm()
        message = ""
        if form.validate_on_submit():
            user, message = authenticate(
                db,
                form.username.data or "",
                form.password.data or "",
                throttle=throttle,
                remote=flask.request.remote_addr or "?",
            )
            if user is not None:
                flask.session.clear()  # a new session on login
                login_user(user)
                flask.session["seen"] = time.time()
                target = flask.request.args.get("next")
                return flask.redirect(_safe_next(target) if target else _home(user.role))
        elif flask.request.method == "POST":
            message = "The form expired. Please try again."
        status = 401 if message else 200
        return flask.render_template_string(components.LOGIN_PAGE, form=form, message=message), status

    @server.route("/logout", methods=["POST"])
    def logout() -> Response:
        if current_user.is_authenticated:
            with db.session() as session:
                append_audit(session, current_user.actor, "auth.logout")
        logout_user()
        flask.session.clear()
        return flask.redirect("/login")

    server.after_request(_harden_response)


def _guard() -> Response | None:
    """Refuse every request without a live session (runs before Dash's routes)."""
    request = flask.request
    if request.path in _PUBLIC_PATHS:
        return None
    if current_user.is_authenticated:
        now = time.time()
        seen = float(flask.session.get("seen", 0.0))
        if now - seen <= float(flask.current_app.config["IDLE_TIMEOUT_S"]):
            payload = request.get_json(silent=True) if request.is_json else None
            if is_user_activity(request.path, payload if isinstance(payload, Mapping) else None):
                flask.session["seen"] = now
            return None
        logout_user()
        flask.session.clear()
    if request.path.startswith(FHIR_PREFIX + "/"):
        return None  # machine clients: the FHIR API checks bearer tokens and answers 401 itself
    wants_page = request.method == "GET" and "text/html" in request.headers.get("Accept", "")
    if wants_page and not request.path.startswith(("/_dash", "/assets", "/_reload")):
        return flask.redirect(f"/login?next={flask.request.full_path.rstrip('?')}")
    return Response(json.dumps({"error": "login required"}), status=401, mimetype="application/json")


def _harden_response(response: Response) -> Response:
    """Security headers; the CSRF cookie that Dash's renderer echoes in ``X-CSRFToken``."""
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if flask.request.path not in _PUBLIC_PATHS and not flask.request.path.startswith("/assets"):
        response.headers["Cache-Control"] = "no-store"
    if current_user.is_authenticated and response.mimetype == "text/html":
        response.set_cookie(
            "_csrf_token",
            generate_csrf(),
            samesite="Strict",
            secure=bool(flask.current_app.config["SESSION_COOKIE_SECURE"]),
            httponly=False,  # the renderer must read it to send the header
        )
    return response


def _safe_next(target: str | None) -> str:
    """Only same-site paths after login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _home(role: str) -> str:
    """Where a user lands after login without ``next``: caregivers on their patients, others centrally."""
    return "/my-patients" if role == "caregiver" else "/"


def _init_live_token(server: flask.Flask, db: Database) -> None:
    """``POST /live-token``: a short-lived token for the ingest server's ``/live``."""

    @server.route("/live-token", methods=["POST"])
    def live_token() -> Response:
        config = flask.current_app.config
        if not config["LIVE_SECRET"] or not config["LIVE_URL"]:
            return Response(
                json.dumps({"error": "live data is not configured"}), 503, mimetype="application/json"
            )
        user: SessionUser = current_user._get_current_object()
        with db.session() as session:
            ids = [p.id for p in visible_patients(session, user.id, user.role)]
        ttl = float(config["LIVE_TOKEN_TTL_S"])
        token = issue_live_token(config["LIVE_SECRET"], user.id, ids, ttl)
        url = _live_url(str(config["LIVE_URL"]), flask.request)
        return flask.jsonify({"token": token, "url": url, "ttl_s": ttl, "patient_ids": ids})


def _live_url(configured: str, request: flask.Request) -> str:
    """The ``/live`` URL for this browser: ``{host}`` filled in, a bare path made absolute.

    "{host}" stands for the host name the browser used to reach the
    dashboard, so a server listening on every interface needs no fixed name.
    A path ("/live", behind a reverse proxy that forwards it to the ingest
    server) is on the page's own origin, ``wss`` when the page is https
    (browsers refuse ``ws://`` from an https page).
    """
    if configured.startswith("/"):
        return f"{'wss' if request.is_secure else 'ws'}://{request.host}{configured}"
    return configured.replace("{host}", request.host.rsplit(":", 1)[0])


def _proxy_count(value: object, source: str) -> int:
    """``BEHIND_PROXY`` as a number of proxies (``true`` is one)."""
    text = str(value).strip().lower()
    if text in ("true", "yes", "on"):
        return 1
    if text in ("", "false", "no", "off"):
        return 0
    if not text.isdigit():
        raise ValueError(f"`{source}` must be a number of proxies (0 for none), got {value!r}")
    return int(text)


def _init_proxy(server: flask.Flask) -> None:
    """Trust the ``X-Forwarded-*`` headers of ``BEHIND_PROXY`` reverse proxies (none by default).

    Without it, behind a proxy every browser would share the proxy's
    address (login throttling, audit log) and https pages would look like
    http. The proxy terminates TLS, so the cookies are ``Secure``.
    ``X-Forwarded-Port`` is not used: the proxy sends the browser's ``Host``
    (with its port, if any) as ``X-Forwarded-Host``, and a port added to it
    would fail the CSRF referrer check of https requests.
    """
    hops = _proxy_count(server.config["BEHIND_PROXY"], "BEHIND_PROXY")
    server.config["BEHIND_PROXY"] = hops
    if hops == 0:
        return
    server.config["SESSION_COOKIE_SECURE"] = True
    server.wsgi_app = ProxyFix(server.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)  # type: ignore[method-assign]
