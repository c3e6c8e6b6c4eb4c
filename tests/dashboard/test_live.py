"""Live monitoring in a real browser against a real ingest server replaying MIT-BIH.

The ingest server runs the analysis pipeline (:class:`ingest.pipeline.AnalysisProcessor`)
in this test process, on its own event loop thread; the dashboard never
imports it. Measured figures are printed and written to
``artifacts/live_measurement.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from storage import Alarm, Database, Patient

pytestmark = [pytest.mark.browser, pytest.mark.data, pytest.mark.slow]

LIVE_SECRET = "live-secret-for-tests-0123456789"
RECORD = "208"  # many PVCs: V beats within seconds
MEASURE_S = float(os.environ.get("CM_LIVE_MEASURE_S", "20"))
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


class _LiveStack:
    """An ingest server with the analysis pipeline and a replay, on a background loop."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        from ingest.pipeline import AnalysisProcessor
        from ingest.replay import ensure_replay_devices, run_replay
        from ingest.server import IngestServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ingest-loop", daemon=True)
        self.thread.start()
        self.server = IngestServer(db, live_secret=LIVE_SECRET, processor=AnalysisProcessor(db))
        self._run(self.server.start())
        tokens = ensure_replay_devices(db, [RECORD])
        self.replay = asyncio.run_coroutine_threadsafe(
            run_replay(
                [RECORD], self.server.url, tokens, speed=1.0, data_dir=data_dir, seconds=MEASURE_S + 60
            ),
            self.loop,
        )

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(60)

    def close(self) -> None:
        self.replay.cancel()
        self._run(self.server.stop(timeout_s=5))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def live_stack(db: Database, data_dir: Path) -> Iterator[_LiveStack]:
    stack = _LiveStack(db, data_dir)
    yield stack
    stack.close()


def _replay_patient(db: Database) -> int:
    with db.session() as session:
        patient_id = session.scalar(select(Patient.id).where(Patient.mrn == f"REPLAY-MITDB-{RECORD}"))
    assert patient_id is not None
    return patient_id


def _live(duo: Any) -> dict[str, Any]:
    return duo.driver.execute_script(
        "const s = window.cmLive || {}; const f = s.flushTimes || [];"
        "return {updates: s.updates, beats: s.beats, points: s.points, lag: s.lagS, state: s.state,"
        " beatMarks: s.beatMarks, errors: s.errors || 0,"
        " flushes: f.slice(-60), traces: s.traceMessages, lastFlushMs: s.lastFlushMs};"
    )


def _toggle_theme(duo: Any, wait_until: Any, theme: str) -> None:
    """Press the theme switch and wait until the page shows ``theme``."""
    duo.find_element("#cm-theme-toggle").click()
    assert wait_until(
        lambda: duo.driver.execute_script("return document.documentElement.dataset.bsTheme") == theme
    )


class TestLiveMonitor:
    def test_replay_shows_annotated_beats_and_keeps_up(
        self,
        dash_duo: Any,
        app_factory: Any,
        db: Database,
        live_stack: _LiveStack,
        browser_login: Any,
        screenshot: Any,
        wait_until: Any,
    ) -> None:
        from dashboard import create_user

        create_user(db, "clin", "correct horse battery", "clinician", display_name="Dr Clinician")
        port = {"port": int(os.environ["CM_DASH_PORT"])} if os.environ.get("CM_DASH_PORT") else {}
        dash_duo.start_server(app_factory(live_url=f"{live_stack.server.url}/live"), navigate=False, **port)
        patient = _replay_patient(db)
        time.sleep(1.0)  # let the replay connect, as a running monitor would have
        dash_duo.driver.get(dash_duo.server.url + f"/login?next=/patient/{patient}")
        dash_duo.wait_for_element("#username").send_keys("clin")
        dash_duo.find_element("#password").send_keys("correct horse battery")
        started = time.monotonic()
        dash_duo.find_element("#login-button").click()
        first_samples = first_beat = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and first_beat is None:
            state = _live(dash_duo)
            if first_samples is None and (state["points"] or 0) > 0:
                first_samples = time.monotonic() - started
            if (state["beatMarks"] or 0) > 0 and first_samples is not None:
                first_beat = time.monotonic() - started
            time.sleep(0.05)
        assert first_samples is not None, _live(dash_duo)
        assert first_beat is not None, _live(dash_duo)
        dash_duo.wait_for_element("#ecg-graph .textpoint", timeout=10)
        time.sleep(4)
        screenshot(dash_duo, "patient_live")
        # Measure: update rate, bounded points, no growing lag.
        samples = []
        end = time.monotonic() + MEASURE_S
        while time.monotonic() < end:
            samples.append(_live(dash_duo))
            time.sleep(2)
        final = samples[-1]
        flushes = final["flushes"]
        rate = (len(flushes) - 1) / ((flushes[-1] - flushes[0]) / 1000.0)
        lags = [s["lag"] for s in samples if s["lag"] is not None]
        points = [s["points"] for s in samples]
        with db.session() as session:
            leads = 2
            n_alarms = len(list(session.scalars(select(Alarm).where(Alarm.patient_id == patient))))
        window_points = 10 * 360
        report = {
            "record": RECORD,
            "measured_s": MEASURE_S,
            "login_to_first_samples_s": round(first_samples, 2),
            "login_to_first_beat_s": round(first_beat, 2),
            "updates_per_s": round(rate, 1),
            "points_per_lead_max": max(points),
            "points_bound": window_points,
            "lag_s_first_last": [round(lags[0], 3), round(lags[-1], 3)],
            "lag_s_max": round(max(lags), 3),
            "flush_ms_last": final["lastFlushMs"],
            "alarms_stored": n_alarms,
            "leads": leads,
        }
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / f"live_measurement_{MEASURE_S:.0f}s.json").write_text(json.dumps(report, indent=2))
        print(json.dumps(report))
        assert rate >= 4.0
        assert max(points) <= window_points
        assert first_samples < 6.0  # target 3 s on an unloaded machine: reported above, gated loosely here
        assert final["errors"] == 0
        assert lags[-1] - lags[0] < 1.0  # no growing lag
        # A faster sweep gets a new paper, refilled from the browser's buffer.
        dash_duo.driver.find_element(By.XPATH, "//*[@id='ecg-speed']//label[contains(., '50 mm/s')]").click()
        assert wait_until(
            lambda: dash_duo.driver.execute_script(
                "const gd = document.querySelector('#ecg-graph .js-plotly-plot');"
                "return gd.layout.meta.window_s === 5 && gd.data[0].x.length > 100;"
            )
        )
        assert _live(dash_duo)["errors"] == 0
        screenshot(dash_duo, "patient_live_50mm")
        frame = "return document.querySelector('#ecg-graph .js-plotly-plot').layout.paper_bgcolor"
        _toggle_theme(dash_duo, wait_until, "light")
        assert wait_until(lambda: dash_duo.driver.execute_script(frame) == "#ffffff")  # the frame follows
        time.sleep(2)  # a few more sweeps of the trace
        screenshot(dash_duo, "patient_live_light")
        _toggle_theme(dash_duo, wait_until, "dark")
        assert wait_until(lambda: dash_duo.driver.execute_script(frame) == "#10151c")
        assert _live(dash_duo)["errors"] == 0
        dash_duo.driver.get(dash_duo.server.url + "/")
        dash_duo.wait_for_element(f"#tile-{patient}")
        assert wait_until(
            lambda: dash_duo.driver.execute_script("return window.cmLive.miniDrawn || 0") > 5
        ), dash_duo.driver.execute_script("return JSON.stringify(window.cmLive)")
        screenshot(dash_duo, "central_live")
        # The tiles are re-rendered every 2 s; the mini-trace is redrawn at once, never left blank.
        blank = []
        for _ in range(20):
            blank.append(
                dash_duo.driver.execute_script(
                    f"const c = document.querySelector('canvas[data-mini-patient=\"{patient}\"]');"
                    "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                    "for (let i = 3; i < d.length; i += 4) { if (d[i]) { return false; } } return true;"
                )
            )
            time.sleep(0.2)
        assert not any(blank), blank
        _toggle_theme(dash_duo, wait_until, "light")
        time.sleep(1)  # Bootstrap's .btn colour transitions; a few mini-trace updates
        screenshot(dash_duo, "central_live_light")
        _toggle_theme(dash_duo, wait_until, "dark")
        # The history page shows an alarm that the replayed record raised.
        with db.session() as session:
            alarm_id = session.scalar(select(Alarm.id).where(Alarm.patient_id == patient).order_by(Alarm.id))
        assert alarm_id is not None
        dash_duo.driver.get(dash_duo.server.url + "/history")
        dash_duo.wait_for_element("#history-show").click()
        dash_duo.wait_for_contains_text("#history-overview", f"#{alarm_id}", timeout=15)
        screenshot(dash_duo, "history_replay")
