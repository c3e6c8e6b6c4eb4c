"""Time our R-peak detector against NeuroKit2's default pipeline.

Usage::

    python bench/qrs_speed.py [--records 100,200,...] [--repeat 3] [--data-dir D]

Each repetition runs both detectors on every record (full 30-minute MIT-BIH
records, channel 0), alternating which goes first so that neither profits
from a warm cache; the figure per detector is the median over repetitions of
the total time over the records. NeuroKit2's pipeline is
``ecg_peaks(ecg_clean(x))`` with its defaults, the same as in
:func:`sigproc.qrs_evaluation.evaluate_qrs`. Records are found the way the
CLI finds them (:mod:`sigproc.records`).

The last line printed is JSON: ``{"ours_s", "neurokit2_s", "ratio", ...}``
with ``ratio = ours_s / neurokit2_s`` (below 1: ours is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from sigproc.peaks import detect_r_peaks
from sigproc.qrs_evaluation import peer_detector
from sigproc.records import load_record

DEFAULT_RECORDS = ("100", "105", "108", "200", "203", "208", "222", "232")

Detector = Callable[[NDArray[np.float64], float], object]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one line per repetition, then the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--records", default=",".join(DEFAULT_RECORDS), help="comma-separated MIT-BIH records"
    )
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--data-dir", default=None, help="folder holding mitdb/ (default: as the CLI)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    names = [r.strip() for r in args.records.split(",") if r.strip()]
    if not names:
        parser.error("--records must name at least one record")

    signals = [load_record(n, "mitdb", args.data_dir, channels=[0], annotations=False) for n in names]
    data = [(rec.signal[:, 0], rec.fs) for rec in signals]
    detectors: dict[str, Detector] = {"ours": detect_r_peaks, "neurokit2": peer_detector("neurokit2")}
    for detect in detectors.values():  # warm-up: imports, filter designs, caches
        detect(data[0][0][: int(10 * data[0][1])], data[0][1])

    # Wall-clock time is the figure; CPU time of this process is reported too,
    # as it is steadier on a machine shared with other work.
    totals: dict[str, list[float]] = {name: [] for name in detectors}
    cpu: dict[str, list[float]] = {name: [] for name in detectors}
    for rep in range(args.repeat):
        order = list(detectors) if rep % 2 == 0 else list(reversed(detectors))
        spent = dict.fromkeys(detectors, 0.0)
        spent_cpu = dict.fromkeys(detectors, 0.0)
        for x, fs in data:
            for name in order:
                start, start_cpu = time.perf_counter(), time.process_time()
                detectors[name](x, fs)
                spent[name] += time.perf_counter() - start
                spent_cpu[name] += time.process_time() - start_cpu
        for name in detectors:
            totals[name].append(spent[name])
            cpu[name].append(spent_cpu[name])
        print(f"repetition {rep + 1}: " + ", ".join(f"{n} {s:.3f} s" for n, s in spent.items()), flush=True)

    ours = statistics.median(totals["ours"])
    theirs = statistics.median(totals["neurokit2"])
    ours_cpu = statistics.median(cpu["ours"])
    theirs_cpu = statistics.median(cpu["neurokit2"])
    summary = {
        "ours_s": round(ours, 4),
        "neurokit2_s": round(theirs, 4),
        "ratio": round(ours / theirs, 4),
        "ours_cpu_s": round(ours_cpu, 4),
        "neurokit2_cpu_s": round(theirs_cpu, 4),
        "cpu_ratio": round(ours_cpu / theirs_cpu, 4),
        "records": names,
        "repeat": args.repeat,
        "signal_minutes": round(sum(x.size / fs for x, fs in data) / 60.0, 2),
        "ours_runs_s": [round(v, 4) for v in totals["ours"]],
        "neurokit2_runs_s": [round(v, 4) for v in totals["neurokit2"]],
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
