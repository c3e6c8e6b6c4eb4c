"""`cardiac-monitor export fhir` and `cardiac-monitor token add|revoke|list`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from fhir.resources.R4B.bundle import Bundle
from sqlalchemy import select

from app import cli
from storage import (
    AuditEntry,
    Database,
    Patient,
    create_device,
    decode_sampled_data,
    insert_chunk,
    open_recording,
    upgrade,
    verify_api_token,
)

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """A migrated SQLite database with one patient (MRN-9) and 10 s of two-lead ECG from ``T0``."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    db = Database()
    db.init(url)
    upgrade(db.engine)
    with db.session() as session:
        patient = Patient(name="Cli Patient", mrn="MRN-9")
        session.add(patient)
        session.flush()
        device = create_device(session, "ecg-cli", "device-token-cli-0123456789", patient_id=patient.id)
        recording, _ = open_recording(
            session, device, stream_id="s", fs=360.0, lead_names=["MLII", "V1"], gain=200.0, started_at=T0
        )
        samples = np.random.default_rng(3).integers(-900, 900, size=(3600, 2)).astype(np.int16)
        insert_chunk(session, recording, samples, 0)
    db.dispose()
    return url


def _run(args: list[str], database_url: str, tmp_path: Path) -> tuple[int, str, str]:
    runner = CliRunner()
    result = runner.invoke(
        cli, [*args, "--database-url", database_url, "--instance-dir", str(tmp_path / "instance")]
    )
    return result.exit_code, result.stdout, result.stderr


class TestExportFhir:
    def test_basic(self, database_url: str, tmp_path: Path) -> None:
        out = tmp_path / "out" / "export.json"
        args = ["export", "fhir", "--patient", "MRN-9", "--from", "2026-03-01T09:00:00+01:00"]
        code, stdout, _ = _run(
            [*args, "--to", "2026-03-01T08:30:00Z", "--out", str(out)], database_url, tmp_path
        )
        assert code == 0, stdout
        assert "FHIR R4B resources" in stdout
        bundle = Bundle.model_validate_json(out.read_text(encoding="utf-8"))
        kinds = [e.resource.get_resource_type() for e in bundle.entry or []]
        assert kinds == ["Patient", "Device", "Observation"]
        ecg = (bundle.entry or [])[2].resource
        decoded = decode_sampled_data(ecg.component[0].valueSampledData)[:, 0]
        expected = np.random.default_rng(3).integers(-900, 900, size=(3600, 2))[:, 0] / 200.0
        np.testing.assert_allclose(decoded, expected, atol=0.5 / 200.0)
        db = Database()
        db.init(database_url)
        with db.session() as session:
            entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "fhir.export")).one()
            assert entry.actor == "cli"
            assert entry.details["count"] == 3
        db.dispose()

    def test_by_id_and_window(self, database_url: str, tmp_path: Path) -> None:
        out = tmp_path / "late.json"
        start = (T0 + timedelta(seconds=5)).isoformat()
        end = (T0 + timedelta(seconds=7)).isoformat()
        code, stdout, _ = _run(
            ["export", "fhir", "--patient", "1", "--from", start, "--to", end, "--out", str(out)],
            database_url,
            tmp_path,
        )
        assert code == 0, stdout
        bundle = Bundle.model_validate_json(out.read_text(encoding="utf-8"))
        ecg = (bundle.entry or [])[-1].resource
        assert len(ecg.component[0].valueSampledData.data.split()) == 720  # 2 s at 360 Hz

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (
                ["--patient", "MRN-404", "--from", "2026-03-01T08:00:00Z", "--to", "2026-03-01T08:10:00Z"],
                "no patient",
            ),
            (
                ["--patient", "1", "--from", "2026-03-01T08:00:00", "--to", "2026-03-01T08:10:00Z"],
                "must carry a zone",
            ),
            (["--patient", "1", "--from", "yesterday", "--to", "2026-03-01T08:10:00Z"], "must be ISO 8601"),
            (
                ["--patient", "1", "--from", "2026-03-01T08:00:00Z", "--to", "2026-03-01T10:00:00Z"],
                "at most 1:00:00",
            ),
        ],
    )
    def test_exceptions(self, database_url: str, tmp_path: Path, args: list[str], message: str) -> None:
        out = tmp_path / "x.json"
        code, stdout, stderr = _run(["export", "fhir", *args, "--out", str(out)], database_url, tmp_path)
        assert code != 0
        assert message in stdout + stderr
        assert not out.exists()


class TestTokenCli:
    def test_basic(self, database_url: str, tmp_path: Path) -> None:
        code, stdout, stderr = _run(["token", "add", "ehr-1", "--ward", "ICU"], database_url, tmp_path)
        assert code == 0, stdout + stderr
        secret = stdout.strip()
        assert "not shown again" in stderr
        assert "ward 'ICU'" in stderr
        db = Database()
        db.init(database_url)
        with db.session() as session:
            row = verify_api_token(session, secret)
            assert row is not None
            assert row.ward == "ICU"
        code, stdout, _ = _run(["token", "list"], database_url, tmp_path)
        assert stdout.startswith("ehr-1\tICU\t")
        assert stdout.rstrip().endswith("live")
        code, stdout, _ = _run(["token", "revoke", "ehr-1"], database_url, tmp_path)
        assert code == 0
        with db.session() as session:
            assert verify_api_token(session, secret) is None
        db.dispose()
        assert "revoked" in _run(["token", "list"], database_url, tmp_path)[1]

    def test_exceptions(self, database_url: str, tmp_path: Path) -> None:
        assert _run(["token", "add", "ehr"], database_url, tmp_path)[0] == 0
        code, stdout, stderr = _run(["token", "add", "ehr"], database_url, tmp_path)
        assert code != 0
        assert "exists already" in stdout + stderr
        code, stdout, stderr = _run(["token", "revoke", "nope"], database_url, tmp_path)
        assert code != 0
        assert "no API token named 'nope'" in stdout + stderr
