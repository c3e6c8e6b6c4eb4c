"""The ingest server, end to end: real servers on port 0, real replay devices, real databases.

What is proven here: every sample a replay device sends is stored exactly
once, bit for bit (compared with the record's own ADC values), even when the
server is killed mid-stream and another one takes over the database; bad
frames get the documented error and close code, leave nothing half-written,
and do not disturb another device on the same server; ``/live`` refuses bad
tokens and patients outside a token's scope; ``/health`` answers JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import wfdb
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect

from ingest.fanout import RedisFanOut, Subscription, patient_topic
from ingest.live_tokens import LiveClaims, issue_live_token, verify_live_token
from ingest.processing import LiveEvent, StoredBlock, VitalsReading
from ingest.protocol import (
    DEFAULT_LIMITS,
    Hello,
    ProtocolLimits,
    Samples,
    encode_binary_samples,
    encode_text_frame,
)
from ingest.protocol import (
    Vitals as VitalsFrame,
)
from ingest.replay import ReplayDevice, ReplayError, ReplayResult, ensure_replay_devices, load_replay_signal
from ingest.server import (
    IngestServer,
    LiveForbiddenError,
    LiveRequest,
    LiveRequestError,
    MalformedLiveRequestError,
    ServeOptions,
    live_topics,
    parse_live_request,
    serve,
)
from sigproc.filters import StreamingFilter, design_sos
from storage import (
    Database,
    Device,
    Patient,
    RecordingSession,
    SignalChunk,
    Vitals,
    create_device,
    find_gaps,
    insert_chunk,
    load_block,
    utcnow,
)

SECRET = "test-live-secret-0123456789abcdef"
TIMEOUT_S = 20.0
FRAME = 90  # samples per frame of the raw test clients (0.25 s at 360 Hz)


def register(db: Database, uid: str, *, revoked: bool = False, patient: bool = False) -> str:
    """Register a raw test device; its token."""
    token = f"token-of-{uid}"
    with db.session() as session:
        patient_id = None
        if patient:
            row = Patient(name=f"patient of {uid}")
            session.add(row)
            session.flush()
            patient_id = row.id
        device = create_device(session, uid, token, patient_id=patient_id)
        if revoked:
            device.revoked_at = utcnow()
    return token


def hello_text(uid: str, token: str, *, stream: str = "s1", fs: float = 360.0, leads: int = 1) -> str:
    names = ("MLII", "V5", "V1")[:leads]
    return encode_text_frame(
        Hello(token=token, device_id=uid, stream_id=stream, fs=fs, leads=names, gain=200.0, baseline=1024)
    )


def frame(seq: int, n: int = FRAME, leads: int = 1) -> Samples:
    """A deterministic frame: sample k of the stream is ``k % 2000`` on every lead."""
    values = (np.arange(seq, seq + n) % 2000).astype(np.int16)
    return Samples(seq=seq, samples=np.repeat(values[:, None], leads, axis=1))


async def open_device(server: IngestServer, hello: str) -> tuple[ClientConnection, dict[str, Any]]:
    """Connect a raw device and send its hello; the connection and the server's first answer."""
    ws = await connect(f"{server.url}/ingest", compression=None)
    await ws.send(hello)
    return ws, json.loads(await ws.recv())


async def until_closed(ws: ClientConnection) -> list[dict[str, Any]]:
    """Every frame the server sends until it closes."""
    frames = []
    with contextlib.suppress(Exception):  # ConnectionClosed, whichever code
        async for message in ws:
            frames.append(json.loads(message))
    await ws.wait_closed()
    return frames


def stored(db: Database, uid: str) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Chunks ``(first_seq, n)`` of a device's streams, and their samples in seq order."""
    with db.session() as session:
        chunks = session.scalars(
            select(SignalChunk)
            .join(RecordingSession, SignalChunk.session_id == RecordingSession.id)
            .join(Device, RecordingSession.device_id == Device.id)
            .where(Device.device_uid == uid)
            .order_by(SignalChunk.first_seq)
        ).all()
        keys = [(c.first_seq, c.n_samples) for c in chunks]
        blocks = [load_block(c).samples for c in chunks]
    return keys, np.concatenate(blocks) if blocks else np.zeros((0, 0), np.int16)


def assert_stored_exactly(db: Database, uid: str, expected: np.ndarray) -> None:
    """Stored once, contiguous from 0, and equal to ``expected`` sample for sample."""
    keys, samples = stored(db, uid)
    starts = [first for first, _ in keys]
    assert len(starts) == len(set(starts))
    assert [first for first, _ in keys] == list(np.cumsum([0] + [n for _, n in keys[:-1]]))
    assert sum(n for _, n in keys) == expected.shape[0]
    np.testing.assert_array_equal(samples, expected)


def record_adc(data_dir: Path, record: str, seconds: float) -> np.ndarray:
    """The record's own ADC values, read with wfdb, independently of the replay code."""
    n = round(seconds * 360)
    return np.asarray(wfdb.rdrecord(str(data_dir / "mitdb" / record), sampto=n, physical=False).d_signal)


def patient_of(db: Database, uid: str) -> int:
    with db.session() as session:
        patient = session.scalar(select(Device.patient_id).where(Device.device_uid == uid))
    assert patient is not None
    return int(patient)


def _session_of(db: Database) -> int:
    """The id of the only recording session."""
    with db.session() as session:
        recording = session.scalar(select(RecordingSession))
        assert recording is not None
        return int(recording.id)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it holds."""
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.005)


async def trace_reaches(subscription: Subscription, seq: int) -> None:
    """Wait until the display trace has passed sample ``seq`` (stored and processed)."""
    async for message in subscription:
        data = message.data()
        if data["type"] == "trace" and data["seq"] + len(data["values"][0]) >= seq:
            return


# /live requests (pure) ------------------------------------------------------------------


class TestParseLiveRequest:
    def test_basic(self) -> None:
        request = parse_live_request(
            '{"type": "subscribe", "token": "t", "view": "patient", "patient_id": 4}'
        )
        assert request == LiveRequest(token="t", view="patient", patient_ids=(4,))

    def test_edge_cases(self) -> None:
        central = parse_live_request('{"type": "subscribe", "token": "t", "view": "central"}')
        assert central.patient_ids == ()
        both = parse_live_request('{"type": "subscribe", "patient_id": 2, "patient_ids": [3, 2]}')
        assert (both.token, both.view, both.patient_ids) == ("", "patient", (2, 3))

    @pytest.mark.parametrize(
        ("message", "error", "match"),
        [
            (b"{}", MalformedLiveRequestError, "JSON text"),
            ("{nope", MalformedLiveRequestError, "invalid JSON"),
            ("[1]", MalformedLiveRequestError, "JSON object"),
            ('{"type": "hello"}', LiveRequestError, "must be a subscribe"),
            ('{"type": "subscribe", "token": 5, "patient_id": 1}', MalformedLiveRequestError, "`token`"),
            ('{"type": "subscribe", "view": "all"}', MalformedLiveRequestError, "`view`"),
            ('{"type": "subscribe", "patient_id": "1"}', MalformedLiveRequestError, "non-negative"),
            ('{"type": "subscribe", "view": "patient"}', MalformedLiveRequestError, "needs `patient_id`"),
        ],
    )
    def test_exceptions(self, message: str | bytes, error: type[Exception], match: str) -> None:
        with pytest.raises(error, match=match):
            parse_live_request(message)


class TestLiveTopics:
    def test_basic(self) -> None:
        token = issue_live_token(SECRET, 1, [1, 2], now=0.0)
        claims = _claims(token)
        assert live_topics(LiveRequest(token, "patient", (2,)), claims) == ["patient/2"]
        assert live_topics(LiveRequest(token, "central", ()), claims) == ["central/1", "central/2"]

    def test_edge_cases(self) -> None:
        claims = _claims(issue_live_token(SECRET, 1, [1, 2, 3], now=0.0))
        assert live_topics(LiveRequest("t", "central", (3,)), claims) == ["central/3"]

    def test_exceptions(self) -> None:
        claims = _claims(issue_live_token(SECRET, 1, [1], now=0.0))
        with pytest.raises(LiveForbiddenError, match=r"\[2\] are outside"):
            live_topics(LiveRequest("t", "patient", (1, 2)), claims)
        with pytest.raises(LiveForbiddenError, match="allows no patients"):
            live_topics(LiveRequest("t", "central", ()), _claims(issue_live_token(SECRET, 1, [], now=0.0)))


def _claims(token: str) -> LiveClaims:
    return verify_live_token(SECRET, token, 1.0)


# Ingest ---------------------------------------------------------------------------------


class TestIngest:
    def test_replay_devices_store_every_sample(
        self, any_db: Database, data_dir: Path, run: Any, running: Any
    ) -> None:
        """Two replay devices (binary and JSON frames) store their records bit for bit."""
        seconds = 20.0
        tokens = ensure_replay_devices(any_db, ["100", "208"])

        async def scenario() -> list[Any]:
            async with running(any_db) as server:
                devices = [
                    ReplayDevice(
                        load_replay_signal(r, data_dir=data_dir, seconds=seconds),
                        f"{server.url}/ingest",
                        tokens[r],
                        speed=0,
                        binary=(r == "100"),
                        vitals_every_s=5,
                    )
                    for r in ("100", "208")
                ]
                return list(await asyncio.gather(*(d.run() for d in devices)))

        results = run(scenario())
        for record, result in zip(("100", "208"), results, strict=True):
            assert result.acked
            assert result.frames_resent == 0
            assert result.close_codes == []
            assert_stored_exactly(any_db, f"replay-mitdb-{record}", record_adc(data_dir, record, seconds))
        with any_db.session() as session:
            recordings = session.scalars(select(RecordingSession)).all()
            assert {r.firmware for r in recordings} == {"replay:mitdb/100", "replay:mitdb/208"}
            assert all(find_gaps(session, r.id) == [] for r in recordings)
            vitals = session.scalars(select(Vitals)).all()
            assert len(vitals) >= 4
            assert all(v.spo2 is not None and v.temperature is not None for v in vitals)

    def test_replay_device_gives_up_on_a_refused_token(
        self, sqlite_db: Database, data_dir: Path, run: Any, running: Any
    ) -> None:
        signal = load_replay_signal("100", data_dir=data_dir, seconds=1)

        async def scenario() -> None:
            async with running(sqlite_db) as server:
                await ReplayDevice(signal, f"{server.url}/ingest", "not-a-token", speed=0).run()

        with pytest.raises(ReplayError, match="closed with 4001; not retrying"):
            run(scenario())

    def test_sequencing(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """Gaps are acknowledged around, late frames fill them, duplicates are re-acknowledged."""
        token = register(sqlite_db, "seq-1")

        async def scenario() -> list[dict[str, Any]]:
            async with running(sqlite_db) as server:
                ws, first = await open_device(server, hello_text("seq-1", token))
                acks = [first]
                for seq in (0, 180, 90, 90, 360):  # a gap, its late fill, a duplicate, a new gap
                    await ws.send(encode_binary_samples(frame(seq)))
                    acks.append(json.loads(await ws.recv()))
                await ws.close()
                again, resumed = await open_device(server, hello_text("seq-1", token))
                await again.close()
                return [*acks, resumed]

        acks = run(scenario())
        assert [(a["type"], a["upto"], a["ranges"]) for a in acks] == [
            ("ack", 0, []),  # the first answer: nothing stored yet
            ("ack", 90, []),
            ("ack", 90, [[180, 270]]),  # beyond a gap: acknowledged by range
            ("ack", 270, []),  # the late frame fills the gap
            ("ack", 270, []),  # the duplicate is acknowledged again
            ("ack", 270, [[360, 450]]),
            ("ack", 270, [[360, 450]]),  # after a reconnect: what is stored
        ]
        keys, samples = stored(sqlite_db, "seq-1")
        assert keys == [(0, 90), (90, 90), (180, 90), (360, 90)]
        np.testing.assert_array_equal(samples[:, 0], np.r_[np.arange(270), np.arange(360, 450)] % 2000)
        with sqlite_db.session() as session:
            recording = session.scalar(select(RecordingSession))
            assert recording is not None
            assert find_gaps(session, recording.id) == [(270, 360)]

    def test_bad_frames_are_refused_without_disturbing_others(
        self, sqlite_db: Database, data_dir: Path, run: Any, running: Any
    ) -> None:
        """Each bad input gets its error frame and close code; a replay device streams on meanwhile."""
        token = ensure_replay_devices(sqlite_db, ["208"])["208"]
        seconds = 10.0

        async def scenario() -> tuple[Any, list[BadCaseOutcome]]:
            async with running(sqlite_db) as server:
                device = ReplayDevice(
                    load_replay_signal("208", data_dir=data_dir, seconds=seconds),
                    f"{server.url}/ingest",
                    token,
                    speed=10,
                )
                replay = asyncio.create_task(device.run())
                outcomes = [await case.play(sqlite_db, server) for case in BAD_CASES]
                return await replay, outcomes

        result, outcomes = run(scenario())
        for case, outcome in zip(BAD_CASES, outcomes, strict=True):
            assert outcome.error is not None, case.name
            assert (outcome.error["code"], outcome.close_code) == (case.code, case.code), case.name
            assert case.reason in outcome.error["reason"], case.name
            keys, _ = stored(sqlite_db, case.uid)
            assert keys == [(seq, FRAME) for seq in case.stored], case.name
        assert result.acked
        assert result.close_codes == []
        assert result.frames_resent == 0
        assert_stored_exactly(sqlite_db, "replay-mitdb-208", record_adc(data_dir, "208", seconds))

    def test_rate_limit(self, sqlite_db: Database, run: Any, running: Any) -> None:
        token = register(sqlite_db, "fast-1")
        limits = ProtocolLimits(frames_per_second=1.0, burst_frames=5)

        async def scenario() -> list[dict[str, Any]]:
            async with running(sqlite_db, limits=limits) as server:
                ws, _ = await open_device(server, hello_text("fast-1", token))  # the hello takes a token
                for seq in range(0, 6 * FRAME, FRAME):
                    await ws.send(encode_binary_samples(frame(seq)))
                frames = await until_closed(ws)
                assert ws.close_code == 4002
                return frames

        frames = run(scenario())
        assert frames[-1]["type"] == "error"
        assert frames[-1]["code"] == 4002
        keys, _ = stored(sqlite_db, "fast-1")
        assert keys == [(seq, FRAME) for seq in range(0, 4 * FRAME, FRAME)]
        assert max(f["upto"] for f in frames if f["type"] == "ack") == 4 * FRAME

    def test_newer_connection_replaces_older(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """One connection per device: the older one gets 4003, the newer resumes the stream."""
        token = register(sqlite_db, "twice-1")

        async def scenario() -> tuple[list[dict[str, Any]], int | None, dict[str, Any]]:
            async with running(sqlite_db) as server:
                old, _ = await open_device(server, hello_text("twice-1", token))
                await old.send(encode_binary_samples(frame(0)))
                await old.recv()
                new, first = await open_device(server, hello_text("twice-1", token))
                frames = await until_closed(old)
                await new.close()
                return frames, old.close_code, first

        frames, code, first = run(scenario())
        assert (frames[-1]["code"], code) == (4003, 4003)
        assert "newer connection" in frames[-1]["reason"]
        assert first["upto"] == FRAME

    def test_storage_unavailable_at_hello(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """A database that does not answer: error frame and 1011, so that the device retries."""
        down = Database()
        down.init("postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")

        async def scenario() -> tuple[list[dict[str, Any]], int | None]:
            async with running(down, storage_workers=1) as server:
                ws, error = await open_device(server, hello_text("any-1", "token"))
                await until_closed(ws)
                return [error], ws.close_code

        try:
            (error,), code = run(scenario())
        finally:
            down.dispose()
        assert (error["type"], error["code"], code) == ("error", 1011, 1011)
        assert "storage is unavailable" in error["reason"]

    def test_processor_failure_does_not_stop_ingest(
        self, sqlite_db: Database, run: Any, running: Any
    ) -> None:
        token = register(sqlite_db, "proc-1", patient=True)

        async def scenario() -> dict[str, Any]:
            async with running(sqlite_db, processor=FailingProcessor()) as server:
                ws, _ = await open_device(server, hello_text("proc-1", token))
                for seq in (0, FRAME):
                    await ws.send(encode_binary_samples(frame(seq)))
                    assert json.loads(await ws.recv())["upto"] == seq + FRAME
                health = server.health()
                await ws.close()
                return health

        health = run(scenario())
        assert stored(sqlite_db, "proc-1")[0] == [(0, FRAME), (FRAME, FRAME)]
        assert health["streams"][0]["frames_stored"] == 2

    def test_operator_log(
        self, sqlite_db: Database, run: Any, running: Any, caplog: pytest.LogCaptureFixture
    ) -> None:
        """The server log says who connected, resumed and left, and every alarm change."""
        token = register(sqlite_db, "log-1", patient=True)

        async def scenario() -> None:
            async with running(sqlite_db, processor=AlarmingProcessor()) as server:
                for seq in (0, FRAME):  # a stream, then its resumption
                    ws, _ = await open_device(server, hello_text("log-1", token))
                    await ws.send(encode_binary_samples(frame(seq)))
                    await ws.recv()
                    await ws.close()
                    await wait_until(lambda: not server.health()["streams"])

        with caplog.at_level("INFO", logger="ingest.server"):
            run(scenario())
        lines = [r.getMessage() for r in caplog.records if r.name == "ingest.server"]
        connected = [line for line in lines if line.startswith("device log-1 connected")]
        assert len(connected) == 2
        assert connected[0].endswith(", new")
        assert connected[1].endswith(f"resuming after sample {FRAME}")
        left = [line for line in lines if line.startswith("device log-1 disconnected")]
        assert len(left) == 2
        assert all(line.endswith("1 frames received, closed") for line in left)
        patient = patient_of(sqlite_db, "log-1")
        alarm = f"alarm 7 raised: asystole (high priority, active), patient {patient}"
        assert [line for line in lines if line.startswith("alarm ")] == [
            f"{alarm}, session {_session_of(sqlite_db)}: no beat for 4.2 s"
        ]

    def test_streams_share_storage_rounds(self, any_db: Database, run: Any, running: Any) -> None:
        """Batches of several streams go in one round; bad data fails only its own stream."""
        uids = ("round-a", "round-b", "round-c", "round-d")
        tokens = {uid: register(any_db, uid) for uid in uids}
        gate = threading.Event()

        async def one_round(server: IngestServer, sends: list[tuple[ClientConnection, bytes]]) -> None:
            """Send while the first frame's round waits at the gate, so that the others share the next."""
            gate.clear()
            rounds = server.totals["storage_rounds"]
            blocker = asyncio.get_running_loop().run_in_executor(server._storage_pool, gate.wait, 10.0)
            (ws, message), *others = sends
            await ws.send(message)
            await wait_until(lambda: server.totals["storage_rounds"] == rounds + 1)
            for ws, message in others:
                await ws.send(message)
            await wait_until(lambda: len(server._store_requests) == len(others))
            gate.set()
            await blocker

        async def scenario() -> tuple[list[int], list[dict[str, Any]], list[dict[str, Any]], int | None]:
            async with running(any_db, storage_workers=1) as server:
                a, b, c, d = [(await open_device(server, hello_text(uid, tokens[uid])))[0] for uid in uids]
                await a.send(encode_binary_samples(frame(0)))
                assert json.loads(await a.recv())["upto"] == FRAME
                with any_db.session() as session:  # another writer puts other samples where round-a goes next
                    recording = session.scalar(
                        select(RecordingSession).join(Device).where(Device.device_uid == "round-a")
                    )
                    assert recording is not None
                    insert_chunk(session, recording, frame(FRAME).samples + 1, FRAME)
                rounds = [server.totals["storage_rounds"]]
                # d's frame takes the first round; a's (refused), b's and c's share the second one.
                first = [(d, frame(0)), (a, frame(FRAME)), (b, frame(0)), (c, frame(0))]
                await one_round(server, [(ws, encode_binary_samples(f)) for ws, f in first])
                refused = await until_closed(a)
                acks = [json.loads(await ws.recv()) for ws in (b, c, d)]
                rounds.append(server.totals["storage_rounds"])
                second = [(d, frame(FRAME)), (b, frame(FRAME)), (c, frame(FRAME))]
                await one_round(server, [(ws, encode_binary_samples(f)) for ws, f in second])
                acks += [json.loads(await ws.recv()) for ws in (b, c, d)]
                rounds.append(server.totals["storage_rounds"])
                for ws in (b, c, d):
                    await ws.close()
                return [y - x for x, y in itertools.pairwise(rounds)], refused, acks, a.close_code

        rounds, refused, acks, code = run(scenario())
        assert rounds == [2, 2]
        assert (refused[-1]["type"], refused[-1]["code"], code) == ("error", 1011, 1011)
        assert "storage failed" in refused[-1]["reason"]
        assert [ack["upto"] for ack in acks] == [FRAME] * 3 + [2 * FRAME] * 3
        keys, samples = stored(any_db, "round-a")
        assert keys == [(0, FRAME), (FRAME, FRAME)]
        np.testing.assert_array_equal(
            samples[FRAME:], frame(FRAME).samples + 1
        )  # the other writer's, untouched
        for uid in uids[1:]:
            assert_stored_exactly(any_db, uid, np.concatenate([frame(0).samples, frame(FRAME).samples]))

    def test_recording_end(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """A closed stream's session ends at its last stored sample; a reconnect reopens it."""
        token = register(sqlite_db, "end-1")

        def times() -> tuple[datetime, datetime | None]:
            with sqlite_db.session() as session:
                recording = session.scalar(select(RecordingSession))
                assert recording is not None
                return recording.started_at, recording.ended_at

        async def send(ws: ClientConnection, seqs: Sequence[int]) -> None:
            for seq in seqs:
                await ws.send(encode_binary_samples(frame(seq)))
                await ws.recv()
            await ws.close()

        async def scenario() -> list[tuple[datetime, datetime | None]]:
            async with running(sqlite_db) as server:
                ws, _ = await open_device(server, hello_text("end-1", token))
                await send(ws, (0, FRAME))
                await wait_until(lambda: times()[1] is not None)
                first = times()
                again, _ = await open_device(server, hello_text("end-1", token))
                during = times()
                await send(again, (3 * FRAME,))  # after a gap
                await wait_until(lambda: times()[1] not in (None, first[1]))
                return [first, during, times()]

        first, during, last = run(scenario())
        start = first[0]
        assert first[1] == start + timedelta(seconds=2 * FRAME / 360.0)
        assert during == (start, None)
        assert last == (start, start + timedelta(seconds=4 * FRAME / 360.0))

    def test_device_status(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """Battery and RSSI are stored when reported, ``last_seen_at`` as the device streams."""
        token = register(sqlite_db, "status-1")
        before = utcnow()

        async def scenario() -> None:
            async with running(sqlite_db) as server:
                ws, _ = await open_device(server, hello_text("status-1", token))
                await ws.send(encode_text_frame(VitalsFrame(battery=55.0, rssi=-70)))
                await ws.send(encode_binary_samples(frame(0)))
                await ws.recv()
                await ws.send(encode_text_frame(VitalsFrame(rssi=-75)))
                await ws.send(encode_binary_samples(frame(FRAME)))
                await ws.recv()
                await ws.close()

        run(scenario())
        with sqlite_db.session() as session:
            device = session.scalar(select(Device).where(Device.device_uid == "status-1"))
            assert device is not None
            assert (device.battery, device.rssi) == (55.0, -75)
            assert device.last_seen_at is not None
            assert device.last_seen_at >= before


@dataclass
class BadCaseOutcome:
    error: dict[str, Any] | None
    close_code: int | None


@dataclass
class BadCase:
    """A device that breaks the protocol: what it sends, and what the server must answer."""

    name: str
    messages: Sequence[str | bytes]
    code: int
    reason: str
    stored: tuple[int, ...] = ()
    hello: Callable[[str, str], str] | None = hello_text
    revoked: bool = False
    token_ok: bool = True
    resume_first: bool = False

    @property
    def uid(self) -> str:
        return f"bad-{self.name}"

    async def play(self, db: Database, server: IngestServer) -> BadCaseOutcome:
        """Register the device, send the messages, collect the error frame and close code."""
        token = register(db, self.uid, revoked=self.revoked)
        if self.resume_first:  # a stream that exists, resumed below with another signal
            ws, _ = await open_device(server, hello_text(self.uid, token))
            await ws.close()
        ws = await connect(f"{server.url}/ingest", compression=None, max_size=None)
        hello = (
            [] if self.hello is None else [self.hello(self.uid, token if self.token_ok else "not-a-token")]
        )
        for message in [*hello, *self.messages]:
            with contextlib.suppress(Exception):  # the server may already have closed
                await ws.send(message)
        frames = await until_closed(ws)
        errors = [f for f in frames if f.get("type") == "error"]
        return BadCaseOutcome(errors[-1] if errors else None, ws.close_code)


def _json(obj: object) -> str:
    return json.dumps(obj)


_GOOD = encode_binary_samples(frame(0))
BAD_CASES: list[BadCase] = [
    BadCase("json", ["{not json"], 1007, "invalid JSON"),
    BadCase("nan", ['{"type": "samples", "seq": 0, "samples": [NaN]}'], 1007, "NaN"),
    BadCase(
        "types", [_json({"type": "samples", "seq": "0", "samples": [1]})], 1007, "`seq` must be an integer"
    ),
    BadCase(
        "floats", [_GOOD, _json({"type": "samples", "seq": 90, "samples": [1.5]})], 1007, "integers", (0,)
    ),
    BadCase("vitals", [_json({"type": "vitals", "spo2": 101})], 1007, "`spo2`"),
    BadCase("leads", [_GOOD, encode_binary_samples(frame(90, leads=2))], 1008, "2 leads", (0,)),
    BadCase("overlap", [_GOOD, encode_binary_samples(frame(45))], 1008, "partly overlaps", (0,)),
    BadCase("hello-twice", [_GOOD, hello_text("x", "y")], 1008, "already received", (0,)),
    BadCase("not-hello", [_GOOD], 1008, "must be a JSON hello", hello=None),
    BadCase(
        "resume-fs", [], 1008, "changed `fs`", hello=lambda u, t: hello_text(u, t, fs=250), resume_first=True
    ),
    BadCase("big", ["x" * (DEFAULT_LIMITS.max_frame_bytes + 1)], 1009, "exceeds 65536"),
    BadCase("samples", [encode_binary_samples(frame(0, n=4097))], 1009, "4097 samples"),
    BadCase("type", [_json({"type": "bogus"})], 1003, "unknown frame type"),
    BadCase("ack", [_json({"type": "ack", "upto": 0})], 1003, "do not send ack"),
    BadCase("magic", [b"XX" + _GOOD[2:]], 1003, "magic"),
    BadCase("token", [_GOOD], 4001, "unknown or revoked", token_ok=False),
    BadCase("revoked", [_GOOD], 4001, "unknown or revoked", revoked=True),
    BadCase("device", [], 4001, "does not belong", hello=lambda u, t: hello_text("someone-else", t)),
]


class AlarmingProcessor:
    """A stream processor that raises one alarm on the first block."""

    def __init__(self) -> None:
        self.raised = False

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        if self.raised:
            return []
        self.raised = True
        data = {"alarm_id": 7, "change": "raised", "kind": "asystole", "priority": "high"}
        return [LiveEvent("alarm", {**data, "state": "active", "detail": "no beat for 4.2 s"})]

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        return []

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        return []


class FailingProcessor:
    """A stream processor with a bug."""

    def process(self, block: StoredBlock) -> Sequence[LiveEvent]:
        raise RuntimeError("processor bug")

    def vitals(self, reading: VitalsReading) -> Sequence[LiveEvent]:
        return []

    def close_stream(self, session_id: int) -> Sequence[LiveEvent]:
        return []


# Restarts -------------------------------------------------------------------------------


async def restart_mid_stream(
    db: Database, data_dir: Path, *, graceful: bool, seconds: float = 30.0
) -> tuple[ReplayResult, dict[str, int]]:
    """Stream a record, stop the server a third of the way in, finish on a new server, same port."""
    token = ensure_replay_devices(db, ["100"])["100"]
    signal = load_replay_signal("100", data_dir=data_dir, seconds=seconds)
    first = IngestServer(db, live_secret=SECRET)
    await first.start()
    progress = await first.fanout.subscribe([patient_topic(patient_of(db, "replay-mitdb-100"))])
    device = ReplayDevice(
        signal,
        f"{first.url}/ingest",
        token,
        speed=0,
        window_frames=8,
        backoff_s=0.05,
        backoff_max_s=0.2,
        vitals_every_s=2,
    )
    replay = asyncio.create_task(device.run())
    await trace_reaches(progress, signal.n_samples // 3)
    await (first.stop() if graceful else first.abort())
    second = IngestServer(db, live_secret=SECRET, port=int(device.url.rsplit(":", 1)[1].split("/")[0]))
    await second.start()
    try:
        result = await replay
    finally:
        await second.stop()
    return result, second.totals


class TestRestart:
    def test_killed_server_loses_and_duplicates_nothing(
        self, any_db: Database, data_dir: Path, run: Any
    ) -> None:
        """Killed mid-stream: the device reconnects, resends, and every sample is stored once."""
        result, _ = run(restart_mid_stream(any_db, data_dir, graceful=False))
        assert result.acked
        assert result.reconnects >= 1
        assert 1006 in result.close_codes  # no close frame: the server vanished
        assert_stored_exactly(any_db, "replay-mitdb-100", record_adc(data_dir, "100", 30.0))

    def test_graceful_stop_acknowledges_what_it_stored(
        self, sqlite_db: Database, data_dir: Path, run: Any
    ) -> None:
        """Stopped (SIGTERM path): close 1001, and nothing stored before the stop is sent again."""
        result, totals = run(restart_mid_stream(sqlite_db, data_dir, graceful=True))
        assert result.acked
        assert 1001 in result.close_codes
        assert totals["duplicates"] == 0
        assert_stored_exactly(sqlite_db, "replay-mitdb-100", record_adc(data_dir, "100", 30.0))


# /live and /health ------------------------------------------------------------------------


async def live_client(server: IngestServer, request: dict[str, Any]) -> ClientConnection:
    """A browser that subscribed (the ``subscribed`` answer is checked)."""
    ws = await connect(f"{server.url}/live")
    await ws.send(json.dumps(request))
    answer = json.loads(await ws.recv())
    assert answer["type"] == "subscribed", answer
    return ws


class TestLive:
    def test_patient_and_central_views(
        self, sqlite_db: Database, data_dir: Path, run: Any, running: Any, until_disconnected: Any
    ) -> None:
        """A replay's display trace, vitals and state reach both views, labelled as replay."""
        token = ensure_replay_devices(sqlite_db, ["100"])["100"]
        patient = patient_of(sqlite_db, "replay-mitdb-100")
        signal = load_replay_signal("100", data_dir=data_dir, seconds=5)

        async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            async with running(sqlite_db) as server:
                live = issue_live_token(SECRET, 1, [patient], 60)
                one = await live_client(
                    server, {"type": "subscribe", "token": live, "view": "patient", "patient_id": patient}
                )
                overview = await live_client(server, {"type": "subscribe", "token": live, "view": "central"})
                device = ReplayDevice(signal, f"{server.url}/ingest", token, speed=0, vitals_every_s=1)
                await device.run()
                return await until_disconnected(one), await until_disconnected(overview)

        full, central = run(scenario())
        assert all(m["patient_id"] == patient and m["replay"] is True for m in full + central)
        traces = [m for m in full if m["type"] == "trace"]
        assert [t["seq"] for t in traces] == list(range(0, 1800, 90))
        values = np.concatenate([np.asarray(t["values"]).T for t in traces])  # (n, leads) mV
        expected = StreamingFilter(design_sos("bandpass", 360.0, low_hz=0.5, high_hz=40.0)).process(
            (signal.samples - 1024) / 200.0
        )
        np.testing.assert_allclose(values, expected, atol=6e-4)
        vitals = [m for m in full if m["type"] == "vitals"]
        assert len(vitals) >= 4
        assert all(v["simulated"] == ["pulse", "spo2", "temperature"] for v in vitals)
        overview_traces = [m for m in central if m["type"] == "trace"]
        assert {(t["fs"], t["decimation"], len(t["values"])) for t in overview_traces} == {(90.0, 4, 1)}
        assert sum(len(t["values"][0]) for t in overview_traces) == 450
        assert [m["type"] for m in central].count("vitals") == len(vitals)

    def test_across_processes_via_redis(
        self,
        sqlite_db: Database,
        data_dir: Path,
        redis_url: str,
        run: Any,
        running: Any,
        until_disconnected: Any,
    ) -> None:
        """A browser on one server sees a device streaming into another, through Redis."""
        token = ensure_replay_devices(sqlite_db, ["208"])["208"]
        patient = patient_of(sqlite_db, "replay-mitdb-208")
        signal = load_replay_signal("208", data_dir=data_dir, seconds=2)
        prefix = f"cm-test-{uuid.uuid4().hex}:"

        async def scenario() -> list[dict[str, Any]]:
            ingest_bus = await RedisFanOut(redis_url, prefix=prefix).start()
            browser_bus = await RedisFanOut(redis_url, prefix=prefix).start()
            try:
                async with (
                    running(sqlite_db, fanout=ingest_bus) as ingesting,
                    running(sqlite_db, fanout=browser_bus) as watching,
                ):
                    live = issue_live_token(SECRET, 1, [patient], 60)
                    ws = await live_client(watching, json.loads(_subscribe(live, patient)))
                    await ReplayDevice(signal, f"{ingesting.url}/ingest", token, speed=0).run()
                    return await until_disconnected(ws)
            finally:
                await ingest_bus.aclose()
                await browser_bus.aclose()

        messages = run(scenario())
        traces = [m for m in messages if m["type"] == "trace"]
        assert sum(len(t["values"][0]) for t in traces) == signal.n_samples
        assert all(m["patient_id"] == patient for m in messages)

    def test_refusals(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """Missing, forged and expired tokens, out-of-scope patients, bad messages: error + close code."""
        good = issue_live_token(SECRET, 1, [1, 2], 60)
        cases: list[tuple[str | bytes | None, int, str]] = [
            (json.dumps({"type": "subscribe", "view": "central"}), 4401, "required"),
            (_subscribe(issue_live_token("x" * 32, 1, [1], 60), 1), 4401, "does not match"),
            (_subscribe(issue_live_token(SECRET, 1, [1], 60, now=time.time() - 120), 1), 4401, "expired"),
            (_subscribe(good, 3), 4403, "outside this token's scope"),
            (
                json.dumps({"type": "subscribe", "token": good, "view": "central", "patient_ids": [2, 9]}),
                4403,
                "[9]",
            ),
            (_subscribe(issue_live_token(SECRET, 1, [], 60), None), 4403, "allows no patients"),
            ("{oops", 1007, "invalid JSON"),
            (b"\x00", 1007, "JSON text"),
            (json.dumps({"type": "hello"}), 1008, "must be a subscribe"),
            (None, 1008, "no subscribe message in time"),
        ]

        async def refuse(
            server: IngestServer, message: str | bytes | None
        ) -> tuple[dict[str, Any], int | None]:
            ws = await connect(f"{server.url}/live")
            if message is not None:
                await ws.send(message)
            frames = await until_closed(ws)
            return frames[-1], ws.close_code

        async def scenario() -> list[tuple[dict[str, Any], int | None]]:
            async with running(sqlite_db, hello_timeout_s=0.3) as server:
                return [await refuse(server, message) for message, _, _ in cases]

        for (message, code, reason), (error, close_code) in zip(cases, run(scenario()), strict=True):
            assert (error["type"], error["code"], close_code) == ("error", code, code), message
            assert reason in error["reason"], message


def _subscribe(token: str, patient: int | None, also: Sequence[int] = ()) -> str:
    if patient is None:
        return json.dumps({"type": "subscribe", "token": token, "view": "central", "patient_ids": list(also)})
    return json.dumps({"type": "subscribe", "token": token, "view": "patient", "patient_id": patient})


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Status, content type and body of a plain HTTP GET (errors included)."""
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers or {}), timeout=5
        ) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


class TestIngestServer:
    def test_exceptions(self, sqlite_db: Database) -> None:
        with pytest.raises(ValueError, match="at least 16 bytes"):
            IngestServer(sqlite_db, live_secret="short")
        with pytest.raises(ValueError, match="must be at least 1"):
            IngestServer(sqlite_db, live_secret=SECRET, max_pending_frames=0)
        with pytest.raises(ValueError, match="`compression` must be None or 'deflate', got 'gzip'"):
            IngestServer(sqlite_db, live_secret=SECRET, compression="gzip")

    def test_compression(self, sqlite_db: Database, run: Any, running: Any) -> None:
        """Per-message compression is negotiated with clients that offer it, unless turned off."""

        async def negotiated(**options: Any) -> list[str | None]:
            async with running(sqlite_db, **options) as server:
                out = []
                for path in ("/ingest", "/live"):
                    ws = await connect(f"{server.url}{path}")  # offers permessage-deflate
                    assert ws.response is not None
                    out.append(ws.response.headers.get("Sec-WebSocket-Extensions"))
                    await ws.close()
                return out

        assert run(negotiated(compression=None)) == [None, None]
        offered = run(negotiated())
        assert all(ext is not None and ext.startswith("permessage-deflate") for ext in offered)


class TestHealth:
    def test_health_reports_streams_and_queues(self, sqlite_db: Database, run: Any, running: Any) -> None:
        token = register(sqlite_db, "health-1")

        async def scenario() -> list[tuple[int, str, str]]:
            async with running(sqlite_db, health_token="monitoring-secret") as server:
                ws, _ = await open_device(server, hello_text("health-1", token))
                await ws.send(encode_binary_samples(frame(0)))
                await ws.recv()
                base = f"http://127.0.0.1:{server.port}"
                answers = [
                    await asyncio.to_thread(
                        http_get, f"{base}/health", {"Authorization": "Bearer monitoring-secret"}
                    ),
                    await asyncio.to_thread(http_get, f"{base}/health"),
                    await asyncio.to_thread(http_get, f"{base}/health", {"Authorization": "Bearer wrong"}),
                    await asyncio.to_thread(http_get, f"{base}/nowhere"),
                ]
                await ws.close()
                return answers

        (status, content_type, body), (_, _, anonymous), (_, _, wrong), (missing, _, _) = run(scenario())
        assert (status, content_type, missing) == (200, "application/json", 404)
        health = json.loads(body)
        assert health["status"] == "ok"
        assert health["queues"] == {"storage": 0, "analysis": 0}
        (stream,) = health["streams"]
        assert (stream["device"], stream["stream_id"], stream["upto"], stream["lag_s"]) == (
            "health-1",
            "s1",
            90,
            0,
        )
        assert {"behind_s", "queue", "analysis_queue", "gaps", "replay", "patient_id", "session_id"} <= set(
            stream
        )
        assert health["totals"]["frames_stored"] == 1
        # Without the health token (or with a wrong one) the same numbers, but no device/patient identifiers.
        for text in (anonymous, wrong):
            (public,) = json.loads(text)["streams"]
            assert not {"device", "stream_id", "session_id", "patient_id"} & set(public)
            assert (public["upto"], public["lag_s"]) == (90, 0)
            assert "health-1" not in text


class TestServe:
    def test_sigterm_stops_cleanly(self, tmp_path: Path, data_dir: Path, run: Any) -> None:
        """``serve`` with a demo replay: SIGTERM ends it, with every replayed sample stored."""
        url = f"sqlite:///{tmp_path / 'serve.db'}"
        started: asyncio.Queue[IngestServer] = asyncio.Queue()

        async def scenario() -> None:
            options = ServeOptions(
                port=0,
                database_url=url,
                live_secret=SECRET,
                demo_records=("100",),
                demo_speed=0,
                demo_seconds=5,
                data_dir=data_dir,
            )
            task = asyncio.create_task(serve(options, ready=started.put_nowait))
            server = await started.get()
            watch = await server.fanout.subscribe([patient_topic(1)])  # the first patient of a new database
            async for message in watch:
                if message.kind == "stream" and message.data()["state"] == "disconnected":
                    break
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                pytest.fail("serve() did not install a SIGTERM handler")
            os.kill(os.getpid(), signal.SIGTERM)
            await task

        run(scenario())
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored
        db = Database()
        db.init(url)
        try:
            assert_stored_exactly(db, "replay-mitdb-100", record_adc(data_dir, "100", 5.0))
        finally:
            db.dispose()
