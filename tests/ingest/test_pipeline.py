"""The streaming analysis: beats on /live and in storage, heart rate, quality gate, alarms, live = offline."""

from __future__ import annotations

import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect

from ingest.live_tokens import issue_live_token
from ingest.pipeline import AnalysisProcessor, PipelineConfig, ShardedAnalysisProcessor, live_agreement
from ingest.processing import LiveEvent, StoredBlock
from ingest.replay import ReplayDevice, ReplaySignal, ensure_replay_devices, load_replay_signal
from ingest.server import IngestServer
from model.inference import BeatClassifier
from sigproc.synthetic import synthetic_ecg
from storage import (
    Alarm,
    AlarmPriority,
    AlarmState,
    Beat,
    Database,
    Device,
    Patient,
    Vitals,
    create_device,
    open_recording,
)

SECRET = "test-live-secret-0123456789abcdef"
TIMEOUT_S = 40.0
START = datetime(2026, 1, 1, tzinfo=UTC)
ARRHYTHMIA = {
    "ventricular_tachycardia",
    "frequent_ectopy",
    "supraventricular_run",
    "bradycardia",
    "tachycardia",
    "early_warning",
    "atrial_fibrillation",
}


@pytest.fixture(scope="module")
def classifier() -> BeatClassifier:
    """The shipped weights, loaded once for the module."""
    return BeatClassifier.load(num_threads=1)


def recording(db: Database, uid: str) -> tuple[int, int]:
    """A patient with a device and a recording session: ``(patient_id, session_id)``."""
    with db.session() as session:
        patient = Patient(name=f"patient of {uid}")
        session.add(patient)
        session.flush()
        device = create_device(session, uid, f"token-of-{uid}", patient_id=patient.id)
        rec, _ = open_recording(
            session, device, stream_id="s1", fs=360.0, lead_names=("MLII", "V5"), gain=200.0, started_at=START
        )
        return int(patient.id), int(rec.id)


def feed(
    proc: AnalysisProcessor | ShardedAnalysisProcessor,
    signal: ReplaySignal,
    patient_id: int | None = None,
    session_id: int = 1,
    firsts: list[int] | None = None,
) -> list[LiveEvent]:
    """Events of the processor on ``signal`` sent in 0.25 s frames (those at ``firsts``), then its end."""
    frame = round(0.25 * signal.fs)
    blocks = range(0, signal.n_samples, frame) if firsts is None else firsts
    events = feed_blocks(proc, signal, list(blocks), patient_id, session_id)
    events.extend(proc.close_stream(session_id))
    return events


def feed_blocks(
    proc: AnalysisProcessor | ShardedAnalysisProcessor,
    signal: ReplaySignal,
    firsts: list[int],
    patient_id: int | None = None,
    session_id: int = 1,
) -> list[LiveEvent]:
    """Events of the processor on the 0.25 s frames of ``signal`` that start at ``firsts``."""
    events: list[LiveEvent] = []
    frame = round(0.25 * signal.fs)
    for first in firsts:
        block = signal.stored_block(
            first, frame, session_id=session_id, patient_id=patient_id, started_at=START
        )
        events.extend(proc.process(block))
    return events


def synthetic_signal(mv: np.ndarray, name: str = "synthetic") -> ReplaySignal:
    """Two identical leads of ``mv`` in ADC counts (gain 200, baseline 1024)."""
    counts = np.round(mv * 200.0 + 1024).astype(np.int16)
    return ReplaySignal(
        name,
        "synthetic",
        360.0,
        ("MLII", "V5"),
        200.0,
        1024,
        np.column_stack([counts, counts]),
        np.zeros(0, np.int64),
    )


def alarm_kinds(events: list[LiveEvent], change: str = "raised") -> set[str]:
    return {str(e.data["kind"]) for e in events if e.kind == "alarm" and e.data["change"] == change}


async def subscribe(server: IngestServer, patient: int) -> ClientConnection:
    ws = await connect(f"{server.url}/live")
    token = issue_live_token(SECRET, 1, [patient], 60)
    await ws.send(json.dumps({"type": "subscribe", "token": token, "view": "patient", "patient_id": patient}))
    assert json.loads(await ws.recv())["type"] == "subscribed"
    return ws


class TestPipelineConfig:
    def test_basic(self) -> None:
        config = PipelineConfig()
        assert (config.hr_intervals, config.hr_update_s, config.quality.window_s) == (8, 1.0, 4.0)

    def test_edge_cases(self) -> None:
        assert PipelineConfig(batch_wait_s=0.0, hr_min_intervals=8).batch_wait_s == 0.0

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"`hr_update_s` must be positive"):
            PipelineConfig(hr_update_s=0.0)
        with pytest.raises(ValueError, match=r"`batch_wait_s` must be >= 0"):
            PipelineConfig(batch_wait_s=-1.0)
        with pytest.raises(ValueError, match=r"`hr_min_intervals` must be between 1 and `hr_intervals`"):
            PipelineConfig(hr_min_intervals=9)


class TestAnalysisProcessor:
    def test_gap_and_late_frames(self, data_dir: Path, classifier: BeatClassifier) -> None:
        """After a 5 s gap the analysis restarts; a late frame filling it is stored but not analysed."""
        signal = load_replay_signal("100", data_dir=data_dir, seconds=40)
        firsts = [f for f in range(0, signal.n_samples, 90) if not 3600 <= f < 5400]
        events = feed(
            AnalysisProcessor(None, classifier), signal, firsts=[*firsts[:-40], 3600, *firsts[-40:]]
        )
        seqs = [int(e.data["seq"]) for e in events if e.kind == "beat"]
        assert seqs == sorted(seqs)
        assert not [p for p in seqs if 3600 <= p < 5400]
        assert len([p for p in seqs if p < 3600]) >= 10
        assert len([p for p in seqs if p >= 5400]) >= 25


class Clock:
    """A wall clock the test moves by hand (seconds since the epoch)."""

    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now


def block_of(signal: ReplaySignal, first: int, session_id: int, patient_id: int | None = None) -> StoredBlock:
    """The 0.25 s frame of ``signal`` from sample ``first``, as stored for ``session_id``."""
    return signal.stored_block(
        first, round(0.25 * signal.fs), session_id=session_id, patient_id=patient_id, started_at=START
    )


def beats_of(events: list[LiveEvent]) -> list[tuple[int, str, dict[str, float]]]:
    return [
        (int(e.data["seq"]), str(e.data["label"]), dict(e.data["probs"])) for e in events if e.kind == "beat"
    ]


class TestRelease:
    """Beats classified in a batch leave at once through release(), for every session."""

    def test_basic(self, classifier: BeatClassifier) -> None:
        """Two interleaved streams: release() hands out the other session's beats, the same ones."""
        signal = synthetic_signal(synthetic_ecg(20.0, 360.0, heart_rate_bpm=75, seed=5).signal)
        frame = round(0.25 * signal.fs)
        results = []
        for use_release in (False, True):
            clock = Clock()
            proc = AnalysisProcessor(None, classifier, wall_clock=clock)
            got: dict[int, list[LiveEvent]] = {1: [], 2: []}
            released = 0
            for first in range(0, signal.n_samples, frame):
                for session_id in (1, 2):
                    got[session_id].extend(proc.process(block_of(signal, first, session_id)))
                    clock.now += 0.125
                    if use_release:
                        for sid, events in proc.release().items():
                            got[sid].extend(events)
                            released += sum(e.kind == "beat" for e in events)
                        wait = proc.due_in()
                        assert wait is None or wait > 0  # nothing overdue is left behind
            for session_id in (1, 2):
                got[session_id].extend(proc.close_stream(session_id))
            assert released > 0 or not use_release
            results.append({sid: beats_of(events) for sid, events in got.items()})
        without, with_release = results
        assert len(without[1]) > 15
        assert with_release == without
        assert with_release[1] == with_release[2]

    def test_edge_cases(self, classifier: BeatClassifier) -> None:
        """Nothing waits in a fresh processor; a ready beat is due batch_wait_s after it became ready."""
        clock = Clock()
        proc = AnalysisProcessor(None, classifier, config=PipelineConfig(batch_wait_s=0.5), wall_clock=clock)
        assert proc.due_in() is None
        assert proc.release() == {}
        signal = synthetic_signal(synthetic_ecg(10.0, 360.0, heart_rate_bpm=75, seed=6).signal)
        first = 0
        while proc.due_in() is None:
            proc.process(block_of(signal, first, 1))
            first += 90
        assert proc.due_in() == pytest.approx(0.5)
        assert proc.open_sessions["waiting"] >= 1
        clock.now += 0.5
        assert any(e.kind == "beat" for e in proc.release()[1])
        assert proc.open_sessions["waiting"] == 0


class TestSessionLifetimes:
    """Ended streams release their state: many devices connecting and disconnecting leak nothing."""

    def test_basic(self, classifier: BeatClassifier) -> None:
        signal = synthetic_signal(synthetic_ecg(3.0, 360.0, heart_rate_bpm=75, seed=7).signal)
        proc = AnalysisProcessor(None, classifier)
        for session_id in range(1, 101):  # replays and streams without a patient are forgotten
            for first in range(0, signal.n_samples, 90):
                proc.process(
                    dataclasses.replace(block_of(signal, first, session_id), replay=session_id % 2 == 0)
                )
            proc.close_stream(session_id)
        assert proc.open_sessions == {"connected": 0, "parked": 0, "waiting": 0, "traces": 0}

    def test_edge_cases(self, classifier: BeatClassifier) -> None:
        """A patient's ended stream is parked (device-silent alarm) once, and taken back when it resumes."""
        signal = synthetic_signal(synthetic_ecg(3.0, 360.0, heart_rate_bpm=75, seed=8).signal)
        proc = AnalysisProcessor(None, classifier)
        for _ in range(3):  # the same five devices reconnect three times
            for session_id in range(1, 6):
                proc.process(block_of(signal, 0, session_id, patient_id=session_id))
                assert proc.open_sessions["parked"] <= 5
            for session_id in range(1, 6):
                proc.close_stream(session_id)
        assert proc.open_sessions == {"connected": 0, "parked": 5, "waiting": 0, "traces": 0}

    def test_sharded(self, classifier: BeatClassifier) -> None:
        """The parent process of the sharded processor keeps nothing per session after the streams end."""
        signal = synthetic_signal(synthetic_ecg(3.0, 360.0, heart_rate_bpm=75, seed=9).signal)
        sharded = ShardedAnalysisProcessor(None, workers=1)
        try:
            for session_id in range(1, 31):
                beats = beats_of(feed(sharded, signal, session_id=session_id))
                assert len(beats) >= 2
            assert sharded.open_sessions == {"open": 0, "outboxes": 0, "closing": 0, "traces": 0}
        finally:
            sharded.close()


class TestShardedAnalysisProcessor:
    def test_worker_process_gives_the_same_beats(self, data_dir: Path, classifier: BeatClassifier) -> None:
        """The analysis in a worker process returns what it gives in the server's thread, trace included."""
        signal = load_replay_signal("208", data_dir=data_dir, seconds=30)
        here = feed(AnalysisProcessor(None, classifier), signal)
        sharded = ShardedAnalysisProcessor(None, workers=1)
        try:
            there = feed(sharded, signal)
        finally:
            sharded.close()
        assert [e.data["seq"] for e in there if e.kind == "trace"] == [
            e.data["seq"] for e in here if e.kind == "trace"
        ]
        labels = [(e.data["seq"], e.data["label"]) for e in here if e.kind == "beat"]
        assert labels
        assert [(e.data["seq"], e.data["label"]) for e in there if e.kind == "beat"] == labels

    def test_a_patient_keeps_one_worker(self) -> None:
        """A patient's streams share a worker, where a restarted device's new session finds the ended one."""
        sharded = ShardedAnalysisProcessor(None, workers=2)
        try:
            for sid, patient, replay in ((1, 7, False), (2, 7, False), (3, 7, True), (4, None, False)):
                sharded._open[sid] = {"patient_id": patient, "session_id": sid, "replay": replay}
            assert sharded._shard(1) == sharded._shard(2) == 7 % 2
            assert (sharded._shard(3), sharded._shard(4), sharded._shard(6)) == (1, 0, 0)  # by session id
        finally:
            sharded.close()

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"`workers` must be at least 1"):
            ShardedAnalysisProcessor(None, workers=0)


class TestAnalysisServer:
    def test_replay_beats_reach_live_and_storage(
        self,
        sqlite_db: Database,
        data_dir: Path,
        classifier: BeatClassifier,
        run: Any,
        until_disconnected: Any,
    ) -> None:
        """A real replay of 60 s of record 208 (many V beats) through a server on port 0."""
        token = ensure_replay_devices(sqlite_db, ["208"])["208"]
        with sqlite_db.session() as session:
            patient = session.scalar(select(Device.patient_id).where(Device.device_uid == "replay-mitdb-208"))
        assert patient is not None
        signal = load_replay_signal("208", data_dir=data_dir, seconds=60)
        # No batching delay: at speed 0 the signal clock outruns the wall clock the batches wait on.
        processor = AnalysisProcessor(sqlite_db, classifier, config=PipelineConfig(batch_wait_s=0.0))

        async def scenario() -> list[dict[str, Any]]:
            server = IngestServer(sqlite_db, live_secret=SECRET, processor=processor)
            await server.start()
            try:
                ws = await subscribe(server, patient)
                await ReplayDevice(signal, f"{server.url}/ingest", token, speed=0).run()
                return await until_disconnected(ws)
            finally:
                await server.stop()

        messages = run(scenario())
        beats = [m for m in messages if m["type"] == "beat"]
        assert len(beats) > 80  # about 100 beats a minute in record 208
        assert all(set(b["probs"]) == {"N", "S", "V", "F", "Q"} for b in beats)
        assert all(sum(b["probs"].values()) == pytest.approx(1.0, abs=1e-3) for b in beats)
        assert all(b["t_sent"] >= b["t_arrival"] for b in beats)
        assert sum(b["label"] == "V" for b in beats) > 20
        with sqlite_db.session() as session:
            stored = session.scalars(select(Beat).order_by(Beat.r_peak_seq)).all()
            rates = session.scalars(select(Vitals.hr_ecg).where(Vitals.hr_ecg.is_not(None))).all()
            alarms = session.scalars(select(Alarm)).all()
        assert [(b.r_peak_seq, b.label) for b in stored] == [(b["seq"], b["label"]) for b in beats]
        assert len(rates) >= 40
        assert all(hr is not None and 40 < hr < 200 for hr in rates)
        live_alarms = {m["kind"] for m in messages if m["type"] == "alarm" and m["change"] == "raised"}
        assert "frequent_ectopy" in live_alarms
        assert {a.kind for a in alarms} == live_alarms
        assert [m["type"] for m in messages].count("heart_rate") == len(rates)


class TestAlarms:
    def test_asystole_is_stored_and_published(self, sqlite_db: Database, classifier: BeatClassifier) -> None:
        """20 s of sinus rhythm, then a flat line: asystole (high) is raised, stored, and kept once."""
        patient, session_id = recording(sqlite_db, "asystole")
        ecg = synthetic_ecg(20.0, 360.0, heart_rate_bpm=75, seed=3).signal
        mv = np.concatenate([ecg, np.full(15 * 360, ecg[-1])])
        events = feed(AnalysisProcessor(sqlite_db, classifier), synthetic_signal(mv), patient, session_id)
        raised = [e.data for e in events if e.kind == "alarm" and e.data["change"] == "raised"]
        assert [a["kind"] for a in raised].count("asystole") == 1
        assert not alarm_kinds(events) & ARRHYTHMIA
        with sqlite_db.session() as session:
            rows = session.scalars(select(Alarm).where(Alarm.patient_id == patient)).all()
        asystole = next(r for r in rows if r.kind == "asystole")
        assert asystole.priority == "high"
        assert asystole.id == next(a["alarm_id"] for a in raised if a["kind"] == "asystole")
        assert len(rows) == len(raised)

    def test_replay_end_ends_its_alarms(
        self, sqlite_db: Database, data_dir: Path, classifier: BeatClassifier
    ) -> None:
        """A replay's alarms end with its data: resolved, or latched for acknowledgement if high."""
        patient, session_id = recording(sqlite_db, "replay-end")
        signal = load_replay_signal("208", data_dir=data_dir, seconds=60)
        clock = Clock()
        proc = AnalysisProcessor(sqlite_db, classifier, wall_clock=clock)
        events: list[LiveEvent] = []
        for first in range(0, signal.n_samples, 90):  # in real time: beats classified as they come
            block = signal.stored_block(
                first, 90, session_id=session_id, patient_id=patient, started_at=START
            )
            events.extend(proc.process(dataclasses.replace(block, replay=True)))
            clock.now += 0.25
        before = alarm_kinds(events)
        assert "frequent_ectopy" in before
        closing = list(proc.close_stream(session_id))
        assert "frequent_ectopy" in alarm_kinds(closing, "resolved")
        assert proc.open_sessions["parked"] == 0
        with sqlite_db.session() as session:
            rows = session.scalars(select(Alarm).where(Alarm.patient_id == patient)).all()
        assert {r.kind for r in rows} == before
        for row in rows:
            assert row.ended_at is not None
            latched = row.priority is AlarmPriority.HIGH and row.state is AlarmState.ACTIVE
            assert row.state is AlarmState.RESOLVED or latched

    def test_no_false_asystole_while_beats_wait(self, data_dir: Path, classifier: BeatClassifier) -> None:
        """Beats found but not yet classified are no pause: a backlog sent at once raises no asystole.

        A device that reconnects sends its buffered samples in a burst; the
        detector runs far ahead of the batches. The wall clock is frozen
        here, so no batch falls due before the stream ends.
        """
        signal = load_replay_signal("100", data_dir=data_dir, seconds=30)
        proc = AnalysisProcessor(None, classifier, wall_clock=lambda: 0.0)
        events = feed(proc, signal)
        assert len([e for e in events if e.kind == "beat"]) > 30
        assert "asystole" not in alarm_kinds(events)

    def test_lost_batch_does_not_silence_asystole(
        self, classifier: BeatClassifier, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Beats of a batch that failed stop holding the asystole check back once 10 s overdue."""
        ecg = synthetic_ecg(20.0, 360.0, heart_rate_bpm=75, seed=3).signal
        signal = synthetic_signal(np.concatenate([ecg, np.full(15 * 360, ecg[-1])]))
        clock = [0.0]
        proc = AnalysisProcessor(None, classifier, wall_clock=lambda: clock[0])
        frame = 90
        firsts = list(range(0, signal.n_samples, frame))
        events = feed_blocks(proc, signal, firsts[:-2])  # the clock stands still: nothing classified yet
        assert "asystole" not in alarm_kinds(events)

        def fail(*_: object) -> None:
            raise RuntimeError("the batch failed")

        monkeypatch.setattr(proc, "_classify_kept", fail)  # a failure past the classifier's own fallback
        clock[0] = 11.0
        with pytest.raises(RuntimeError, match="the batch failed"):
            feed_blocks(proc, signal, firsts[-2:-1])  # the batch falls due and is lost
        monkeypatch.undo()
        clock[0] = 12.0
        assert "asystole" in alarm_kinds(feed_blocks(proc, signal, firsts[-1:]))

    def test_quality_gate_suppresses_arrhythmia_alarms(
        self, sqlite_db: Database, data_dir: Path, classifier: BeatClassifier
    ) -> None:
        """Record 208 raises ectopy alarms; buried in noise on both leads it raises none, but poor_signal.

        (Asystole is not gated by poor quality: the engine would rather warn
        falsely than miss one.)
        """
        patient, session_id = recording(sqlite_db, "gate")
        clean = load_replay_signal("208", data_dir=data_dir, seconds=60)
        assert "frequent_ectopy" in alarm_kinds(feed(AnalysisProcessor(None, classifier), clean))
        rng = np.random.default_rng(0)
        noise = rng.normal(0.0, 1.5 * clean.gain, clean.samples.shape)
        noisy = dataclasses.replace(clean, samples=np.round(clean.samples + noise).astype(np.int16))
        events = feed(AnalysisProcessor(sqlite_db, classifier), noisy, patient, session_id)
        assert "poor_signal" in alarm_kinds(events)
        assert not alarm_kinds(events) & ARRHYTHMIA
        beats = [e.data for e in events if e.kind == "beat"]
        assert beats
        assert not any(b["quality_ok"] for b in beats)
        quality = [e.data for e in events if e.kind == "quality"]
        assert quality
        assert all(not q["readable"] and q["condition"] == "poor_signal" for q in quality)
        with sqlite_db.session() as session:
            kinds = set(session.scalars(select(Alarm.kind).where(Alarm.patient_id == patient)).all())
        assert kinds == alarm_kinds(events)


class TestClassifierFailure:
    """A classifier that fails loses no beat, and costs the other streams of its batch nothing."""

    @staticmethod
    def interleaved(
        classifier: BeatClassifier, signal: ReplaySignal
    ) -> tuple[AnalysisProcessor, dict[int, list[LiveEvent]]]:
        """Two sessions of ``signal``, their frames interleaved in real time, classified in shared batches."""
        clock = Clock()
        proc = AnalysisProcessor(None, classifier, wall_clock=clock)
        got: dict[int, list[LiveEvent]] = {1: [], 2: []}
        for first in range(0, signal.n_samples, 90):
            for session_id in (1, 2):
                got[session_id].extend(proc.process(block_of(signal, first, session_id)))
                clock.now += 0.125
        for session_id in (1, 2):
            got[session_id].extend(proc.close_stream(session_id))
        return proc, got

    def test_basic(self, classifier: BeatClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
        """Every batch holding a beat of session 2 fails: session 1 is classified as if alone, 2 kept as Q."""
        import ingest.pipeline

        signal = synthetic_signal(synthetic_ecg(20.0, 360.0, heart_rate_bpm=75, seed=11).signal)
        _, reference = self.interleaved(classifier, signal)
        real = ingest.pipeline._classify

        def fail_on_session_2(clf: BeatClassifier, ready: list[Any]) -> list[Any]:
            if any(item.session.session_id == 2 for item in ready):
                for item in ready:  # the failure strikes half-way: the contexts have moved on
                    if item.session.context:
                        item.session.context.append(item.session.context[-1] * 7.0)
                raise RuntimeError("the network failed on session 2")
            return real(clf, ready)

        monkeypatch.setattr(ingest.pipeline, "_classify", fail_on_session_2)
        proc, got = self.interleaved(classifier, signal)
        assert len(beats_of(reference[1])) > 15
        assert beats_of(got[1]) == beats_of(reference[1])
        kept = [e.data for e in got[2] if e.kind == "beat"]
        assert [b["seq"] for b in kept] == [seq for seq, _, _ in beats_of(reference[2])]
        assert {b["label"] for b in kept} == {"Q"}
        assert all(b["probs"]["Q"] == 1.0 and b["p_abnormal"] is None and not b["early_alarm"] for b in kept)
        assert proc.totals["unclassified"] == len(kept)

    def test_edge_cases(self, classifier: BeatClassifier, monkeypatch: pytest.MonkeyPatch) -> None:
        """A failure of one batch only (half-way through): classified again, nothing differs."""
        import ingest.pipeline

        signal = synthetic_signal(synthetic_ecg(20.0, 360.0, heart_rate_bpm=75, seed=12).signal)
        _, reference = self.interleaved(classifier, signal)
        real = ingest.pipeline._classify
        calls = []

        def fail_once(clf: BeatClassifier, ready: list[Any]) -> list[Any]:
            calls.append(len(ready))
            out = real(clf, ready)  # contexts and AF monitors moved on, then the batch fails
            if len(calls) == 3:
                raise RuntimeError("a passing failure")
            return out

        monkeypatch.setattr(ingest.pipeline, "_classify", fail_once)
        proc, got = self.interleaved(classifier, signal)
        assert len(calls) > 4
        assert {sid: beats_of(events) for sid, events in got.items()} == {
            sid: beats_of(events) for sid, events in reference.items()
        }
        assert proc.totals["unclassified"] == 0


class TestAtrialFibrillation:
    def test_af_alarm_and_no_s_calls(self, data_dir: Path, classifier: BeatClassifier) -> None:
        """Record 203 (atrial fibrillation throughout): AF alarm, and no beat called S once AF is found."""
        assert classifier.af_detector is not None  # the shipped weights carry the AF gate
        config = PipelineConfig(batch_wait_s=0.0)
        events = feed(
            AnalysisProcessor(None, classifier, config=config),
            load_replay_signal("203", data_dir=data_dir, seconds=120),
        )
        beats = [e.data for e in events if e.kind == "beat"]
        assert "atrial_fibrillation" in alarm_kinds(events)
        first_af = next(i for i, b in enumerate(beats) if b["af"])
        assert first_af < 40  # 16 clean intervals of evidence, and the V beats left out
        assert sum(b["af"] for b in beats[first_af:]) > 0.9 * len(beats[first_af:])
        assert not any(b["label"] == "S" for b in beats if b["af"])
        assert all(b["probs"]["S"] == 0.0 for b in beats if b["af"])

    def test_ventricular_bigeminy_is_not_af(self, data_dir: Path, classifier: BeatClassifier) -> None:
        """Record 119 (sinus rhythm, ventricular bigeminy and trigeminy): irregular, not AF."""
        config = PipelineConfig(batch_wait_s=0.0)
        events = feed(
            AnalysisProcessor(None, classifier, config=config),
            load_replay_signal("119", data_dir=data_dir, seconds=120),
        )
        beats = [e.data for e in events if e.kind == "beat"]
        assert sum(b["label"] == "V" for b in beats) > 20
        assert not any(b["af"] for b in beats)
        assert "atrial_fibrillation" not in alarm_kinds(events)


class TestLiveAgreement:
    @pytest.mark.parametrize("record", ["119", "208"])
    def test_live_matches_offline(self, data_dir: Path, classifier: BeatClassifier, record: str) -> None:
        """Two minutes streamed in device frames give the offline beats and classes (>= 99 %)."""
        agreement = live_agreement(load_replay_signal(record, data_dir=data_dir, seconds=120), classifier)
        assert agreement.offline > 100
        assert agreement.matched == agreement.offline == agreement.live
        assert agreement.fraction >= 0.99
