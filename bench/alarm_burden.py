"""Alarm burden of the live pipeline on whole MIT-BIH records; prints JSON (last line).

Each record goes through :class:`ingest.pipeline.AnalysisProcessor` as a
device would send it (0.25 s frames, a wall clock that moves in step, the
shipped classifier), and the alarms it raises are counted by kind, with the
beats the reference annotates as V and S for scale. Alarm fatigue is a
patient-safety problem in its own right: an advisory that flaps on and off
every few beats is one nobody reads. Compare two versions of the code by
running this from each checkout on the same records.

Usage::

    python bench/alarm_burden.py [--records 119,208,233] [--seconds 1800]
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from datetime import UTC, datetime

from ingest.pipeline import AnalysisProcessor
from ingest.replay import load_replay_signal
from model.inference import BeatClassifier
from sigproc.records import load_record

START = datetime(2026, 1, 1, tzinfo=UTC)
FRAME_S = 0.25


class SteppedClock:
    """A wall clock that moves only when told: one frame's time per frame sent."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", default="119,208,233", help="comma-separated MIT-BIH records")
    parser.add_argument("--seconds", type=float, default=1800.0, help="seconds of each record")
    args = parser.parse_args()

    clf = BeatClassifier.load(num_threads=1)
    results = {}
    started = time.perf_counter()
    for record in args.records.split(","):
        signal = load_replay_signal(record, seconds=args.seconds)
        clock = SteppedClock(START.timestamp())
        proc = AnalysisProcessor(None, clf, wall_clock=clock)
        frame = round(FRAME_S * signal.fs)
        events = []
        for first in range(0, signal.n_samples, frame):
            block = signal.stored_block(first, frame, session_id=1, patient_id=None, started_at=START)
            events.extend(proc.process(block))
            clock.now += FRAME_S
        events.extend(proc.close_stream(1))
        alarms = [e.data for e in events if e.kind == "alarm" and e.data["change"] == "raised"]
        rec = load_record(record, sampto=signal.n_samples)
        classes = collections.Counter(rec.annotations.beats().aami().tolist()) if rec.annotations else {}
        results[record] = {
            "minutes": round(signal.n_samples / signal.fs / 60.0, 1),
            "raised": dict(sorted(collections.Counter(str(a["kind"]) for a in alarms).items())),
            "beats": sum(e.kind == "beat" for e in events),
            "reference_v_beats": int(classes.get("V", 0)),
            "reference_s_beats": int(classes.get("S", 0)),
        }
    print(
        json.dumps(
            {
                "bench": "alarm_burden",
                "model": clf.version,
                "records": results,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
