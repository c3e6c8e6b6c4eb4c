"""Fixtures of the dashboard tests: a seeded database, apps, logged-in browsers.

Browser tests (marked ``browser``) use ``dash_duo`` from ``dash[testing]``
with Debian's chromium and chromium-driver, headless. When either is
missing they skip, except when ``CI=true``: then they fail.
Screenshots go to ``artifacts/screenshots/`` (gitignored; kept by CI).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from selenium.webdriver.chrome.options import Options

from dashboard import create_app, create_user, session_id
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    Beat,
    CaregiverAssignment,
    Database,
    Patient,
    add_vitals,
    create_device,
    insert_chunk,
    open_recording,
    upgrade,
    utcnow,
)

SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
PASSWORD = "correct horse battery"
LIVE_SECRET = "live-secret-for-tests-0123456789"


def pytest_setup_options() -> Options:
    """Chromium options for ``dash_duo``: headless, no sandbox (root in containers)."""
    options = Options()
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    if shutil.which("chromium"):
        options.binary_location = str(shutil.which("chromium"))
    return options


@pytest.fixture(autouse=True)
def _browser_available(request: pytest.FixtureRequest) -> None:
    """Skip browser tests without chromium / chromedriver, except on CI."""
    if request.node.get_closest_marker("browser") is None:
        return
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI must run the browser tests; missing {missing}")
        pytest.skip(f"browser tests need {missing}")


#: Seconds a browser test waits for an element or text (dash_duo's own default is 10,
#: tight when the suite shares two cores with other work; a pass is as fast either way).
BROWSER_WAIT_S = 30


@pytest.fixture(autouse=True)
def _patient_waits(request: pytest.FixtureRequest, _browser_available: None) -> None:
    """Give ``dash_duo``'s waits :data:`BROWSER_WAIT_S` instead of 10 s."""
    if "dash_duo" not in request.fixturenames:
        return
    from selenium.webdriver.support.ui import WebDriverWait

    duo = request.getfixturevalue("dash_duo")
    duo._wait_timeout = BROWSER_WAIT_S
    duo._wd_wait = WebDriverWait(duo.driver, BROWSER_WAIT_S)


@dataclass(frozen=True)
class Seeded:
    """Ids of what :func:`seeded_db` created."""

    admin: int
    clinician: int
    caregiver: int
    ada: int  # assigned to the caregiver; has an ECG strip, beats, vitals and a medium alarm
    bob: int  # not assigned; has a high alarm
    ada_alarm: int
    bob_alarm: int


@pytest.fixture(scope="session")
def _templates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Seeded]:
    """A migrated empty database and a seeded one, built once and copied per test."""
    folder = tmp_path_factory.mktemp("dashboard-db")
    paths = folder / "empty.db", folder / "seeded.db"
    for path in paths:
        database = Database()
        database.init(f"sqlite:///{path}")
        upgrade(database.engine)
        if path.name == "seeded.db":
            ids = _seed(database)
        database.dispose()
    return paths[0], paths[1], ids


@pytest.fixture
def db(
    request: pytest.FixtureRequest, tmp_path: Path, _templates: tuple[Path, Path, Seeded]
) -> Iterator[Database]:
    """A migrated SQLite database (seeded when the test also asks for ``seeded``)."""
    source = _templates[1] if "seeded" in request.fixturenames else _templates[0]
    target = tmp_path / "dashboard.db"
    shutil.copyfile(source, target)
    database = Database()
    database.init(f"sqlite:///{target}")
    yield database
    database.dispose()


@pytest.fixture
def seeded(db: Database, _templates: tuple[Path, Path, Seeded]) -> Seeded:
    """Three users, two patients (one assigned to the caregiver), alarms, an ECG strip; see :func:`_seed`."""
    return _templates[2]


def _seed(db: Database) -> Seeded:
    """Three users, two patients (one assigned to the caregiver), alarms, an ECG strip."""
    admin = create_user(db, "admin", PASSWORD, "admin", display_name="Admin")
    clinician = create_user(db, "clin", PASSWORD, "clinician", display_name="Dr Clinician")
    caregiver = create_user(db, "care", PASSWORD, "caregiver", display_name="Carol Caregiver")
    now = utcnow()
    t0 = now - timedelta(seconds=40)
    with db.session() as session:
        ada = Patient(name="Ada Lovelace", mrn="MRN-1")
        bob = Patient(name="Bob Babbage", mrn="MRN-2")
        session.add_all([ada, bob])
        session.flush()
        session.add(CaregiverAssignment(user_id=caregiver, patient_id=ada.id))
        device = create_device(session, "ecg-ada", "device-token-ada-0123456789", patient_id=ada.id)
        recording, _ = open_recording(
            session, device, stream_id="s1", fs=360.0, lead_names=["MLII", "V1"], gain=200.0, started_at=t0
        )
        t = np.arange(20 * 360) / 360.0
        ecg = 1.2 * np.exp(-(((t % 0.8) - 0.4) ** 2) / (2 * 0.012**2))  # 75 bpm, R peaks at 0.4 s
        samples = np.stack([ecg, 0.5 * ecg], axis=1) * 200.0
        insert_chunk(session, recording, samples.astype(np.int16), 0)
        for k in range(25):
            label = "V" if k == 12 else "N"
            probs = [0.05, 0.02, 0.9, 0.02, 0.01] if label == "V" else [0.95, 0.02, 0.01, 0.01, 0.01]
            session.add(
                Beat(
                    session_id=recording.id,
                    patient_id=ada.id,
                    t=t0 + timedelta(seconds=0.4 + 0.8 * k),
                    r_peak_seq=int((0.4 + 0.8 * k) * 360),
                    label=label,
                    p_n=probs[0],
                    p_s=probs[1],
                    p_v=probs[2],
                    p_f=probs[3],
                    p_q=probs[4],
                    p_abnormal=probs[2],
                    p_early_alarm=0.1,
                    model_version="test",
                )
            )
        for k in range(10):
            add_vitals(
                session, ada.id, t0 + timedelta(seconds=2 * k), hr_ecg=75.0, spo2=97.0, temperature=36.8
            )
        ada_alarm = Alarm(
            patient_id=ada.id,
            kind="pvc",
            priority=AlarmPriority.MEDIUM,
            state=AlarmState.ACTIVE,
            started_at=t0 + timedelta(seconds=10),
            detail="isolated PVC",
        )
        bob_alarm = Alarm(
            patient_id=bob.id,
            kind="vtach",
            priority=AlarmPriority.HIGH,
            state=AlarmState.ACTIVE,
            started_at=now - timedelta(seconds=5),
            detail="HR 180",
        )
        session.add_all([ada_alarm, bob_alarm])
        session.flush()
        return Seeded(admin, clinician, caregiver, ada.id, bob.id, ada_alarm.id, bob_alarm.id)


@pytest.fixture
def app_factory(db: Database, tmp_path: Path) -> Any:
    """Build a dashboard on the test database (keyword overrides go to ``config``)."""

    def build(live_url: str | None = "ws://127.0.0.1:9/live", **config: Any) -> Any:
        return create_app(
            database=db,
            secret_key="test-secret-key-0123456789abcdef",
            instance_path=tmp_path / "instance",
            live_url=live_url,
            live_secret=LIVE_SECRET,
            config=config,
        )

    return build


def _csrf_from(html: str) -> str:
    """The CSRF token of the login form."""
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html)
    if match is None:
        raise AssertionError("no CSRF token in the login page")
    return match.group(1)


def _client_login(client: FlaskClient, username: str, password: str = PASSWORD) -> int:
    """Log a Flask test client in; returns the status of the form POST."""
    token = _csrf_from(client.get("/login").get_data(as_text=True))
    response = client.post("/login", data={"csrf_token": token, "username": username, "password": password})
    return response.status_code


def _browser_login(duo: Any, username: str, password: str = PASSWORD, next_path: str = "") -> None:
    """Log the ``dash_duo`` browser in through the login form and wait for the app."""
    duo.driver.get(duo.server.url + "/login" + (f"?next={next_path}" if next_path else ""))
    duo.wait_for_element("#username").send_keys(username)
    duo.find_element("#password").send_keys(password)
    duo.find_element("#login-button").click()
    duo.wait_for_element("#react-entry-point", timeout=10)


def _screenshot(duo: Any, name: str) -> Path:
    """Save the browser's view to ``artifacts/screenshots/<name>.png``."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    duo.driver.save_screenshot(str(path))
    return path


@pytest.fixture
def client_login() -> Any:
    """``client_login(client, username, password=PASSWORD) -> status``."""
    return _client_login


@pytest.fixture
def logged_in_client(app_factory: Any) -> Any:
    """``logged_in_client(username, page="/") -> (client, csrf)``: a Flask test client of a new
    dashboard, logged in as ``username``, and the CSRF token that opening ``page`` gave it."""

    def open_page(username: str, page: str = "/") -> tuple[FlaskClient, str]:
        client = app_factory().server.test_client()
        assert _client_login(client, username) == 302
        client.get(page, headers={"Accept": "text/html"})
        csrf = client.get_cookie("_csrf_token")
        assert csrf is not None
        return client, csrf.value

    return open_page


@pytest.fixture
def browser_login() -> Any:
    """``browser_login(dash_duo, username, password=PASSWORD)``."""
    return _browser_login


@pytest.fixture
def start_logged_in(dash_duo: Any, app_factory: Any, seeded: Seeded) -> Any:
    """``start_logged_in(username, next_path="")``: serve a dashboard on the seeded database to
    ``dash_duo`` and log its browser in as ``username`` (then at ``next_path``)."""

    def start(username: str, next_path: str = "") -> None:
        dash_duo.start_server(app_factory(), navigate=False)
        _browser_login(dash_duo, username, next_path=next_path)

    return start


@pytest.fixture
def screenshot() -> Any:
    """``screenshot(dash_duo, name) -> path`` under ``artifacts/screenshots/``."""
    return _screenshot


def _wait_until(predicate: Any, timeout: float = 10.0, interval: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last truth value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


@pytest.fixture
def wait_until() -> Any:
    """``wait_until(predicate, timeout=10.0) -> bool``."""
    return _wait_until


@pytest.fixture
def sid(db: Database) -> Callable[[int], str]:
    """The session id a fresh login of a user carries now (it changes when the password does)."""

    def session_id_of(user_id: int) -> str:
        found = session_id(db, user_id)
        assert found is not None
        return found

    return session_id_of
