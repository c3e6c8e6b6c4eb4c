"""Ingest load benchmark: N replay devices at real time into one server with the analysis pipeline.

:func:`run_ingest_bench` starts an :class:`~ingest.server.IngestServer` with
an :class:`~ingest.pipeline.AnalysisProcessor` on port 0 over a fresh SQLite
database (WAL), registers ``streams`` devices and patients, replays MIT-BIH
records (2 leads, 360 Hz) from all of them at real time with
:class:`~ingest.replay.ReplayDevice`, and subscribes to the central view of
``/live`` as a central station would.

Measured:

* **samples**: sent (acknowledged by the server) and stored (read back
  from ``signal_chunks``), compared per stream by count and SHA-256;
* **latency** of each beat: from the moment the frame holding its R peak
  reached the server (``t_arrival``, stamped when the frame is read off the
  socket) to the moment the beat message arrived at the ``/live``
  subscriber; both are wall-clock readings of this process, so the figure
  includes storage, analysis, batching, the fan-out and the WebSocket hop;
* **cpu_percent**: CPU time of the server's process over the run (the
  server and the ``/live`` subscriber), in % of one core; **rss_mb**: its
  peak resident set. The replay devices run in a child process (their CPU
  is reported as ``clients_cpu_percent``), as real devices would be
  elsewhere; on a 2-core machine they still compete for the cores.

On a machine where other work runs, the figures are an upper bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import multiprocessing
import os
import resource
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ingest.live_tokens import issue_live_token
from ingest.pipeline import AnalysisProcessor, ShardedAnalysisProcessor
from ingest.processing import StreamProcessor
from ingest.replay import ReplayDevice, ReplayResult, ReplaySignal, load_replay_signal
from ingest.server import IngestServer
from model.inference import BeatClassifier
from sigproc.records import MITDB_RECORDS
from storage import (
    Beat,
    Database,
    Device,
    Patient,
    RecordingSession,
    SignalChunk,
    create_device,
    load_block,
    upgrade,
)

__all__ = ["BENCH_KEYS", "run_ingest_bench"]

#: Keys of the result, in order.
BENCH_KEYS: tuple[str, ...] = (
    "streams",
    "seconds",
    "samples_sent",
    "samples_stored",
    "beats",
    "latency_p50_s",
    "latency_p95_s",
    "latency_p99_s",
    "cpu_percent",
    "rss_mb",
)

_SECRET = "ingest-bench-live-secret-0123456789"


def run_ingest_bench(
    streams: int,
    seconds: float,
    json_path: str | os.PathLike[str] | None = None,
    *,
    data_dir: str | Path | None = None,
    records: Sequence[str] = MITDB_RECORDS,
    drain_s: float = 10.0,
    analysis: bool = True,
    workers: int = 0,
) -> dict[str, Any]:
    """Replay ``streams`` devices for ``seconds`` at real time; the measurements as a dict.

    Parameters
    ----------
    streams : int
        Concurrent devices (each its own patient).
    seconds : float
        Seconds of signal each device sends (at real time).
    json_path : path, optional
        Also write the result there as JSON.
    data_dir : path, optional
        Folder holding ``mitdb/``.
    records : sequence of str
        Records to replay, cycled; repeats start 60 s further into the record.
    drain_s : float
        Longest wait for the last beats after the devices finished.
    analysis : bool
        Run the :class:`~ingest.pipeline.AnalysisProcessor`; ``False`` runs
        the display trace only, the server's own cost as a baseline.
    workers : int
        Run the analysis in this many worker processes
        (:class:`~ingest.pipeline.ShardedAnalysisProcessor`); 0 runs it in
        the server's worker thread.

    Returns
    -------
    dict
        :data:`BENCH_KEYS`, plus ``latency_server_p95_s`` (arrival to the
        processor handing the beat over), ``beats_stored``,
        ``checksums_match``, ``streams_ok``, ``load_average``, ``devices``
        (reconnects, resent and dropped frames, close codes), and with
        worker processes ``workers_rss_mb`` (their peak resident sets,
        summed; ``rss_mb`` is the server's process).

    Raises
    ------
    ValueError
        If ``streams`` or ``seconds`` is not positive.
    """
    if streams < 1 or seconds <= 0:
        raise ValueError(f"`streams` and `seconds` must be positive, got {streams} and {seconds}")
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        upgrade(url)
        db = Database()
        db.init(url)
        try:
            plan = [
                _Stream(records[i % len(records)], 60.0 * (i // len(records)), seconds, uid, token, patient)
                for i, (uid, token, patient) in enumerate(_register(db, streams))
            ]
            signals = [_load(s, data_dir) for s in plan]
            processor = _processor(db, url, analysis=analysis, workers=workers)
            try:
                result = asyncio.run(_run(db, plan, signals, processor, drain_s, data_dir))
            finally:
                if isinstance(processor, ShardedAnalysisProcessor):
                    workers_rss = sum(_peak_rss_mb(pid) for pid in processor.pids)
                    processor.close()
            result["workers"] = workers
            if workers:
                result["workers_rss_mb"] = round(workers_rss, 1)
            result.update(_check_stored(db, signals))
        finally:
            db.dispose()
    result["load_average"] = [round(x, 2) for x in os.getloadavg()]
    if json_path is not None:
        Path(json_path).write_text(json.dumps(result, indent=2) + "\n")
    return result


# Internals ---------------------------------------------------------------------------


@dataclass
class _Live:
    """What the ``/live`` subscriber saw."""

    latencies: list[float] = dataclasses.field(default_factory=list)
    server_latencies: list[float] = dataclasses.field(default_factory=list)
    closed: str | None = None


def _register(db: Database, streams: int) -> list[tuple[str, str, int]]:
    """A device and a patient per stream: ``(device_uid, token, patient_id)``."""
    out = []
    with db.session() as session:
        for i in range(streams):
            patient = Patient(name=f"bench patient {i}")
            session.add(patient)
            session.flush()
            uid, token = f"bench-{i:04d}", f"bench-token-{i:04d}-{os.urandom(8).hex()}"
            create_device(session, uid, token, patient_id=patient.id)
            out.append((uid, token, patient.id))
    return out


async def _run(
    db: Database,
    plan: list[_Stream],
    signals: list[ReplaySignal],
    processor: StreamProcessor | None,
    drain_s: float,
    data_dir: str | Path | None,
) -> dict[str, Any]:
    """Serve and subscribe here while a child process replays; the latency and resource figures."""
    server = IngestServer(db, live_secret=_SECRET, processor=processor, live_queue_size=65_536)
    await server.start()
    live = _Live()
    cpu0, wall0 = time.process_time(), time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        patients = [s.patient_id for s in plan]
        ws = await connect(f"{server.url}/live", max_size=None)
        token = issue_live_token(_SECRET, 1, patients, 3600.0)
        await ws.send(
            json.dumps({"type": "subscribe", "token": token, "view": "central", "patient_ids": patients})
        )
        subscriber = asyncio.create_task(_subscribe(ws, live))
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            replayed = await loop.run_in_executor(pool, _replay_all, f"{server.url}/ingest", plan, data_dir)
        await _drain(live, drain_s)
        await server.stop(timeout_s=60.0)
        await ws.close()
        with contextlib.suppress(asyncio.CancelledError):
            subscriber.cancel()
            await subscriber
    finally:
        await server.abort()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    acked, clients_cpu_s, devices = replayed
    lat = np.asarray(live.latencies)
    srv = np.asarray(live.server_latencies)
    return {
        "streams": len(plan),
        "seconds": plan[0].seconds,
        "samples_sent": int(sum(sig.samples.size for sig, ok in zip(signals, acked, strict=True) if ok)),
        "beats": int(lat.size),
        "latency_p50_s": _pct(lat, 50),
        "latency_p95_s": _pct(lat, 95),
        "latency_p99_s": _pct(lat, 99),
        "latency_server_p95_s": _pct(srv, 95),
        "cpu_percent": round(100.0 * cpu / wall, 1),
        "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1),
        "clients_cpu_percent": round(100.0 * clients_cpu_s / wall, 1),
        "streams_ok": sum(acked),
        "live_closed": live.closed,
        "analysis": processor is not None,
        "pipeline": _pipeline_figures(processor),
        "devices": devices,
    }


@dataclass(frozen=True)
class _Stream:
    """One replay device of the benchmark."""

    record: str
    start_s: float
    seconds: float
    device_uid: str
    token: str
    patient_id: int


def _load(stream: _Stream, data_dir: str | Path | None) -> ReplaySignal:
    return load_replay_signal(
        stream.record, data_dir=data_dir, start_s=stream.start_s, seconds=stream.seconds
    )


def _replay_all(
    url: str, plan: list[_Stream], data_dir: str | Path | None
) -> tuple[list[bool], float, dict[str, Any]]:
    """Child process: replay every stream at real time.

    Whether each stream was acknowledged, the CPU used, and what the devices
    went through (reconnects, resent and dropped frames, close codes).
    """
    signals = [_load(s, data_dir) for s in plan]
    cpu0 = time.process_time()
    results = asyncio.run(_replay_devices(url, plan, signals))
    devices = {
        "reconnects": sum(r.reconnects for r in results),
        "frames_resent": sum(r.frames_resent for r in results),
        "dropped_frames": sum(r.dropped_frames for r in results),
        "close_codes": dict(Counter(str(code) for r in results for code in r.close_codes)),
        "unacknowledged": sum(not r.acked for r in results),
    }
    return [r.acked and not r.close_codes for r in results], time.process_time() - cpu0, devices


async def _replay_devices(url: str, plan: list[_Stream], signals: list[ReplaySignal]) -> list[ReplayResult]:
    """Run the devices, bounded in time (a stuck device shows as not acknowledged)."""
    devices = [
        ReplayDevice(sig, url, s.token, device_id=s.device_uid, speed=1.0, seed=i)
        for i, (sig, s) in enumerate(zip(signals, plan, strict=True))
    ]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2.0 * plan[0].seconds + 120.0):
            await asyncio.gather(*(d.run() for d in devices))
    return [d.result for d in devices]


async def _subscribe(ws: ClientConnection, live: _Live) -> None:
    """Read ``/live``; note the latency of every beat."""
    try:
        async for text in ws:
            message = json.loads(text)
            if message.get("type") == "beat":
                now = time.time()
                live.latencies.append(now - float(message["t_arrival"]))
                live.server_latencies.append(float(message["t_sent"]) - float(message["t_arrival"]))
    except ConnectionClosed as exc:  # recorded in the result: a slow subscriber is cut off (1013)
        live.closed = repr(exc)


async def _drain(live: _Live, drain_s: float) -> None:
    """Wait until beats stop arriving (or ``drain_s``)."""
    deadline = time.monotonic() + drain_s
    seen = -1
    while time.monotonic() < deadline and seen != len(live.latencies):
        seen = len(live.latencies)
        await asyncio.sleep(1.0)


def _check_stored(db: Database, signals: list[ReplaySignal]) -> dict[str, Any]:
    """Stored samples per stream against those sent: count and SHA-256."""
    stored, matches = 0, 0
    with db.session() as session:
        for i, sig in enumerate(signals):
            chunks = session.scalars(
                select(SignalChunk)
                .join(RecordingSession, SignalChunk.session_id == RecordingSession.id)
                .join(Device, RecordingSession.device_id == Device.id)
                .where(Device.device_uid == f"bench-{i:04d}")
                .order_by(SignalChunk.first_seq)
            ).all()
            blocks = [load_block(c).samples for c in chunks]
            got = np.concatenate(blocks) if blocks else np.zeros((0, sig.samples.shape[1]), np.int16)
            stored += int(got.size)
            same = got.shape == sig.samples.shape and _digest(got) == _digest(sig.samples)
            matches += int(same)
        beats = len(session.scalars(select(Beat.id)).all())
    return {"samples_stored": stored, "checksums_match": matches, "beats_stored": beats}


def _digest(samples: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(samples, dtype="<i2").tobytes()).hexdigest()


def _processor(db: Database, url: str, *, analysis: bool, workers: int) -> StreamProcessor | None:
    """The processor under test: none (display only), in the server's thread, or in worker processes."""
    if not analysis:
        return None
    if workers > 0:
        return ShardedAnalysisProcessor(url, workers=workers)
    return AnalysisProcessor(db, BeatClassifier.load(num_threads=1))


def _peak_rss_mb(pid: int) -> float:
    """Peak resident set of a live process (Linux ``VmHWM``), in MiB; 0 where unknown."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def _pipeline_figures(processor: StreamProcessor | None) -> dict[str, float] | None:
    """Counts and busy seconds of an in-thread analysis processor."""
    if not isinstance(processor, AnalysisProcessor):
        return None
    return {**processor.totals, **{k: round(v, 2) for k, v in processor.busy.items()}}


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values.size else None
