"""Storage round trips: devices, chunks, windows, beats, vitals, alarms, audit."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

import storage.queries
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    AppendOnlyError,
    AuditEntry,
    Beat,
    CaregiverAssignment,
    ChecksumMismatchError,
    ChunkConflictError,
    CodecError,
    Patient,
    RecordingSession,
    Role,
    SignalChunk,
    StorageError,
    User,
    Vitals,
    acknowledge_alarm,
    add_beats,
    add_vitals,
    alarms_between,
    append_audit,
    audit_entries,
    beats_between,
    device_for_token,
    find_gaps,
    hash_token,
    insert_chunk,
    insert_chunks,
    iter_samples,
    load_block,
    open_alarms,
    open_recording,
    session_factory,
    stored_ranges,
    update_device_status,
    update_device_status_by_id,
    vitals_between,
)

FS = 250.0


def _samples(first_seq: int, n: int) -> np.ndarray:
    """Two leads whose values encode the sequence number, to check placement."""
    seq = np.arange(first_seq, first_seq + n)
    return np.stack([seq % 30000, -(seq % 30000)], axis=1).astype(np.int16)


def _at(t0: datetime, seconds: float) -> datetime:
    return t0 + timedelta(seconds=seconds)


class TestDevices:
    def test_basic(self, session: Session, recording: RecordingSession) -> None:
        device = device_for_token(session, "secret-token")
        assert device is not None
        assert device.device_uid == "ecg-1"
        assert device.token_hash == hash_token("secret-token") != "secret-token"
        assert device_for_token(session, "wrong") is None

    def test_open_recording_is_get_or_create(self, session: Session, recording: RecordingSession) -> None:
        again, created = open_recording(
            session,
            recording.device,
            stream_id="boot-1",
            fs=500.0,
            lead_names=["I"],
            gain=1.0,
            started_at=recording.started_at,
        )
        assert (again.id, created, again.fs, again.lead_names) == (recording.id, False, FS, ["MLII", "V5"])
        assert again.patient_id == recording.device.patient_id

    def test_update_device_status(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        device = recording.device
        update_device_status(session, device, seen_at=t0, battery=81.0, rssi=-61, firmware="1.5.0")
        update_device_status(session, device, seen_at=_at(t0, 5))
        session.flush()
        session.expire_all()
        assert (device.last_seen_at, device.battery, device.rssi, device.firmware) == (
            _at(t0, 5),
            81.0,
            -61,
            "1.5.0",
        )

    def test_update_device_status_by_id(
        self, session: Session, recording: RecordingSession, t0: datetime
    ) -> None:
        device = recording.device
        update_device_status(session, device, seen_at=t0, battery=81.0, rssi=-61, firmware="1.5.0")
        session.flush()
        update_device_status_by_id(session, device.id, seen_at=_at(t0, 5), rssi=-70)
        update_device_status_by_id(session, device.id, seen_at=_at(t0, 6))
        session.expire_all()
        assert (device.last_seen_at, device.battery, device.rssi, device.firmware) == (
            _at(t0, 6),
            81.0,
            -70,
            "1.5.0",
        )
        with pytest.raises(StorageError, match=f"device {device.id + 1000} no longer exists"):
            update_device_status_by_id(session, device.id + 1000, seen_at=t0)


class TestUsersAndPatients:
    def test_basic(self, session: Session) -> None:
        carer = User(username="carer", password_hash="x", role=Role.CAREGIVER)
        patient = Patient(name="P", alarm_limits={"tachycardia_bpm": 140})
        session.add_all([carer, patient])
        session.flush()
        session.add(CaregiverAssignment(user_id=carer.id, patient_id=patient.id))
        session.flush()
        session.expire_all()
        assert [a.patient.name for a in carer.assignments] == ["P"]
        assert carer.role is Role.CAREGIVER
        assert patient.alarm_limits == {"tachycardia_bpm": 140}
        assert patient.created_at.tzinfo is not None

    def test_foreign_keys_are_enforced(self, session: Session) -> None:
        patient = Patient(name="P")
        session.add(patient)
        session.flush()
        session.add(Vitals(patient_id=patient.id + 1000, t=datetime.now(UTC), spo2=97.0))
        with pytest.raises(IntegrityError, match=r"(?i)foreign key"):
            session.flush()
        session.rollback()


class TestInsertChunk:
    def test_basic(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        assert insert_chunk(session, recording, _samples(0, 2500), 0) is True
        chunk = session.scalars(select(SignalChunk)).one()
        assert (chunk.first_seq, chunk.n_samples, chunk.end_seq) == (0, 2500, 2500)
        assert (chunk.t_start, chunk.t_end) == (t0, _at(t0, 10.0))
        block = load_block(chunk)
        np.testing.assert_array_equal(block.samples, _samples(0, 2500))
        assert (block.fs, block.lead_names, block.gain) == (FS, ("MLII", "V5"), 200.0)

    def test_resend_is_not_stored_twice(self, session: Session, recording: RecordingSession) -> None:
        assert insert_chunk(session, recording, _samples(0, 100), 0) is True
        assert insert_chunk(session, recording, _samples(0, 100), 0) is False
        assert insert_chunk(session, recording, _samples(100, 100), 100) is True
        assert len(session.scalars(select(SignalChunk)).all()) == 2

    def test_exceptions(self, session: Session, recording: RecordingSession) -> None:
        insert_chunk(session, recording, _samples(100, 100), 100)
        with pytest.raises(ChunkConflictError, match=r"\[100, 200\) of recording session"):
            insert_chunk(session, recording, _samples(100, 100) + 1, 100)
        with pytest.raises(ChunkConflictError, match=r"overlap the stored chunk \[100, 200\)"):
            insert_chunk(session, recording, _samples(150, 100), 150)
        with pytest.raises(ChunkConflictError, match="overlap"):
            insert_chunk(session, recording, _samples(50, 60), 50)
        with pytest.raises(CodecError, match="must name each of the 3 columns"):
            insert_chunk(session, recording, np.zeros((10, 3), np.int16), 500)
        assert insert_chunk(session, recording, _samples(0, 100), 0) is True  # touching is fine
        with pytest.raises(ValueError, match="at most 600 s of samples, got 150001 samples at 250 Hz"):
            insert_chunk(session, recording, np.zeros((150_001, 2), np.int16), 10_000)

    def test_checksum_verified_on_read(self, session: Session, recording: RecordingSession) -> None:
        insert_chunk(session, recording, _samples(0, 100), 0)
        chunk = session.scalars(select(SignalChunk)).one()
        tampered = bytearray(chunk.payload)
        tampered[-1] ^= 0xFF
        session.execute(update(SignalChunk).values(payload=bytes(tampered)))
        session.expire_all()
        chunk = session.scalars(select(SignalChunk)).one()
        with pytest.raises(ChecksumMismatchError, match=f"signal chunk {chunk.id}: checksum mismatch"):
            load_block(chunk)


def _chunk_keys(session: Session) -> list[tuple[int, int]]:
    return [
        (c.first_seq, c.n_samples)
        for c in session.scalars(select(SignalChunk).order_by(SignalChunk.first_seq))
    ]


class TestInsertChunks:
    def test_basic(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        """Blocks in any order, with gaps between them: each stored once, where it belongs."""
        blocks = [(_samples(first, 100), first) for first in (300, 0, 100, 700)]
        assert insert_chunks(session, recording, blocks) == [True, True, True, True]
        assert _chunk_keys(session) == [(0, 100), (100, 100), (300, 100), (700, 100)]
        chunks = session.scalars(select(SignalChunk).order_by(SignalChunk.first_seq)).all()
        for chunk in chunks:
            np.testing.assert_array_equal(load_block(chunk).samples, _samples(chunk.first_seq, 100))
            assert chunk.t_start == _at(t0, chunk.first_seq / FS)
            assert chunk.t_end == _at(t0, (chunk.first_seq + 100) / FS)
        assert stored_ranges(session, recording.id) == [(0, 200), (300, 400), (700, 800)]

    def test_resends_are_not_stored_twice(self, session: Session, recording: RecordingSession) -> None:
        """Stored blocks, and blocks given twice, come back ``False``; the new ones are stored."""
        assert insert_chunks(session, recording, [(_samples(0, 100), 0), (_samples(200, 100), 200)]) == [
            True,
            True,
        ]
        again = [(_samples(f, 100), f) for f in (0, 100, 200, 100, 300)]
        assert insert_chunks(session, recording, again) == [False, True, False, False, True]
        assert _chunk_keys(session) == [(0, 100), (100, 100), (200, 100), (300, 100)]
        assert insert_chunks(session, recording, []) == []

    def test_edge_cases(self, session: Session, recording: RecordingSession) -> None:
        """Touching blocks are fine; the check reaches a stored block that started long before."""
        insert_chunk(session, recording, _samples(0, 1000), 0)
        assert insert_chunks(
            session, recording, [(_samples(1000, 10), 1000), (_samples(1010, 10), 1010)]
        ) == [
            True,
            True,
        ]
        with pytest.raises(ChunkConflictError, match=r"overlap the stored chunk \[0, 1000\)"):
            insert_chunks(session, recording, [(_samples(990, 5), 990), (_samples(2000, 5), 2000)])
        assert _chunk_keys(session) == [(0, 1000), (1000, 10), (1010, 10)]

    def test_exceptions(self, session: Session, recording: RecordingSession) -> None:
        """A bad block anywhere in the batch: an error naming it, and nothing of the batch written."""
        insert_chunk(session, recording, _samples(100, 100), 100)
        cases: list[tuple[type[Exception], str, list[tuple[np.ndarray, int]]]] = [
            (
                ChunkConflictError,
                r"samples \[100, 200\) of recording session \d+ overlap the stored chunk \[100, 200\)",
                [(_samples(0, 100), 0), (_samples(100, 100) + 1, 100)],
            ),
            (
                ChunkConflictError,
                r"samples \[250, 300\) .* overlap the chunk \[200, 300\) of the same batch",
                [(_samples(200, 100), 200), (_samples(250, 50), 250)],
            ),
            (
                ChunkConflictError,
                r"overlap the chunk \[400, 500\) of the same batch with different content",
                [(_samples(400, 100), 400), (_samples(400, 100) + 1, 400)],
            ),
            (
                ChunkConflictError,
                r"\[150, 250\) .* overlap the stored chunk \[100, 200\)",
                [(_samples(150, 100), 150)],
            ),
            (
                CodecError,
                "must name each of the 3 columns",
                [(_samples(0, 100), 0), (np.zeros((10, 3), np.int16), 500)],
            ),
            (
                ValueError,
                "at most 600 s of samples, got 150001 samples at 250 Hz",
                [(_samples(0, 100), 0), (np.zeros((150_001, 2), np.int16), 10_000)],
            ),
        ]
        for error, match, blocks in cases:
            with pytest.raises(error, match=match):
                insert_chunks(session, recording, blocks)
            assert _chunk_keys(session) == [(100, 100)], match

    def test_race_with_another_writer(
        self, session: Session, recording: RecordingSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Another writer stored a block between check and insert: ``False`` if equal, else refused."""
        insert_chunk(session, recording, _samples(0, 100), 0)
        insert_chunk(session, recording, _samples(100, 100) + 1, 100)
        monkeypatch.setattr(storage.queries, "_stored_around", lambda *args: [])  # the check saw neither
        assert insert_chunks(session, recording, [(_samples(0, 100), 0), (_samples(200, 100), 200)]) == [
            False,
            True,
        ]
        with pytest.raises(ChunkConflictError, match=r"overlap the stored chunk \[100, 200\)"):
            insert_chunks(session, recording, [(_samples(100, 100), 100)])


class TestRangesAndGaps:
    def test_basic(self, session: Session, recording: RecordingSession) -> None:
        for first, n in [(500, 100), (0, 100), (100, 100), (900, 50), (600, 100)]:
            insert_chunk(session, recording, _samples(first, n), first)
        assert stored_ranges(session, recording.id) == [(0, 200), (500, 700), (900, 950)]
        assert find_gaps(session, recording.id) == [(200, 500), (700, 900)]

    def test_edge_cases(self, session: Session, recording: RecordingSession) -> None:
        assert stored_ranges(session, recording.id) == []
        assert find_gaps(session, recording.id) == []


class TestIterSamples:
    def test_basic(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        # Four 2 s chunks with a 2 s gap: [0, 500) [500, 1000) gap [1500, 2000) [2000, 2500)
        for first in (0, 500, 1500, 2000):
            insert_chunk(session, recording, _samples(first, 500), first)
        blocks = list(iter_samples(session, recording.patient_id or 0, _at(t0, 1.0), _at(t0, 9.0)))
        assert [(b.block.first_seq, b.block.n_samples) for b in blocks] == [
            (250, 250),
            (500, 500),
            (1500, 500),
            (2000, 250),
        ]
        for b in blocks:
            np.testing.assert_array_equal(b.block.samples, _samples(b.block.first_seq, b.block.n_samples))
            assert b.t0 == _at(t0, b.block.first_seq / FS)
            assert b.session_id == recording.id
        # The gap stays a gap: no samples between seq 1000 and 1500.
        assert blocks[1].block.end_seq == 1000
        assert blocks[2].block.first_seq == 1500

    def test_edge_cases(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        insert_chunk(session, recording, _samples(0, 500), 0)
        pid = recording.patient_id or 0
        # A window inside one chunk, between two samples, and one that misses.
        (inner,) = iter_samples(session, pid, _at(t0, 0.5001), _at(t0, 0.5121))
        assert (inner.block.first_seq, inner.block.n_samples) == (126, 3)
        assert list(iter_samples(session, pid, _at(t0, 2.0), _at(t0, 3.0))) == []
        assert list(iter_samples(session, pid + 1, t0, _at(t0, 2.0))) == []

    def test_streams_one_chunk_at_a_time(
        self, session: Session, recording: RecordingSession, t0: datetime
    ) -> None:
        for first in range(0, 5000, 500):
            insert_chunk(session, recording, _samples(first, 500), first)
        last = session.scalars(select(SignalChunk).where(SignalChunk.first_seq == 4500)).one()
        session.execute(update(SignalChunk).where(SignalChunk.id == last.id).values(checksum="0" * 64))
        blocks = iter_samples(session, recording.patient_id or 0, t0, _at(t0, 60.0), batch=2)
        # The corrupted last chunk is only decoded when reached: the earlier
        # ones arrive first, which shows nothing reads the whole recording up front.
        assert [next(blocks).block.first_seq for _ in range(9)] == list(range(0, 4500, 500))
        with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
            next(blocks)

    def test_exceptions(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        with pytest.raises(ValueError, match="`end` must be after `start`"):
            list(iter_samples(session, 1, t0, t0))
        with pytest.raises(ValueError, match="timezone-aware"):
            list(iter_samples(session, 1, t0.replace(tzinfo=None), _at(t0, 1.0).replace(tzinfo=None)))


def _beat(recording: RecordingSession, seq: int, label: str = "N") -> Beat:
    probs = {"N": 0.01, "S": 0.01, "V": 0.01, "F": 0.01, "Q": 0.01, label: 0.96}
    return Beat(
        session_id=recording.id,
        patient_id=recording.patient_id,
        t=recording.started_at + timedelta(seconds=seq / recording.fs),
        r_peak_seq=seq,
        label=label,
        p_n=probs["N"],
        p_s=probs["S"],
        p_v=probs["V"],
        p_f=probs["F"],
        p_q=probs["Q"],
        p_abnormal=1.0 - probs["N"],
        p_early_alarm=0.05,
        model_version="cnn-lstm-test",
    )


class TestBeatsAndVitals:
    def test_beats(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        beats = [_beat(recording, seq, "V" if seq == 500 else "N") for seq in range(0, 2500, 250)]
        assert add_beats(session, beats) == 10
        assert add_beats(session, [_beat(recording, 250), _beat(recording, 2600)]) == 1  # resend skipped
        assert add_beats(session, []) == 0
        window = list(beats_between(session, recording.patient_id or 0, _at(t0, 1.0), _at(t0, 3.1)))
        assert [b.r_peak_seq for b in window] == [250, 500, 750]
        assert [b.label for b in window] == ["N", "V", "N"]
        assert window[1].p_v == pytest.approx(0.96)
        assert window[0].t == _at(t0, 1.0)

    def test_vitals(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        pid = recording.patient_id or 0
        for i in range(5):
            add_vitals(session, pid, _at(t0, i), recording_id=recording.id, spo2=97.0 - i, pulse=70.0)
        add_vitals(session, pid, _at(t0, 10), temperature=36.9)
        window = list(vitals_between(session, pid, _at(t0, 1), _at(t0, 11)))
        assert [v.spo2 for v in window] == [96.0, 95.0, 94.0, 93.0, None]
        assert window[-1].temperature == pytest.approx(36.9)
        assert window[-1].pulse is None


class TestAlarmsAndAudit:
    def test_alarms(self, session: Session, recording: RecordingSession, t0: datetime) -> None:
        pid = recording.patient_id or 0
        nurse = User(username="nurse", password_hash="x", role=Role.CLINICIAN)
        session.add(nurse)
        old = Alarm(
            patient_id=pid,
            kind="tachycardia",
            priority=AlarmPriority.MEDIUM,
            state=AlarmState.RESOLVED,
            started_at=_at(t0, 0),
            ended_at=_at(t0, 30),
        )
        live = Alarm(
            patient_id=pid,
            kind="asystole",
            priority=AlarmPriority.HIGH,
            state=AlarmState.ACTIVE,
            started_at=_at(t0, 100),
        )
        session.add_all([old, live])
        session.flush()
        assert [a.kind for a in alarms_between(session, pid, _at(t0, 20), _at(t0, 200))] == [
            "tachycardia",
            "asystole",
        ]
        assert [a.kind for a in alarms_between(session, pid, _at(t0, 40), _at(t0, 200))] == ["asystole"]
        assert [a.id for a in open_alarms(session, pid)] == [live.id]
        acknowledge_alarm(session, live, user_id=nurse.id, at=_at(t0, 110), note="checked leads")
        session.flush()
        session.expire_all()
        stored = session.get(Alarm, live.id)
        assert stored is not None
        assert stored.state is AlarmState.ACKNOWLEDGED
        assert stored.acknowledged_by is not None
        assert stored.acknowledged_by.username == "nurse"
        assert stored.acknowledged_at == _at(t0, 110)
        assert stored.note == "checked leads"
        (entry,) = audit_entries(session)
        assert (entry.actor, entry.action, entry.target) == (
            f"user:{nurse.id}",
            "alarm.acknowledge",
            f"alarm:{live.id}",
        )
        assert "checked leads" not in str(entry.details)

    def test_audit_is_append_only(self, engine: Engine, t0: datetime) -> None:
        sessions = session_factory(engine)
        with sessions() as session, session.begin():
            for i in range(3):
                append_audit(session, "system", "test.event", details={"i": i}, at=_at(t0, i))
        with sessions() as session, session.begin():
            assert [e.details["i"] for e in audit_entries(session, _at(t0, 1))] == [1, 2]
            assert [e.details["i"] for e in audit_entries(session, end=_at(t0, 1))] == [0]
        with sessions() as session, session.begin():
            entry = session.scalars(select(AuditEntry)).first()
            assert entry is not None
            entry.actor = "mallory"
            with pytest.raises(AppendOnlyError, match="append-only"):
                session.flush()
            session.rollback()
        with sessions() as session, session.begin():
            entry = session.scalars(select(AuditEntry)).first()
            session.delete(entry)
            with pytest.raises(AppendOnlyError, match="append-only"):
                session.flush()
            session.rollback()
