"""`cardiac-monitor report alarm`: the one-page PDF of an alarm event from the command line."""

from __future__ import annotations

import io
from datetime import timedelta
from pathlib import Path

import numpy as np
import pypdf
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from app import _open_database, cli
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    AuditEntry,
    Patient,
    create_device,
    insert_chunk,
    open_recording,
    utcnow,
)


@pytest.fixture
def alarm_id(tmp_path: Path) -> int:
    """A patient with 12 s of ECG and a high alarm 6 s in, in the instance folder ``tmp_path``."""
    db = _open_database(None, tmp_path)
    t0 = utcnow() - timedelta(minutes=5)
    try:
        with db.session() as session:
            patient = Patient(name="Grace Hopper", mrn="MRN-7", ward="CCU")
            session.add(patient)
            session.flush()
            device = create_device(
                session, "ecg-grace", "device-token-grace-0123456789", patient_id=patient.id
            )
            recording, _ = open_recording(
                session, device, stream_id="s1", fs=250.0, lead_names=["II"], gain=100.0, started_at=t0
            )
            t = np.arange(12 * 250) / 250.0
            ecg = np.exp(-(((t % 0.5) - 0.25) ** 2) / (2 * 0.01**2))  # 120 bpm
            insert_chunk(session, recording, (ecg[:, None] * 100.0).astype(np.int16), 0)
            alarm = Alarm(
                patient_id=patient.id,
                kind="tachycardia",
                priority=AlarmPriority.HIGH,
                state=AlarmState.ACTIVE,
                started_at=t0 + timedelta(seconds=6),
                detail="HR 120",
            )
            session.add(alarm)
            session.flush()
            return alarm.id
    finally:
        db.dispose()


class TestReportAlarmCli:
    def test_basic(self, tmp_path: Path, alarm_id: int) -> None:
        out = tmp_path / "reports" / "event.pdf"
        args = ["report", "alarm", str(alarm_id), "--out", str(out), "--instance-dir", str(tmp_path)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert f"wrote {out}" in result.output
        reader = pypdf.PdfReader(io.BytesIO(out.read_bytes()))
        assert len(reader.pages) == 1
        text = reader.pages[0].extract_text()
        for expected in ("Grace Hopper", "MRN-7", "tachycardia", "HR 120", "Not acknowledged"):
            assert expected in text, expected
        db = _open_database(None, tmp_path)
        try:
            with db.session() as session:
                entry = session.scalar(
                    select(AuditEntry).where(AuditEntry.action == "export.event_report_pdf")
                )
                assert entry is not None
                assert (entry.actor, entry.target) == ("cli", f"alarm:{alarm_id}")
        finally:
            db.dispose()

    def test_exceptions(self, tmp_path: Path, alarm_id: int) -> None:
        out = tmp_path / "missing.pdf"
        args = ["report", "alarm", str(alarm_id + 1), "--out", str(out), "--instance-dir", str(tmp_path)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1
        assert f"there is no alarm {alarm_id + 1}" in result.output
        assert not out.exists()
        missing_out = CliRunner().invoke(
            cli, ["report", "alarm", str(alarm_id), "--instance-dir", str(tmp_path)]
        )
        assert missing_out.exit_code == 2
        assert "--out" in missing_out.output
