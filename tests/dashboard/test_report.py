"""One-page PDF event reports: drawing, true scale, loading in scope, the download route."""

from __future__ import annotations

import dataclasses
import io
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pypdf
import pytest
from matplotlib.axes import Axes
from matplotlib.collections import LineCollection
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from sqlalchemy import select

from dashboard import BEAT_CLASSES, create_user
from dashboard.access import AccessDeniedError
from dashboard.report import (
    GAIN_MM_MV,
    PAGE_MM,
    SPEED_MM_S,
    STRIP_S,
    EventReport,
    ReportBeat,
    draw_event_report,
    export_event_report,
    load_event_report,
    render_event_report,
)
from storage import AuditEntry, Database, Patient

GENERATED = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
FS = 250.0


def _report(n_leads: int = 2, n_beats: int = 12, **changes: Any) -> EventReport:
    """A synthetic report: Gaussian R waves every 0.8 s, a V beat in the middle."""
    start = datetime(2026, 11, 29, 8, 31, 5, tzinfo=UTC)
    t = np.arange(int(STRIP_S * FS)) / FS
    peaks = 0.3 + 0.8 * np.arange(n_beats)
    ecg = sum((1.0 + 0.1 * k) * np.exp(-((t - p) ** 2) / (2 * 0.012**2)) for k, p in enumerate(peaks[:12]))
    samples = np.stack([np.asarray(ecg) * (0.5**lead) for lead in range(n_leads)], axis=1)
    beats = tuple(
        ReportBeat(
            float(p), "V" if k == 6 else "N", {"N": 0.1 if k == 6 else 0.9, "V": 0.9 if k == 6 else 0.1}
        )
        for k, p in enumerate(peaks)
    )
    report = EventReport(
        patient_name="Ada Lovelace",
        patient_mrn="MRN-1",
        patient_ward="ICU 2",
        alarm_id=42,
        alarm_kind="pvc",
        alarm_priority="medium",
        alarm_state="acknowledged",
        alarm_start=start + timedelta(seconds=5),
        alarm_end=None,
        alarm_detail="isolated PVC",
        acknowledged_by="Dr Who (who)",
        acknowledged_at=start + timedelta(seconds=30),
        ack_note="seen",
        hr_bpm=75.0,
        strip_start=start,
        fs=FS,
        lead_names=("MLII", "V1", "V2", "V3", "V4", "V5")[:n_leads],
        samples=samples,
        beats=beats,
        model_version="cnn-lstm-test",
    )
    return dataclasses.replace(report, **changes)


def _pdf_text(pdf: bytes) -> tuple[int, str, list[float]]:
    """Pages, text of the first page and its size in points."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    box = reader.pages[0].mediabox
    return len(reader.pages), reader.pages[0].extract_text(), [float(box.width), float(box.height)]


def _leads(fig: Figure) -> list[Axes]:
    return [ax for ax in fig.axes if str(ax.get_label()).startswith("lead:")]


def _size_mm(fig: Figure, ax: Axes) -> tuple[float, float]:
    """Width and height of an axes on the page, in millimetres."""
    box = ax.get_position()
    width_in, height_in = fig.get_size_inches()
    return box.width * width_in * 25.4, box.height * height_in * 25.4


class TestRenderEventReport:
    def test_basic(self) -> None:
        pdf = render_event_report(_report(), generated_at=GENERATED)
        assert pdf.startswith(b"%PDF")
        pages, text, size_pt = _pdf_text(pdf)
        assert pages == 1
        assert size_pt == pytest.approx([PAGE_MM[0] / 25.4 * 72, PAGE_MM[1] / 25.4 * 72], abs=0.5)  # A4
        for expected in (
            "Ada Lovelace",
            "MRN-1",
            "pvc",
            "PVC",
            "Dr Who (who)",
            "HR 75 bpm",
            "isolated PVC",
            "cnn-lstm-test",
            "2026-11-29 09:00:00 UTC",
            "Not a diagnostic device",
            "25 mm/s",
            "10 mm/mV",
        ):
            assert expected in text, expected

    def test_true_scale(self) -> None:
        fig = draw_event_report(_report(), generated_at=GENERATED)
        width_in, height_in = fig.get_size_inches()
        assert (width_in * 25.4, height_in * 25.4) == pytest.approx(PAGE_MM)
        leads = _leads(fig)
        assert [ax.get_label() for ax in leads] == ["lead:MLII", "lead:V1"]
        for ax in leads:
            width_mm, height_mm = _size_mm(fig, ax)
            x0, x1 = ax.get_xlim()
            y0, y1 = ax.get_ylim()
            assert x1 - x0 >= STRIP_S
            assert width_mm / (x1 - x0) == pytest.approx(25.0, rel=1e-9)  # mm per second
            assert height_mm / (y1 - y0) == pytest.approx(10.0, rel=1e-9)  # mm per millivolt
            grids = {c.get_gid(): c for c in ax.collections if isinstance(c, LineCollection)}
            for gid, step_mm in (("grid-minor", 1.0), ("grid-major", 5.0)):
                segments = grids[gid].get_segments()
                xs = np.unique([seg[0][0] for seg in segments if seg[0][0] == seg[1][0]])
                ys = np.unique([seg[0][1] for seg in segments if seg[0][1] == seg[1][1]])
                if gid == "grid-minor":  # minor lines skip the major positions: every 1 mm or 2 mm
                    assert set(np.round(np.diff(xs) * SPEED_MM_S, 9)) == {1.0, 2.0}
                    assert set(np.round(np.diff(ys) * GAIN_MM_MV, 9)) == {1.0, 2.0}
                else:
                    assert np.diff(xs) * SPEED_MM_S == pytest.approx(step_mm)
                    assert np.diff(ys) * GAIN_MM_MV == pytest.approx(step_mm)
            pulses = [line for line in ax.get_lines() if np.asarray(line.get_ydata()).size == 6]
            assert len(pulses) == 1
            pulse_y = np.asarray(pulses[0].get_ydata(), dtype=float)
            assert (pulse_y.max() - pulse_y.min()) * height_mm / (y1 - y0) == pytest.approx(10.0)  # 1 mV
        # the trace is the samples, unscaled, at their own times
        trace = max(leads[0].get_lines(), key=lambda line: np.asarray(line.get_xdata()).size)
        assert np.asarray(trace.get_ydata()) == pytest.approx(_report().samples[:, 0])
        assert np.asarray(trace.get_xdata())[int(2 * FS)] == pytest.approx(2.0)

    def test_alarm_and_beats_marked(self) -> None:
        report = _report()
        fig = draw_event_report(report, generated_at=GENERATED)
        leads = _leads(fig)
        for ax in leads:
            verticals = [
                line for line in ax.get_lines() if np.asarray(line.get_xdata()).tolist() == [5.0, 5.0]
            ]
            assert len(verticals) == 1  # the alarm, 5 s into the strip
        # class letters above the top lead, on badges in the class colour, at the beats' times
        top = leads[0]
        left_mm = top.get_position().x0 * PAGE_MM[0]
        top_mm = top.get_position().y1 * PAGE_MM[1]
        page = next(ax for ax in fig.axes if ax.get_label() == "page")
        above = sorted(
            (
                t
                for t in page.texts
                if 0 < t.get_position()[1] - top_mm < 5.0 and t.get_bbox_patch() is not None
            ),
            key=lambda t: t.get_position()[0],
        )
        assert [t.get_text() for t in above] == [b.label for b in report.beats]
        times = [top.get_xlim()[0] + (t.get_position()[0] - left_mm) / SPEED_MM_S for t in above]
        assert times == pytest.approx([b.t_s for b in report.beats])
        for text in above:
            patch = text.get_bbox_patch()
            assert patch is not None
            assert to_hex(patch.get_facecolor()) == BEAT_CLASSES[text.get_text()][1]
        assert any(str(t.get_text()).startswith("▲ alarm 08:31:10") for t in page.texts)

    def test_edge_cases(self) -> None:
        # nothing recorded, no beats: still one page that says so
        empty = _report(samples=np.empty((0, 2)), beats=(), hr_bpm=None, model_version=None)
        pages, text, _ = _pdf_text(render_event_report(empty, generated_at=GENERATED))
        assert pages == 1
        assert "No beats were classified" in text
        assert "unknown" in text
        # more leads than fit: the first ones, and the page says how many
        fig = draw_event_report(_report(n_leads=6), generated_at=GENERATED)
        assert 1 <= len(_leads(fig)) < 6
        for ax in _leads(fig):
            _, height_mm = _size_mm(fig, ax)
            assert height_mm / np.ptp(ax.get_ylim()) == pytest.approx(10.0)
        # more beats than the table holds, and text that looks like mathtext
        crowded = _report(n_beats=40, patient_name="Zoë $x^2$ O'Brien")
        pages, text, _ = _pdf_text(render_event_report(crowded, generated_at=GENERATED))
        assert pages == 1
        assert "Zoë $x^2$ O'Brien" in text
        assert "more beats (not listed)" in text
        # gaps are NaN and stay gaps
        gappy = _report(n_leads=1)
        gappy.samples[100:200] = np.nan
        assert render_event_report(gappy, generated_at=GENERATED).startswith(b"%PDF")

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`fs` must be positive"):
            draw_event_report(_report(fs=0.0), generated_at=GENERATED)
        with pytest.raises(ValueError, match=r"`samples` must be \(n, 2\)"):
            draw_event_report(_report(samples=np.zeros((10, 3))), generated_at=GENERATED)
        with pytest.raises(ValueError, match="`lead_names` must name"):
            draw_event_report(_report(lead_names=()), generated_at=GENERATED)


class TestLoadEventReport:
    def test_basic(self, db: Database, seeded: Any) -> None:
        with db.session() as session:
            report = load_event_report(session, seeded.ada_alarm, user_id=seeded.clinician, role="clinician")
        assert (report.patient_name, report.patient_mrn, report.alarm_kind) == (
            "Ada Lovelace",
            "MRN-1",
            "pvc",
        )
        assert (report.alarm_priority, report.alarm_state, report.alarm_detail) == (
            "medium",
            "active",
            "isolated PVC",
        )
        assert report.alarm_start - report.strip_start == timedelta(seconds=STRIP_S / 2)
        assert report.lead_names == ("MLII", "V1")
        assert report.fs == 360.0
        assert report.samples.shape == (3600, 2)
        assert np.isfinite(report.samples).all()
        # the seeded R waves are 1.2 mV on MLII and half that on V1
        assert np.max(report.samples, axis=0) == pytest.approx([1.2, 0.6], abs=0.01)
        assert [b.label for b in report.beats].count("V") == 1
        assert len(report.beats) == 13  # one every 0.8 s
        assert all(0.0 <= b.t_s < STRIP_S for b in report.beats)
        assert report.beats[0].probabilities["N"] == pytest.approx(0.95)
        assert report.hr_bpm == pytest.approx(75.0)
        assert report.model_version == "test"
        assert report.acknowledged_by is None

    def test_scope(self, db: Database, seeded: Any) -> None:
        with db.session() as session:
            bob = session.get(Patient, seeded.bob)
            assert bob is not None
            bob.ward = "Ward B"
        ward_b = create_user(db, "clin-b", "correct horse battery", "clinician", ward="ward b")
        with db.session() as session:
            mine = load_event_report(session, seeded.bob_alarm, user_id=ward_b, role="clinician")
            assert mine.patient_name == "Bob Babbage"
            assert mine.samples.size == 0  # nothing recorded: an empty strip, not an error
            with pytest.raises(AccessDeniedError, match="not available"):
                load_event_report(session, seeded.ada_alarm, user_id=ward_b, role="clinician")
            # caregivers only view: no exports, not even of their own patients
            with pytest.raises(AccessDeniedError, match="may not export"):
                load_event_report(session, seeded.ada_alarm, user_id=seeded.caregiver, role="caregiver")
            assert load_event_report(session, seeded.ada_alarm, user_id=None, role=None).alarm_kind == "pvc"

    def test_exceptions(self, db: Database, seeded: Any) -> None:
        with db.session() as session:
            with pytest.raises(LookupError, match="no alarm 9999"):
                load_event_report(session, 9999, user_id=seeded.admin, role="admin")
            with pytest.raises(ValueError, match="both be given"):
                load_event_report(session, seeded.ada_alarm, user_id=seeded.admin, role=None)

    def test_export_is_audited(self, db: Database, seeded: Any) -> None:
        pdf = export_event_report(db, seeded.ada_alarm, actor="user:1", user_id=seeded.admin, role="admin")
        assert _pdf_text(pdf)[0] == 1
        with pytest.raises(AccessDeniedError):
            export_event_report(
                db, seeded.bob_alarm, actor="user:3", user_id=seeded.caregiver, role="caregiver"
            )
        with db.session() as session:
            lines = [
                (a.actor, a.action, a.target)
                for a in session.scalars(select(AuditEntry).where(AuditEntry.action.like("export.%")))
            ]
        assert lines == [
            ("user:1", "export.event_report_pdf", f"alarm:{seeded.ada_alarm}"),
            ("user:3", "export.event_report_refused", f"alarm:{seeded.bob_alarm}"),
        ]


class TestReportRoute:
    def test_basic(self, app_factory: Any, client_login: Any, seeded: Any, db: Database) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "clin") == 302
        response = client.get(f"/alarms/{seeded.ada_alarm}/report.pdf")
        assert response.status_code == 200
        assert response.mimetype == "application/pdf"
        assert "attachment" in response.headers["Content-Disposition"]
        assert response.headers["Cache-Control"] == "no-store"
        pages, text, _ = _pdf_text(response.data)
        assert pages == 1
        assert "Ada Lovelace" in text
        assert "pvc" in text
        with db.session() as session:
            entry = session.scalar(select(AuditEntry).where(AuditEntry.action == "export.event_report_pdf"))
        assert entry is not None
        assert (entry.actor, entry.target) == (f"user:{seeded.clinician}", f"alarm:{seeded.ada_alarm}")

    def test_anonymous_refused(self, app_factory: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        path = f"/alarms/{seeded.ada_alarm}/report.pdf"
        data = client.get(path)
        page = client.get(path, headers={"Accept": "text/html"})
        assert data.status_code == 401
        assert page.status_code == 302
        assert page.headers["Location"].startswith("/login")
        assert b"%PDF" not in data.data + page.data

    def test_out_of_scope_refused(
        self, app_factory: Any, client_login: Any, seeded: Any, db: Database
    ) -> None:
        with db.session() as session:
            ada = session.get(Patient, seeded.ada)
            assert ada is not None
            ada.ward = "Ward A"
        create_user(db, "clin-b", "correct horse battery", "clinician", ward="Ward B")
        for username, alarm in (
            ("clin-b", seeded.ada_alarm),
            ("care", seeded.ada_alarm),
            ("care", seeded.bob_alarm),
        ):
            client = app_factory().server.test_client()
            assert client_login(client, username) == 302
            response = client.get(f"/alarms/{alarm}/report.pdf")
            assert response.status_code == 403, username
            assert b"%PDF" not in response.data
            assert b"Ada" not in response.data

    def test_unknown_alarm(self, app_factory: Any, client_login: Any, seeded: Any) -> None:
        client = app_factory().server.test_client()
        assert client_login(client, "admin") == 302
        assert client.get("/alarms/9999/report.pdf").status_code == 404


class TestAlarmPageLink:
    """The alarm detail offers the PDF to those who may export it (through the callback route)."""

    @staticmethod
    def _detail(logged_in_client: Any, username: str, alarm: int) -> str:
        client, csrf = logged_in_client(username, "/alarms")
        trigger = {"alarm": alarm, "type": "strip"}
        response = client.post(
            "/_dash-update-component",
            json={
                "output": "alarm-detail.children",
                "outputs": {"id": "alarm-detail", "property": "children"},
                "inputs": [[{"id": trigger, "property": "n_clicks", "value": 1}]],
                "changedPropIds": [json.dumps(trigger, separators=(",", ":")) + ".n_clicks"],
                "state": [],
            },
            headers={"X-CSRFToken": csrf},
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return json.dumps(response.get_json())  # unescaped: Dash writes "/" as "\\u002f"

    def test_basic(self, logged_in_client: Any, seeded: Any) -> None:
        detail = self._detail(logged_in_client, "clin", seeded.ada_alarm)
        assert f"/alarms/{seeded.ada_alarm}/report.pdf" in detail
        assert "PDF report" in detail

    def test_caregiver_gets_no_link(self, logged_in_client: Any, seeded: Any) -> None:
        detail = self._detail(logged_in_client, "care", seeded.ada_alarm)
        assert "alarm-strip" in detail  # the caregiver sees the strip of their patient
        assert "report.pdf" not in detail
