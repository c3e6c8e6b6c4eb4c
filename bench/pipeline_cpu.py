"""CPU time of the live analysis per block per stream, offline and reproducible; prints JSON.

Feeds ``--streams`` MIT-BIH records (2 leads, 360 Hz; records cycled,
repeats start 60 s further in) through one
:class:`~ingest.pipeline.AnalysisProcessor` in device frames of
``--frame-s`` (0.25 s), round-robin over the streams as a server would
receive them at real time. The processor's clock is simulated (one frame
period per round), so batching across sessions is what it would be live,
but nothing sleeps: the figure is the CPU the analysis needs, without the
network, the sample storage or the other engineers' load on the machine
(``time.process_time`` of this process, which counts only its own CPU).

Measured (the JSON's keys):

* ``cpu_ms_per_block``: CPU per block per stream, the whole
  ``process`` call (display trace, filters, detector, quality, alarms,
  classification, storage of results when ``--db``); the best of
  ``--repeat`` runs, as a cold cache or a neighbour's burst only slows a run;
* ``classify_ms_per_block``: the CPU share of classification (the
  batched network calls, timed here with ``time.process_time``);
  ``store_ms_per_block``: the wall time of result storage (the
  processor's ``busy`` counter);
* ``beats``, ``batches``, ``outputs_sha256``: what came out, hashed
  (beat positions, labels and probabilities; heart rates; alarm changes;
  quality reports), so that runs before and after a change can be checked
  to give identical results.

Usage::

    python bench/pipeline_cpu.py [--streams 20] [--seconds 60] [--repeat 3] [--db] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import ingest.pipeline
from ingest.pipeline import AnalysisProcessor, PipelineConfig
from ingest.processing import LiveEvent
from ingest.replay import ReplaySignal, load_replay_signal
from model.inference import BeatClassifier
from sigproc.records import MITDB_RECORDS
from storage import Database, Patient, create_device, open_recording, upgrade

START = datetime(2026, 1, 1, tzinfo=UTC)


class _Clock:
    """A wall clock that the feeding loop moves on."""

    def __init__(self) -> None:
        self.now = START.timestamp()

    def __call__(self) -> float:
        return self.now


def _register(db: Database, signals: list[ReplaySignal]) -> list[tuple[int, int]]:
    """A patient, device and recording per stream: ``(patient_id, session_id)``."""
    out = []
    with db.session() as session:
        for i, sig in enumerate(signals):
            patient = Patient(name=f"cpu bench patient {i}")
            session.add(patient)
            session.flush()
            device = create_device(session, f"cpu-{i:04d}", f"cpu-token-{i:04d}", patient_id=patient.id)
            rec, _ = open_recording(
                session,
                device,
                stream_id="s1",
                fs=sig.fs,
                lead_names=sig.leads,
                gain=sig.gain,
                baseline=sig.baseline,
                started_at=START,
            )
            out.append((int(patient.id), int(rec.id)))
    return out


def _digest(events: list[LiveEvent]) -> str:
    """SHA-256 of the analysis results (not of wall-clock stamps)."""
    h = hashlib.sha256()
    for e in events:
        if e.kind == "trace":
            continue
        data = {k: v for k, v in e.data.items() if k not in ("t_arrival", "t_sent", "alarm_id")}
        h.update(json.dumps([e.kind, data], sort_keys=True, default=str).encode())
    return h.hexdigest()


class _CpuTimer:
    """Wraps a function of a module and sums the CPU time of its calls."""

    def __init__(self, module: Any, name: str) -> None:
        self.module, self.name, self.seconds = module, name, 0.0
        self.inner = getattr(module, name)

    def __enter__(self) -> _CpuTimer:
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started

        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc: object) -> None:
        setattr(self.module, self.name, self.inner)


def run_once(
    signals: list[ReplaySignal], classifier: BeatClassifier, frame_s: float, db: Database | None
) -> dict[str, Any]:
    """Feed every stream round-robin; the CPU figures and the results' digest."""
    clock = _Clock()
    ids = _register(db, signals) if db is not None else [(None, i + 1) for i in range(len(signals))]
    proc = AnalysisProcessor(db, classifier, config=PipelineConfig(), wall_clock=clock)
    fs = signals[0].fs
    n = round(frame_s * fs)
    length = max(sig.n_samples for sig in signals)
    events: dict[int, list[LiveEvent]] = {sid: [] for _, sid in ids}
    blocks = 0
    with _CpuTimer(ingest.pipeline, "_classify") as classify:
        cpu0 = time.process_time()
        for first in range(0, length, n):
            for sig, (patient_id, session_id) in zip(signals, ids, strict=True):
                if first >= sig.n_samples:
                    continue
                block = sig.stored_block(
                    first, n, session_id=session_id, patient_id=patient_id, started_at=START
                )
                events[session_id].extend(proc.process(block))
                blocks += 1
                clock.now += frame_s / len(signals)
        for _, session_id in ids:
            events[session_id].extend(proc.close_stream(session_id))
        cpu = time.process_time() - cpu0
    return {
        "blocks": blocks,
        "cpu_s": cpu,
        "cpu_ms_per_block": 1000.0 * cpu / blocks,
        "classify_ms_per_block": 1000.0 * classify.seconds / blocks,
        "store_ms_per_block": 1000.0 * proc.busy["store_s"] / blocks,
        "beats": proc.totals["beats"],
        "batches": proc.totals["batches"],
        "outputs_sha256": _digest([e for sid in sorted(events) for e in events[sid]]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=20, help="concurrent streams")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of signal per stream")
    parser.add_argument("--frame-s", type=float, default=0.25, help="device frame length in seconds")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported")
    parser.add_argument("--db", action="store_true", help="store results in a temporary SQLite database")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding mitdb/")
    args = parser.parse_args()
    if args.streams < 1 or args.seconds <= 0 or args.repeat < 1:
        parser.error("--streams, --seconds and --repeat must be positive")
    signals = [
        load_replay_signal(
            MITDB_RECORDS[i % len(MITDB_RECORDS)],
            data_dir=args.data_dir,
            start_s=60.0 * (i // len(MITDB_RECORDS)),
            seconds=args.seconds,
        )
        for i in range(args.streams)
    ]
    classifier = BeatClassifier.load(num_threads=1)
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="pipeline-cpu-") as tmp:
            db = None
            if args.db:
                url = f"sqlite:///{Path(tmp) / 'bench.db'}"
                upgrade(url)
                db = Database()
                db.init(url)
            try:
                runs.append(run_once(signals, classifier, args.frame_s, db))
            finally:
                if db is not None:
                    db.dispose()
    best = min(runs, key=lambda r: r["cpu_s"])
    if len({r["outputs_sha256"] for r in runs}) != 1:
        raise SystemExit("runs gave different results: the analysis is not deterministic")
    result = {
        "streams": args.streams,
        "seconds": args.seconds,
        "frame_s": args.frame_s,
        "db": args.db,
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in best.items()},
        "cpu_ms_per_block_runs": [round(r["cpu_ms_per_block"], 4) for r in runs],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
