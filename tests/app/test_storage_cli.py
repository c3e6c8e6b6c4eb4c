"""`cardiac-monitor keys`, `storage verify` and `purge` on the embedded default database."""

from __future__ import annotations

import base64
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from app import cli
from storage import (
    DATA_KEY_FILE,
    AuditEntry,
    Database,
    Patient,
    SignalChunk,
    create_device,
    insert_chunk,
    open_recording,
    upgrade,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _no_key_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CARDIAC_DATA_KEY", "CARDIAC_DATA_KEY_PREVIOUS", "DATABASE_URL", "CARDIAC_RETENTION_DAYS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    """An instance folder whose embedded database holds three one-second chunks from T0."""
    db = Database()
    db.init(None, instance_path=tmp_path)
    try:
        upgrade(db.engine)
        with db.session() as session:
            patient = Patient(name="P")
            session.add(patient)
            session.flush()
            device = create_device(session, "ecg-1", "token", patient_id=patient.id)
            rec, _ = open_recording(
                session, device, stream_id="s", fs=100.0, lead_names=["I"], gain=200.0, started_at=T0
            )
            for first in (0, 100, 200):
                insert_chunk(session, rec, np.full((100, 1), first, np.int16), first)
    finally:
        db.dispose()
    return tmp_path


def _invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.output


def _key_ids(instance: Path) -> list[str | None]:
    db = Database()
    db.init(None, instance_path=instance, cipher=None)
    try:
        with db.session() as session:
            return list(session.scalars(select(SignalChunk.key_id).order_by(SignalChunk.id)))
    finally:
        db.dispose()


class TestKeys:
    def test_generate(self) -> None:
        code, out = _invoke("keys", "generate")
        assert code == 0
        key = out.splitlines()[0]
        assert len(base64.urlsafe_b64decode(key)) == 32
        assert "key id " in out

    def test_embedded_key_file(self, instance: Path) -> None:
        path = instance / DATA_KEY_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        ids = _key_ids(instance)
        assert len(ids) == 3
        assert ids[0] is not None
        assert len(set(ids)) == 1

    def test_rotate(self, instance: Path) -> None:
        path = instance / DATA_KEY_FILE
        old = path.read_text()
        _, new = _invoke("keys", "generate")
        path.write_text(new.splitlines()[0] + "\n" + old)  # new key first, the old one below
        code, out = _invoke("keys", "rotate", "--instance-dir", str(instance), "--batch", "2")
        assert code == 0, out
        assert "3 chunk(s) and 0 note(s) re-encrypted" in out
        (new_id,) = set(_key_ids(instance))
        assert new_id is not None
        assert new_id in out
        path.write_text(new.splitlines()[0] + "\n")  # the old key can go now
        code, out = _invoke("storage", "verify", "--instance-dir", str(instance), "--strict")
        assert code == 0, out

    def test_rotate_without_the_old_key(self, instance: Path) -> None:
        _, new = _invoke("keys", "generate")
        (instance / DATA_KEY_FILE).write_text(new.splitlines()[0] + "\n")
        code, out = _invoke("keys", "rotate", "--instance-dir", str(instance))
        assert code == 1
        assert "undecryptable: signal chunk 1 is encrypted under data key" in out
        assert "3 chunk(s) or note(s) could not be re-encrypted" in out


class TestVerify:
    def test_basic(self, instance: Path) -> None:
        code, out = _invoke("storage", "verify", "--instance-dir", str(instance))
        assert code == 0, out
        assert "checked 3 chunk(s) (0 in clear) and 0 note(s)" in out

    def test_tampered(self, instance: Path) -> None:
        db = Database()
        db.init(None, instance_path=instance)
        try:
            with db.session() as session:
                session.execute(update(SignalChunk).where(SignalChunk.id == 2).values(payload=b"x" * 64))
        finally:
            db.dispose()
        code, out = _invoke("storage", "verify", "--instance-dir", str(instance), "--batch", "1")
        assert code == 1
        assert "tampered: signal chunk 2: authentication failed" in out
        assert "1 chunk(s) or note(s) are not intact" in out

    def test_wrong_key(self, instance: Path) -> None:
        _, key = _invoke("keys", "generate")
        env = {"CARDIAC_DATA_KEY": key.splitlines()[0]}  # the environment wins over the key file
        code, out = _invoke("storage", "verify", "--instance-dir", str(instance), env=env)
        assert code == 1
        assert out.count("undecryptable: signal chunk") == 3


class TestPurge:
    def test_basic(self, instance: Path) -> None:
        base = ["purge", "--instance-dir", str(instance)]
        code, out = _invoke(*base, "--before", "2026-01-01T00:00:02", "--dry-run")
        assert code == 0, out
        assert "would delete 2 signal_chunks, 0 beats, 0 vitals, 0 alarms" in out
        assert len(_key_ids(instance)) == 3
        code, out = _invoke(*base, "--before", "2026-01-01T00:00:02")
        assert code == 0, out
        assert "deleted 2 signal_chunks" in out
        assert len(_key_ids(instance)) == 1
        env = {"CARDIAC_RETENTION_DAYS": "1"}
        code, out = _invoke(*base, env=env)
        assert code == 0, out
        assert "deleted 1 signal_chunks" in out
        assert _key_ids(instance) == []
        db = Database()
        db.init(None, instance_path=instance)
        try:
            with db.session() as session:
                actions = list(session.scalars(select(AuditEntry.action).order_by(AuditEntry.id)))
        finally:
            db.dispose()
        assert actions == ["data.purge.start", "data.purge", "data.purge.start", "data.purge"]

    def test_exceptions(self, instance: Path) -> None:
        base = ["purge", "--instance-dir", str(instance)]
        code, out = _invoke(*base)
        assert code == 2
        assert "give --before DATE or --older-than-days N" in out
        code, out = _invoke(*base, "--before", "2026-01-01", "--older-than-days", "3")
        assert code == 2
        assert "not both" in out
        code, out = _invoke(*base, "--older-than-days", "0")
        assert code == 2
        assert "0 is not in the range x>=1" in out
        tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d")
        code, out = _invoke(*base, "--before", tomorrow)
        assert code == 2
        assert "Invalid value for --before: must be in the past" in out
        # --before wins over CARDIAC_RETENTION_DAYS from the environment.
        env = {"CARDIAC_RETENTION_DAYS": "1"}
        code, out = _invoke(*base, "--before", "2026-01-01T00:00:01", "--dry-run", env=env)
        assert code == 0, out
        assert "would delete 1 signal_chunks" in out
