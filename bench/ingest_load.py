"""Ingest load: replay devices at real time into the server with the analysis pipeline; prints JSON.

Targets (issue 5): 100 concurrent streams (360 Hz, 2 leads) for at least
5 minutes on a 2-core machine with no sample lost (sent = stored, by count
and checksum), p95 latency from an R peak's arrival at the server to its
classified beat on ``/live`` of at most 2 s, and at most 2 GB of memory.
See :mod:`ingest.bench` for what is measured and how.

Usage::

    python bench/ingest_load.py --streams 100 --seconds 300 [--workers 1] [--json out.json] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ingest.bench import run_ingest_bench


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=100, help="concurrent replay devices")
    parser.add_argument("--seconds", type=float, default=300.0, help="seconds of signal per device")
    parser.add_argument("--json", type=Path, default=None, help="also write the result here")
    parser.add_argument("--data-dir", type=Path, default=None, help="folder holding mitdb/")
    parser.add_argument(
        "--display-only", action="store_true", help="baseline: the display trace only, no analysis"
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="analysis worker processes (0: the server's worker thread)"
    )
    args = parser.parse_args()
    result = run_ingest_bench(
        args.streams,
        args.seconds,
        args.json,
        data_dir=args.data_dir,
        analysis=not args.display_only,
        workers=args.workers,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
