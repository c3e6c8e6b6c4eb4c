"""Protection of stored data on SQLite and PostgreSQL: encryption, integrity, rotation, retention."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, func, select, update

import storage.maintenance
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    AuditEntry,
    Beat,
    ChecksumMismatchError,
    Database,
    DataCipher,
    DataKeyError,
    Patient,
    RecordingSession,
    SignalChunk,
    TamperedDataError,
    User,
    Vitals,
    acknowledge_alarm,
    add_beats,
    add_vitals,
    append_audit,
    audit_entries,
    create_device,
    encode_block,
    insert_chunk,
    iter_samples,
    load_block,
    open_recording,
    purge_expired,
    retention_cutoff,
    rotate_keys,
    verify_storage,
)
from storage.codec import SampleBlock

KEY_A = DataCipher(bytes(range(32)))
KEY_B = DataCipher(bytes(range(100, 132)))
T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
FS = 250.0


def _open(engine: Engine, cipher: DataCipher | None) -> Database:
    db = Database()
    db.init(engine.url.render_as_string(hide_password=False), cipher=cipher)
    return db


@pytest.fixture
def databases(engine: Engine) -> Iterator[dict[str, Database]]:
    """The test's database opened under key A, key B, B with A as previous, and no key."""
    dbs = {
        "a": _open(engine, KEY_A),
        "b": _open(engine, KEY_B),
        "rotating": _open(engine, DataCipher(bytes(range(100, 132)), [bytes(range(32))])),
        "clear": _open(engine, None),
    }
    yield dbs
    for db in dbs.values():
        db.dispose()


def _samples(first_seq: int, n: int) -> np.ndarray:
    seq = np.arange(first_seq, first_seq + n)
    return np.stack([seq % 30000, -(seq % 30000)], axis=1).astype(np.int16)


def _seed(db: Database) -> tuple[int, int]:
    """A patient with a two-lead 250 Hz recording from T0; returns (patient id, recording id)."""
    with db.session() as session:
        patient = Patient(name="Test Patient", mrn="MRN-1")
        session.add(patient)
        session.flush()
        device = create_device(session, "ecg-1", "secret-token", patient_id=patient.id)
        rec, _ = open_recording(
            session, device, stream_id="boot-1", fs=FS, lead_names=["MLII", "V5"], gain=200.0, started_at=T0
        )
        return patient.id, rec.id


def _store(db: Database, recording_id: int, first_seq: int, n: int = 250) -> bool:
    with db.session() as session:
        rec = session.get(RecordingSession, recording_id)
        assert rec is not None
        return insert_chunk(session, rec, _samples(first_seq, n), first_seq)


def _read(db: Database, patient_id: int) -> np.ndarray:
    with db.session() as session:
        blocks = [w.block.samples for w in iter_samples(session, patient_id, T0, T0 + timedelta(hours=1))]
    return np.concatenate(blocks) if blocks else np.zeros((0, 2), np.int16)


def _raw_chunks(db: Database) -> list[tuple[int, bytes, str | None]]:
    with db.session() as session:
        rows = session.execute(
            select(SignalChunk.id, SignalChunk.payload, SignalChunk.key_id).order_by(SignalChunk.id)
        )
        return [(i, bytes(p), k) for i, p, k in rows]


def _alarm(db: Database, patient_id: int, *, ended: datetime | None = None, note: str | None = None) -> int:
    with db.session() as session:
        alarm = Alarm(
            patient_id=patient_id,
            kind="spo2_low",
            priority=AlarmPriority.HIGH,
            state=AlarmState.RESOLVED if ended is not None else AlarmState.ACTIVE,
            started_at=(ended or T0) - timedelta(seconds=30),
            ended_at=ended,
            note=note,
        )
        session.add(alarm)
        session.flush()
        return alarm.id


def _raw_note(db: Database, alarm_id: int) -> str | None:
    with db.session() as session:
        return session.scalar(select(Alarm.note).where(Alarm.id == alarm_id))


class TestEncryptedChunks:
    def test_basic(self, databases: dict[str, Database]) -> None:
        """Round trip: ciphertext at rest under key A's id, the same samples back."""
        db = databases["a"]
        patient_id, rec_id = _seed(db)
        assert _store(db, rec_id, 0)
        assert _store(db, rec_id, 250)
        plain = encode_block(SampleBlock(_samples(0, 250), FS, ("MLII", "V5"), 200.0, first_seq=0))
        (id0, stored, key_id), _ = _raw_chunks(db)
        assert key_id == KEY_A.key_id
        assert plain[40:] not in stored  # no run of the plain payload is stored
        assert len(stored) == len(plain) + 12 + 16
        np.testing.assert_array_equal(_read(db, patient_id), _samples(0, 500))
        with db.session() as session:
            chunk = session.get(SignalChunk, id0)
            assert chunk is not None
            np.testing.assert_array_equal(load_block(chunk).samples, _samples(0, 250))

    def test_resend_is_recognised(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        _, rec_id = _seed(db)
        assert _store(db, rec_id, 0) is True
        assert _store(db, rec_id, 0) is False  # fresh nonce, same plain checksum
        assert len(_raw_chunks(db)) == 1

    def test_clear_chunks_still_read(self, databases: dict[str, Database]) -> None:
        patient_id, rec_id = _seed(databases["clear"])
        _store(databases["clear"], rec_id, 0)
        _store(databases["a"], rec_id, 250)
        assert [k for _, _, k in _raw_chunks(databases["a"])] == [None, KEY_A.key_id]
        np.testing.assert_array_equal(_read(databases["a"], patient_id), _samples(0, 500))

    def test_wrong_key(self, databases: dict[str, Database]) -> None:
        patient_id, rec_id = _seed(databases["a"])
        _store(databases["a"], rec_id, 0)
        ((chunk_id, _, _),) = _raw_chunks(databases["a"])
        wrong = rf"signal chunk {chunk_id} is encrypted under data key {KEY_A.key_id}, which is not loaded"
        with pytest.raises(DataKeyError, match=rf"{wrong} \(loaded: {KEY_B.key_id}\)"):
            _read(databases["b"], patient_id)
        with pytest.raises(DataKeyError, match=rf"{wrong} \(loaded: none configured\)"):
            _read(databases["clear"], patient_id)
        # Under the rotating cipher (B current, A previous), it reads.
        np.testing.assert_array_equal(_read(databases["rotating"], patient_id), _samples(0, 250))

    def test_tampering(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        patient_id, rec_id = _seed(db)
        _store(db, rec_id, 0)
        _store(db, rec_id, 250)
        (id0, p0, _), (id1, p1, _) = _raw_chunks(db)
        flipped = bytearray(p0)
        flipped[50] ^= 0x01
        with db.session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == id0).values(payload=bytes(flipped)))
        with pytest.raises(TamperedDataError, match=f"signal chunk {id0}: authentication failed"):
            _read(db, patient_id)
        # Swapping two rows' ciphertexts: each is bound to its own first_seq.
        with db.session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == id0).values(payload=p1))
            session.execute(update(SignalChunk).where(SignalChunk.id == id1).values(payload=p0))
        with pytest.raises(TamperedDataError, match=f"signal chunk {id0}: authentication failed"):
            _read(db, patient_id)
        with db.session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == id0).values(payload=p0))
            session.execute(update(SignalChunk).where(SignalChunk.id == id1).values(payload=p1))
        np.testing.assert_array_equal(_read(db, patient_id), _samples(0, 500))
        # The checksum column is verified after decryption.
        with db.session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == id1).values(checksum="0" * 64))
        with pytest.raises(ChecksumMismatchError, match=f"signal chunk {id1}: checksum mismatch"):
            _read(db, patient_id)


class TestEncryptedNotes:
    def test_basic(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        patient_id, _ = _seed(db)
        alarm_id = _alarm(db, patient_id)
        with db.session() as session:
            nurse = User(username="nurse", password_hash="x", role="clinician")
            session.add(nurse)
            session.flush()
            alarm = session.get(Alarm, alarm_id)
            assert alarm is not None
            acknowledge_alarm(session, alarm, user_id=nurse.id, at=T0, note="patient moved")
        assert alarm.note == "patient moved"  # still plain in memory after the flush
        stored = _raw_note(db, alarm_id)
        assert stored is not None
        assert stored.startswith(f"enc:v1:{KEY_A.key_id}:")
        assert "patient moved" not in stored
        with db.session() as session:
            loaded = session.get(Alarm, alarm_id)
            assert loaded is not None
            assert loaded.note == "patient moved"
            loaded.detail = "unrelated change"  # does not re-encrypt the note
        assert _raw_note(db, alarm_id) == stored

    def test_new_alarm_with_note(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        patient_id, _ = _seed(db)
        alarm_id = _alarm(db, patient_id, note="raised with a note")
        assert (_raw_note(db, alarm_id) or "").startswith("enc:v1:")
        with db.session() as session:
            assert [a.note for a in session.scalars(select(Alarm))] == ["raised with a note"]

    def test_legacy_plain_note(self, databases: dict[str, Database]) -> None:
        patient_id, _ = _seed(databases["clear"])
        alarm_id = _alarm(databases["clear"], patient_id, note="written in clear")
        assert _raw_note(databases["a"], alarm_id) == "written in clear"
        with databases["a"].session() as session:
            alarm = session.get(Alarm, alarm_id)
            assert alarm is not None
            assert alarm.note == "written in clear"

    def test_wrong_key_and_tampering(self, databases: dict[str, Database]) -> None:
        patient_id, _ = _seed(databases["a"])
        first = _alarm(databases["a"], patient_id, note="first")
        second = _alarm(databases["a"], patient_id, note="second")
        with databases["b"].session() as session, pytest.raises(DataKeyError, match=f"note of alarm {first}"):
            session.get(Alarm, first)
        with databases["a"].session() as session:
            session.execute(
                update(Alarm).where(Alarm.id == second).values(note=_raw_note(databases["a"], first))
            )
        with databases["a"].session() as session, pytest.raises(TamperedDataError, match=f"alarm {second}"):
            session.get(Alarm, second)


class TestVerify:
    def test_basic(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        patient_id, rec_id = _seed(db)
        for first in range(0, 2500, 250):
            _store(db, rec_id, first)
        _alarm(db, patient_id, note="fine")
        batches: list[int] = []

        def progress(steps: Iterable[int]) -> list[int]:
            batches.extend(steps)
            return batches

        report = verify_storage(db, batch=3, progress=progress, actor="cli")
        assert report.ok
        assert (report.chunks, report.clear_chunks, report.notes, report.clear_notes) == (10, 0, 1, 0)
        assert batches == [0, 1, 2, 3]  # ceil(10 / 3) batches
        with db.session() as session:
            (entry,) = audit_entries(session)
            assert (entry.actor, entry.action, entry.details["chunks"]) == ("cli", "storage.verify", 10)

    def test_reports_tampered_and_undecryptable(self, databases: dict[str, Database]) -> None:
        patient_id, rec_id = _seed(databases["a"])
        for first in (0, 250, 500):
            _store(databases["a"], rec_id, first)
        _store(databases["b"], rec_id, 750)
        _store(databases["clear"], rec_id, 1000)
        _alarm(databases["clear"], patient_id, note="plain")
        ids = [i for i, _, _ in _raw_chunks(databases["a"])]
        with databases["a"].session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == ids[1]).values(first_seq=260))
        report = verify_storage(databases["a"], batch=2)
        assert not report.ok
        assert (report.chunks, report.clear_chunks, report.clear_notes) == (5, 1, 1)
        found = {(p.kind, p.what) for p in report.problems}
        assert found == {("tampered", f"signal chunk {ids[1]}"), ("undecryptable", f"signal chunk {ids[3]}")}
        assert report.problem_count == 2

    def test_lists_a_bounded_number_of_problems(
        self, databases: dict[str, Database], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(storage.maintenance, "MAX_LISTED_PROBLEMS", 2)
        _, rec_id = _seed(databases["a"])
        for first in range(0, 1250, 250):
            _store(databases["a"], rec_id, first)
        report = verify_storage(databases["b"])  # the wrong key: every chunk is a problem
        assert (report.ok, report.problem_count, len(report.problems)) == (False, 5, 2)


class TestRotation:
    def test_basic(self, databases: dict[str, Database]) -> None:
        patient_id, rec_id = _seed(databases["clear"])
        _store(databases["clear"], rec_id, 0)
        for first in (250, 500, 750):
            _store(databases["a"], rec_id, first)
        _alarm(databases["a"], patient_id, note="under A")
        _alarm(databases["clear"], patient_id, note="in clear")
        db = databases["rotating"]
        report = rotate_keys(db, batch=3, actor="cli")
        assert (report.key_id, report.chunks, report.notes, report.problems) == (KEY_B.key_id, 4, 2, [])
        assert {k for _, _, k in _raw_chunks(db)} == {KEY_B.key_id}
        np.testing.assert_array_equal(_read(databases["b"], patient_id), _samples(0, 1000))
        with databases["b"].session() as session:
            assert sorted(a.note or "" for a in session.scalars(select(Alarm))) == ["in clear", "under A"]
        assert rotate_keys(db).chunks == 0  # nothing left: a second run does nothing
        with db.session() as session:
            actions = [(e.action, e.details.get("chunks")) for e in audit_entries(session)]
        assert actions[:2] == [("keys.rotate.start", 4), ("keys.rotate", 4)]

    def test_tampered_chunks_are_left_and_reported(self, databases: dict[str, Database]) -> None:
        _, rec_id = _seed(databases["a"])
        _store(databases["a"], rec_id, 0)
        _store(databases["a"], rec_id, 250)
        (id0, _, _), (_, p1, _) = _raw_chunks(databases["a"])
        with databases["a"].session() as session:
            session.execute(update(SignalChunk).where(SignalChunk.id == id0).values(checksum="f" * 64))
        report = rotate_keys(databases["rotating"])
        assert report.chunks == 1
        assert [(p.kind, p.what) for p in report.problems] == [("tampered", f"signal chunk {id0}")]
        assert [k for _, _, k in _raw_chunks(databases["a"])] == [KEY_A.key_id, KEY_B.key_id]
        assert _raw_chunks(databases["a"])[1][1] != p1

    def test_exceptions(self, databases: dict[str, Database]) -> None:
        with pytest.raises(ValueError, match="no data key is configured"):
            rotate_keys(databases["clear"])
        with pytest.raises(ValueError, match="`batch` must be at least 1, got 0"):
            rotate_keys(databases["a"], batch=0)


class TestPurge:
    @staticmethod
    def seed_history(db: Database) -> tuple[int, int]:
        """Chunks, beats, vitals and alarms from T0 on; returns (patient id, recording id)."""
        patient_id, rec_id = _seed(db)
        for first in range(0, 5000, 250):  # 20 one-second chunks, T0 .. T0 + 20 s
            _store(db, rec_id, first)
        with db.session() as session:
            beats = [
                Beat(
                    session_id=rec_id,
                    patient_id=patient_id,
                    t=T0 + timedelta(seconds=s),
                    r_peak_seq=int(s * FS),
                    label="N",
                    p_n=1.0,
                    p_s=0.0,
                    p_v=0.0,
                    p_f=0.0,
                    p_q=0.0,
                    model_version="test",
                )
                for s in range(20)
            ]
            add_beats(session, beats)
            for s in range(0, 20, 2):
                add_vitals(session, patient_id, T0 + timedelta(seconds=s), recording_id=rec_id, spo2=97.0)
            append_audit(session, "system", "test.seed")
        _alarm(db, patient_id, ended=T0 + timedelta(seconds=5), note="old, resolved")
        _alarm(db, patient_id, ended=T0 + timedelta(seconds=15), note="resolved after the cutoff")
        _alarm(db, patient_id, note="still open")
        return patient_id, rec_id

    @staticmethod
    def counts(db: Database) -> dict[str, int]:
        with db.session() as session:
            return {
                m.__tablename__: int(session.scalar(select(func.count()).select_from(m)) or 0)
                for m in (SignalChunk, Beat, Vitals, Alarm, AuditEntry)
            }

    def test_basic(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        patient_id, _ = self.seed_history(db)
        cutoff = T0 + timedelta(seconds=10)
        before = self.counts(db)
        dry = purge_expired(db, cutoff, dry_run=True)
        assert dry.counts == {"signal_chunks": 10, "beats": 10, "vitals": 5, "alarms": 1}
        assert self.counts(db) == before  # a dry run changes nothing, not even the audit log
        report = purge_expired(db, cutoff, batch=3, actor="cli")
        assert report.counts == dry.counts
        after = self.counts(db)
        assert after == {
            "signal_chunks": 10,
            "beats": 10,
            "vitals": 5,
            "alarms": 2,
            "audit_log": before["audit_log"] + 2,
        }
        np.testing.assert_array_equal(_read(db, patient_id)[:1], _samples(2500, 1))  # what is left reads
        with db.session() as session:
            entries = [(e.actor, e.action, e.details) for e in audit_entries(session)]
        assert entries[0][1] == "test.seed"  # the audit log is never purged
        assert entries[-1] == ("cli", "data.purge", {"cutoff": cutoff.isoformat(), **dry.counts})
        assert purge_expired(db, cutoff).counts == dict.fromkeys(dry.counts, 0)

    def test_retention_cutoff(self) -> None:
        now = datetime(2026, 3, 1, tzinfo=UTC)
        assert retention_cutoff(30, now=now) == datetime(2026, 1, 30, tzinfo=UTC)
        with pytest.raises(ValueError, match="`days` must be at least 1, got 0"):
            retention_cutoff(0)

    def test_exceptions(self, databases: dict[str, Database]) -> None:
        db = databases["a"]
        with pytest.raises(ValueError, match="must not be in the future"):
            purge_expired(db, datetime.now(UTC) + timedelta(days=1))
        with pytest.raises(ValueError, match="must be timezone-aware"):
            purge_expired(db, datetime(2026, 1, 1))  # naive on purpose
