"""Real-time factor of the denoisers on one core; prints JSON, the summary on the last line.

The real-time factor is signal seconds per CPU second
(:func:`time.process_time`; run with ``OMP_NUM_THREADS=1``). For each window
length (10 s and 30 s of MIT-BIH record 100, lead 0) it times:

* PyEMD ``EMD()`` with its default settings (Cauchy-type stopping, up to
  1000 sifts per IMF, cubic splines), the baseline the issue quotes;
* PyEMD with our settings alone (:class:`sigproc.denoise.EMDConfig`:
  2 sifts per IMF, at most 7 IMFs, cubic splines);
* each method of :func:`sigproc.denoise.denoise` on the whole window;
* the streaming EMD denoiser, whose effective rate counts its overlap
  (one streaming window of ``WindowConfig().window_s`` per hop).

Usage: ``OMP_NUM_THREADS=1 python bench/denoise_speed.py [--data-dir D] [--min-time S]``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np
from PyEMD import EMD

from sigproc.denoise import EMDConfig, StreamingDenoiser, WindowConfig, denoise
from sigproc.filters import bandpass
from sigproc.records import load_record


def realtime_factor(fn: Callable[[], object], signal_s: float, min_time: float) -> float:
    """Signal seconds per CPU second of ``fn``, repeated for at least ``min_time`` CPU seconds."""
    fn()  # warm-up
    runs = 0
    start = time.process_time()
    while True:
        fn()
        runs += 1
        spent = time.process_time() - start
        if spent >= min_time:
            return signal_s * runs / spent


def main() -> None:
    """Run the benchmark and print JSON lines; the last one is the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--min-time", type=float, default=1.0, help="CPU seconds per measurement")
    args = parser.parse_args()
    rec = load_record("100", data_dir=args.data_dir, channels=[0], annotations=False)
    fs = rec.fs
    cfg = EMDConfig()
    ours = EMD(spline_kind=cfg.spline, FIXE=cfg.sift_iterations)
    defaults = EMD()
    summary: dict[str, Any] = {"unit": "signal seconds per CPU second", "windows": {}}
    for window_s in (10.0, 30.0):
        x = rec.signal[: round(window_s * fs), 0]
        xb = bandpass(x, fs)
        row = {
            "pyemd_defaults": realtime_factor(partial(defaults.emd, xb), window_s, args.min_time),
            "pyemd_ours": realtime_factor(
                partial(ours.emd, xb, max_imf=cfg.max_imf), window_s, args.min_time
            ),
        }
        for method in ("bandpass", "wavelet", "emd", "emd+wavelet"):
            row[method] = realtime_factor(partial(denoise, x, fs, method), window_s, args.min_time)
        summary["windows"][f"{window_s:g}s"] = row
        print(json.dumps({"window_s": window_s, **row}))
    # The streaming window: one window of WindowConfig().window_s per hop.
    win = WindowConfig()
    long = rec.signal[: round(120 * fs), 0]

    def stream() -> None:
        den = StreamingDenoiser(fs, "emd")
        for part in np.array_split(long, 240):
            den.process(part)
        den.flush()

    summary["streaming_emd"] = {
        "window_s": win.window_s,
        "hop_s": win.hop_s(),
        "max_latency_s": win.max_latency_s(),
        "realtime_factor": realtime_factor(stream, 120.0, args.min_time),
    }
    seg = bandpass(rec.signal[: round(win.window_s * fs), 0], fs)
    summary["streaming_emd"]["pyemd_ours_per_window"] = realtime_factor(
        lambda: ours.emd(seg, max_imf=cfg.max_imf), win.window_s, args.min_time
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
