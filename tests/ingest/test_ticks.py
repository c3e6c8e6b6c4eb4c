"""Time-driven alarms: the device-silent alarm and dashboard acknowledgements reaching the engine."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from ingest.alarms import AlarmKind
from ingest.live_tokens import issue_live_token
from ingest.pipeline import AnalysisProcessor, PipelineConfig, ShardedAnalysisProcessor
from ingest.processing import DisplayProcessor, LiveEvent, StoredBlock, VitalsReading
from ingest.protocol import Vitals
from ingest.server import IngestServer
from model.inference import BeatClassifier
from sigproc.synthetic import synthetic_ecg
from storage import (
    Alarm,
    AlarmState,
    Database,
    Device,
    Patient,
    Role,
    User,
    acknowledge_alarm,
    create_device,
    open_recording,
)

SECRET = "test-live-secret-0123456789abcdef"
START = datetime(2026, 1, 1, tzinfo=UTC)
FS = 360.0
FRAME = 90  # 0.25 s


@pytest.fixture(scope="module")
def classifier() -> BeatClassifier:
    return BeatClassifier.load(num_threads=1)


class Clock:
    """A wall clock the test moves by hand (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now


def recording(db: Database, uid: str) -> tuple[int, int]:
    """A patient with a device and a recording session: ``(patient_id, session_id)``."""
    with db.session() as session:
        patient = Patient(name=f"patient of {uid}")
        session.add(patient)
        session.flush()
        device = create_device(session, uid, f"token-of-{uid}", patient_id=patient.id)
        rec, _ = open_recording(
            session, device, stream_id="s1", fs=FS, lead_names=("MLII", "V5"), gain=200.0, started_at=START
        )
        return int(patient.id), int(rec.id)


def counts(seconds: float, seed: int = 1) -> np.ndarray:
    mv = synthetic_ecg(seconds, FS, heart_rate_bpm=75, seed=seed).signal
    c = np.round(mv * 200.0 + 1024).astype(np.int16)
    return np.column_stack([c, c])


def block_of(
    samples: np.ndarray,
    first: int,
    session: int,
    patient: int,
    *,
    started_at: datetime = START,
    received_at: datetime | None = None,
) -> StoredBlock:
    """Counts of :func:`counts` (gain 200, baseline 1024) stored as the frame from sample ``first``."""
    return StoredBlock(
        samples=samples,
        fs=FS,
        lead_names=("MLII", "V5"),
        gain=200.0,
        baseline=1024,
        first_seq=first,
        session_id=session,
        patient_id=patient,
        started_at=started_at,
        received_at=received_at,
    )


def send(
    proc: AnalysisProcessor,
    clock: Clock,
    samples: np.ndarray,
    first: int,
    patient: int,
    session: int,
    started_at: datetime = START,
) -> list[LiveEvent]:
    """Blocks of 0.25 s from sample ``first``, each arriving (real time) when its last sample is taken."""
    events: list[LiveEvent] = []
    for i in range(0, samples.shape[0], FRAME):
        seq = first + i
        block = block_of(
            samples[i : i + FRAME],
            seq,
            session,
            patient,
            started_at=started_at,
            received_at=started_at + timedelta(seconds=(seq + FRAME) / FS),
        )
        clock.now = block.received_at.timestamp()  # type: ignore[union-attr]
        events.extend(proc.process(block))
    return events


def alarms(events: Sequence[LiveEvent], kind: str, change: str) -> list[dict[str, Any]]:
    return [
        dict(e.data)
        for e in events
        if e.kind == "alarm" and e.data["kind"] == kind and e.data["change"] == change
    ]


def rows(db: Database, patient: int, kind: str) -> list[Alarm]:
    with db.session() as session:
        return list(session.scalars(select(Alarm).where(Alarm.patient_id == patient, Alarm.kind == kind)))


def vitals(proc: AnalysisProcessor, clock: Clock, patient: int, session: int, spo2: float) -> list[LiveEvent]:
    reading = VitalsReading(session, patient, datetime.fromtimestamp(clock.now, UTC), Vitals(spo2=spo2))
    return list(proc.vitals(reading))


class TestDeviceSilent:
    def test_raised_after_10_s_stored_published_and_resolved(
        self, sqlite_db: Database, classifier: BeatClassifier
    ) -> None:
        """A device that stops sending: device_silent within 11 s of its last sample, resolved on resume."""
        patient, session = recording(sqlite_db, "quiet")
        clock = Clock()
        proc = AnalysisProcessor(
            sqlite_db, classifier, config=PipelineConfig(batch_wait_s=0.0), wall_clock=clock
        )
        signal = counts(16.0)
        send(proc, clock, signal[: 8 * 360], 0, patient, session)
        last = clock.now
        assert not alarms(proc.tick(last + 5.0), "device_silent", "raised")
        assert not alarms(proc.tick(last + 9.9), "device_silent", "raised")
        clock.now = last + 10.5
        raised = alarms(proc.tick(last + 10.5), "device_silent", "raised")
        assert len(raised) == 1
        assert raised[0]["patient_id"] == patient
        assert raised[0]["session_id"] == session
        assert raised[0]["priority"] == "medium"
        (row,) = rows(sqlite_db, patient, "device_silent")
        assert row.id == raised[0]["alarm_id"]
        assert row.state is AlarmState.ACTIVE
        assert not alarms(proc.tick(last + 11.5), "device_silent", "raised")  # raised once
        # Data resumes (the rest of the signal, no gap): the alarm resolves.
        resumed = send(proc, clock, signal[8 * 360 :], 8 * 360, patient, session)
        resumed += proc.tick(clock.now)
        assert len(alarms(resumed, "device_silent", "resolved")) == 1
        (row,) = rows(sqlite_db, patient, "device_silent")
        assert row.state is AlarmState.RESOLVED
        assert row.ended_at is not None

    @pytest.mark.parametrize("new_session", [False, True], ids=["same-session", "new-session"])
    def test_raised_after_disconnect_and_resolved_on_resume(
        self, sqlite_db: Database, classifier: BeatClassifier, new_session: bool
    ) -> None:
        """A device whose connection ended: device_silent is still raised; the resumed stream resolves it.

        A restarted device resumes under a new recording session: the
        patient's alarms move to it, and nothing is left parked.
        """
        uid = f"gone-{new_session}"
        patient, session = recording(sqlite_db, uid)
        resume_session, resume_first = session, 6 * 360
        if new_session:
            with sqlite_db.session() as db_session:
                device = db_session.scalars(select(Device).where(Device.device_uid == uid)).one()
                rec, _ = open_recording(
                    db_session,
                    device,
                    stream_id="s2",
                    fs=FS,
                    lead_names=("MLII", "V5"),
                    gain=200.0,
                    started_at=START,
                )
                resume_session, resume_first = int(rec.id), 0
        clock = Clock()
        proc = AnalysisProcessor(
            sqlite_db, classifier, config=PipelineConfig(batch_wait_s=0.0), wall_clock=clock
        )
        signal = counts(12.0)
        send(proc, clock, signal[: 6 * 360], 0, patient, session)
        proc.close_stream(session)
        last = clock.now
        assert not alarms(proc.tick(last + 9.0), "device_silent", "raised")
        assert len(alarms(proc.tick(last + 10.5), "device_silent", "raised")) == 1
        assert [r.state for r in rows(sqlite_db, patient, "device_silent")] == [AlarmState.ACTIVE]
        clock.now = last + 30.0
        started = datetime.fromtimestamp(clock.now, UTC) if new_session else START
        resumed = send(
            proc, clock, signal[6 * 360 :], resume_first, patient, resume_session, started_at=started
        )
        assert len(alarms(resumed, "device_silent", "resolved")) == 1
        assert [r.state for r in rows(sqlite_db, patient, "device_silent")] == [AlarmState.RESOLVED]
        assert proc.open_sessions["parked"] == 0
        assert not alarms(proc.tick(clock.now + 5.0), "device_silent", "raised")
        proc.close_stream(resume_session)
        assert proc.open_sessions["parked"] == 1  # the resumed stream, for its own device-silent alarm

    def test_sample_clock_ahead_of_wall_clock_is_not_silence(self, classifier: BeatClassifier) -> None:
        """Silence is measured from the arrival on the wall clock, whatever the sample clock says."""
        clock = Clock()
        proc = AnalysisProcessor(None, classifier, config=PipelineConfig(batch_wait_s=0.0), wall_clock=clock)
        resent = START - timedelta(hours=1)  # a resend of old samples
        block = block_of(counts(1.0), 0, 1, 7, started_at=resent)
        clock.now = START.timestamp()
        proc.process(block)
        assert not alarms(proc.tick(clock.now + 1.0), "device_silent", "raised")
        assert alarms(proc.tick(clock.now + 10.5), "device_silent", "raised")

    def test_display_processor_tick_is_a_no_op(self) -> None:
        assert DisplayProcessor().tick(0.0) == []


class TestDashboardAcknowledgement:
    @staticmethod
    def user(db: Database) -> int:
        with db.session() as session:
            user = User(username="nurse", password_hash="x", role=Role.CLINICIAN)
            session.add(user)
            session.flush()
            return int(user.id)

    @staticmethod
    def acknowledge(db: Database, row_id: int, user_id: int, *, resolve: bool) -> None:
        with db.session() as session:
            row = session.get(Alarm, row_id)
            assert row is not None
            acknowledge_alarm(
                session, row, user_id=user_id, at=datetime.now(UTC), note="seen", resolve=resolve
            )

    def test_acknowledged_in_the_db_reaches_the_engine(
        self, sqlite_db: Database, classifier: BeatClassifier
    ) -> None:
        """SpO2 82 %: a high alarm acknowledged in the dashboard is acknowledged in the engine."""
        patient, session = recording(sqlite_db, "ack")
        user = self.user(sqlite_db)
        clock = Clock()
        proc = AnalysisProcessor(
            sqlite_db, classifier, config=PipelineConfig(batch_wait_s=0.0), wall_clock=clock
        )
        send(proc, clock, counts(2.0), 0, patient, session)
        raised = alarms(vitals(proc, clock, patient, session, 82.0), "spo2_low", "raised")
        assert raised
        assert raised[0]["priority"] == "high"
        self.acknowledge(sqlite_db, raised[0]["alarm_id"], user, resolve=False)
        events = proc.tick(clock.now)
        engine = proc._sessions[session].engine
        (alarm,) = [a for a in engine.open_alarms if a.kind is AlarmKind.SPO2_LOW]
        assert alarm.state is AlarmState.ACKNOWLEDGED
        assert alarm.acknowledged_by == f"user:{user}"
        assert alarm.note == "seen"
        assert alarms(events, "spo2_low", "updated")
        assert not alarms(proc.tick(clock.now), "spo2_low", "updated")  # reconciled once
        # The condition ends: an acknowledged high alarm does not latch.
        resolved = alarms(vitals(proc, clock, patient, session, 97.0), "spo2_low", "resolved")
        assert len(resolved) == 1
        assert not [a for a in engine.open_alarms if a.kind is AlarmKind.SPO2_LOW]
        assert [r.state for r in rows(sqlite_db, patient, "spo2_low")] == [AlarmState.RESOLVED]

    def test_latched_alarm_acknowledged_in_the_db_resolves(
        self, sqlite_db: Database, classifier: BeatClassifier
    ) -> None:
        """A latched high alarm (condition over, unacknowledged) resolves in the engine once acknowledged."""
        patient, session = recording(sqlite_db, "latched")
        user = self.user(sqlite_db)
        clock = Clock()
        proc = AnalysisProcessor(
            sqlite_db, classifier, config=PipelineConfig(batch_wait_s=0.0), wall_clock=clock
        )
        send(proc, clock, counts(2.0), 0, patient, session)
        row_id = alarms(vitals(proc, clock, patient, session, 80.0), "spo2_low", "raised")[0]["alarm_id"]
        assert alarms(vitals(proc, clock, patient, session, 97.0), "spo2_low", "updated")  # latched
        engine = proc._sessions[session].engine
        assert [a.kind for a in engine.open_alarms] == [AlarmKind.SPO2_LOW]
        self.acknowledge(sqlite_db, row_id, user, resolve=True)
        assert len(alarms(proc.tick(clock.now), "spo2_low", "resolved")) == 1
        assert not engine.open_alarms
        assert [r.state for r in rows(sqlite_db, patient, "spo2_low")] == [AlarmState.RESOLVED]


class TestServerTicks:
    def test_tick_events_are_published_on_live(self, sqlite_db: Database) -> None:
        """The server calls the processor's tick periodically and publishes what it returns."""

        class Ticking(DisplayProcessor):
            def __init__(self) -> None:
                super().__init__()
                self.ticks: list[float] = []

            def tick(self, now: float) -> Sequence[LiveEvent]:
                self.ticks.append(now)
                data = {"patient_id": 5, "session_id": 9, "replay": False, "kind": "device_silent"}
                return [LiveEvent("alarm", data), LiveEvent("alarm", {**data, "patient_id": None})]

        processor = Ticking()

        async def scenario() -> dict[str, Any]:
            from websockets.asyncio.client import connect

            server = IngestServer(sqlite_db, live_secret=SECRET, processor=processor, tick_interval_s=0.05)
            await server.start()
            try:
                async with connect(f"{server.url}/live") as ws:
                    token = issue_live_token(SECRET, 1, [5], 60)
                    await ws.send(
                        json.dumps({"type": "subscribe", "token": token, "view": "patient", "patient_id": 5})
                    )
                    assert json.loads(await ws.recv())["type"] == "subscribed"
                    return dict(json.loads(await ws.recv()))
            finally:
                await server.stop()

        async def bounded() -> dict[str, Any]:
            async with asyncio.timeout(10.0):
                return await scenario()

        message = asyncio.run(bounded())
        assert message["type"] == "alarm"
        assert message["patient_id"] == 5
        assert message["kind"] == "device_silent"
        assert processor.ticks

    def test_exceptions(self, sqlite_db: Database) -> None:
        with pytest.raises(ValueError, match=r"`tick_interval_s` must be positive"):
            IngestServer(sqlite_db, live_secret=SECRET, tick_interval_s=0.0)


class TestShardedTicks:
    def test_tick_is_forwarded_to_the_workers(self) -> None:
        """The workers tick too; their device-silent alarm comes back with a later tick."""
        sharded = ShardedAnalysisProcessor(None, workers=1)
        try:
            block = block_of(counts(1.0), 0, 3, 7)
            sharded.process(block)
            events: list[LiveEvent] = []
            deadline = time.monotonic() + 30.0
            while not alarms(events, "device_silent", "raised") and time.monotonic() < deadline:
                events.extend(sharded.tick(time.time() + 10.5))
                time.sleep(0.05)
            (raised,) = alarms(events, "device_silent", "raised")
            assert raised["session_id"] == 3
            assert raised["patient_id"] == 7
        finally:
            sharded.close()

    def test_beats_of_a_quiet_open_stream_leave_with_a_tick(self) -> None:
        """Beats waiting for a block that does not come (the device went quiet) leave with a tick."""
        sharded = ShardedAnalysisProcessor(None, workers=1, stale_s=0.2)
        try:
            samples = counts(12.0)
            seen: list[LiveEvent] = []
            for first in range(0, len(samples), FRAME):
                block = block_of(samples[first : first + FRAME], first, 4, 9)
                seen.extend(sharded.process(block))
            ticked: list[LiveEvent] = []
            deadline = time.monotonic() + 30.0
            while not [e for e in ticked if e.kind == "beat"] and time.monotonic() < deadline:
                time.sleep(0.1)
                ticked.extend(sharded.tick(time.time()))
            beats = [e.data for e in ticked if e.kind == "beat"]
            assert beats
            assert all(b["session_id"] == 4 and b["patient_id"] == 9 and b["replay"] is False for b in beats)
            seqs = [int(e.data["seq"]) for e in seen if e.kind == "beat"] + [int(b["seq"]) for b in beats]
            assert len(seqs) >= 10  # 75 bpm for 12 s, less the last beats still held
            assert seqs == sorted(set(seqs))  # each beat once, in order
            assert sharded.open_sessions["outboxes"] == 0
            sharded.close_stream(4)
            assert sharded.open_sessions == {"open": 0, "outboxes": 0, "closing": 0, "traces": 0}
        finally:
            sharded.close()

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"`stale_s` must be positive"):
            ShardedAnalysisProcessor(None, workers=1, stale_s=0.0)
