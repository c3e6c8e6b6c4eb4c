"""Cost of encryption at rest per signal chunk: AES-256-GCM against storing in clear.

Usage::

    python bench/storage_crypto.py [--chunks 600] [--seconds 1.0] [--repeat 3] [--database-url URL]

Two measurements, each the median over repetitions:

- ``crypto``: sealing and opening one chunk payload alone
  (:func:`storage.seal_chunk` / :func:`storage.open_chunk`), in
  microseconds, for chunks of 0.25 s, 1 s and 10 s of two-lead 360 Hz ECG;
- ``storage``: :func:`storage.insert_chunk` of ``--chunks`` chunks of
  ``--seconds`` each (ten per transaction, as the ingest server batches
  frames), then reading them all back with :func:`storage.iter_samples`,
  once in clear and once encrypted, on a fresh SQLite file (or the given
  database, which must be migrated and empty), in microseconds per chunk.

The last line printed is JSON: ``{"crypto": {...}, "storage": {"clear":
{...}, "encrypted": {...}, "write_overhead", "read_overhead"}, ...}`` where
an overhead is ``encrypted / clear - 1``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from storage import (
    CODEC_NAME,
    Database,
    DataCipher,
    Patient,
    RecordingSession,
    SampleBlock,
    create_device,
    encode_block,
    generate_data_key,
    insert_chunk,
    iter_samples,
    open_chunk,
    open_recording,
    seal_chunk,
    upgrade,
)

FS = 360.0
T0 = datetime(2026, 1, 1, tzinfo=UTC)
PER_TRANSACTION = 10


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print one line per measurement, then the JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=600, help="chunks stored per run (default 600)")
    parser.add_argument("--seconds", type=float, default=1.0, help="seconds per chunk (default 1)")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--database-url", default=None, help="migrated, empty database (default: SQLite)")
    args = parser.parse_args(argv)
    if args.chunks < 1 or args.repeat < 1 or not 0 < args.seconds <= 600:
        parser.error("--chunks and --repeat must be at least 1, --seconds in (0, 600]")

    cipher = DataCipher.from_text([generate_data_key()], source="benchmark key")
    crypto = {f"{s:g}s": _crypto_us(cipher, s, args.repeat) for s in (0.25, 1.0, 10.0)}
    for name, row in crypto.items():
        print(f"crypto {name}: seal {row['seal_us']:.1f} us, open {row['open_us']:.1f} us", file=sys.stderr)

    variants: dict[str, DataCipher | None] = {"clear": None, "encrypted": cipher}
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in variants}
    for r in range(args.repeat):  # alternate which goes first, so neither profits from a warm cache
        for label in sorted(variants, reverse=r % 2 == 1):
            runs[label].append(_storage_us(args, variants[label]))
    storage = {label: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for label, rs in runs.items()}
    for label, row in storage.items():
        print(
            f"{label}: write {row['write_us']:.0f} us/chunk, read {row['read_us']:.0f} us/chunk",
            file=sys.stderr,
        )
    summary = {
        "crypto": crypto,
        "storage": {
            **storage,
            "write_overhead": storage["encrypted"]["write_us"] / storage["clear"]["write_us"] - 1,
            "read_overhead": storage["encrypted"]["read_us"] / storage["clear"]["read_us"] - 1,
        },
        "chunks": args.chunks,
        "seconds_per_chunk": args.seconds,
        "leads": 2,
        "fs": FS,
        "repeat": args.repeat,
        "database": "sqlite (temporary file)" if args.database_url is None else "given URL",
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    print(json.dumps(summary))
    return 0


def _samples(first_seq: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(first_seq)
    return rng.integers(-2000, 2000, size=(n, 2), dtype=np.int16)


def _crypto_us(cipher: DataCipher, seconds: float, repeat: int) -> dict[str, float]:
    """Median microseconds to seal and to open one payload of ``seconds``."""
    n = round(seconds * FS)
    payload = encode_block(SampleBlock(_samples(0, n), FS, ("MLII", "V5"), 200.0))
    row: dict[str, Any] = {"session_id": 1, "first_seq": 0, "n_samples": n, "codec": CODEC_NAME}
    loops = 2000
    seal, opened = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            sealed = seal_chunk(cipher, payload, **row)
        seal.append((time.perf_counter() - start) / loops * 1e6)
        start = time.perf_counter()
        for _ in range(loops):
            open_chunk(cipher, sealed, chunk_id=1, key_id=cipher.key_id, **row)
        opened.append((time.perf_counter() - start) / loops * 1e6)
    return {
        "payload_bytes": len(payload),
        "seal_us": statistics.median(seal),
        "open_us": statistics.median(opened),
    }


def _storage_us(args: argparse.Namespace, cipher: DataCipher | None) -> dict[str, float]:
    """Microseconds per chunk to insert ``args.chunks`` chunks and to read them back."""
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
        db = Database()
        db.init(url, cipher=cipher)
        try:
            upgrade(db.engine)
            with db.session() as session:
                patient = Patient(name="bench")
                session.add(patient)
                session.flush()
                device = create_device(session, f"bench-{time.monotonic_ns()}", str(time.monotonic_ns()))
                device.patient_id = patient.id
                rec, _ = open_recording(
                    session,
                    device,
                    stream_id="s",
                    fs=FS,
                    lead_names=["MLII", "V5"],
                    gain=200.0,
                    started_at=T0,
                )
                patient_id, rec_id = patient.id, rec.id
            n = round(args.seconds * FS)
            blocks = [_samples(i * n, n) for i in range(args.chunks)]
            start = time.perf_counter()
            for lo in range(0, args.chunks, PER_TRANSACTION):
                with db.session() as session:
                    recording = session.get(RecordingSession, rec_id)
                    if recording is None:
                        raise RuntimeError("the benchmark's recording session vanished")
                    for i in range(lo, min(lo + PER_TRANSACTION, args.chunks)):
                        insert_chunk(session, recording, blocks[i], i * n)
            write = time.perf_counter() - start
            end = T0 + timedelta(seconds=args.chunks * args.seconds + 1)
            start = time.perf_counter()
            with db.session() as session:
                read = sum(w.block.n_samples for w in iter_samples(session, patient_id, T0, end))
            read_s = time.perf_counter() - start
            if read != args.chunks * n:
                raise RuntimeError(f"read {read} samples back, stored {args.chunks * n}")
        finally:
            db.dispose()
    return {"write_us": write / args.chunks * 1e6, "read_us": read_s / args.chunks * 1e6}


if __name__ == "__main__":
    sys.exit(main())
