"""Replay devices: records in ADC units, NSTDB noise, registration, the hello they send.

Streaming through a real server (reconnects, resends, restarts) is tested
in ``test_server.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import wfdb
from sqlalchemy import select

from ingest.protocol import Hello, parse_text_frame
from ingest.replay import (
    ReplayDevice,
    ReplayDeviceRevokedError,
    ensure_replay_devices,
    ingest_url,
    is_replay_hello,
    load_replay_signal,
    replay_device_id,
    resolve_records,
    simulated_sensors,
)
from sigproc.records import MITDB_RECORDS
from storage import AuditEntry, Database, Device, Patient, device_for_token, hash_token, utcnow


def parsed_hello(text: str) -> Hello:
    frame = parse_text_frame(text)
    assert isinstance(frame, Hello)
    return frame


def adc(data_dir: Path, record: str, n: int) -> np.ndarray:
    """The record's own ADC values, read independently of the replay code."""
    return np.asarray(wfdb.rdrecord(str(data_dir / "mitdb" / record), sampto=n, physical=False).d_signal)


class TestResolveRecords:
    def test_basic(self) -> None:
        assert resolve_records("100,208") == ["100", "208"]
        assert resolve_records(["208", "100", "208"]) == ["208", "100"]

    def test_edge_cases(self) -> None:
        assert resolve_records("all") == list(MITDB_RECORDS)
        assert resolve_records(" 100 , ") == ["100"]
        assert (
            ingest_url("ws://h:1")
            == ingest_url("ws://h:1/")
            == ingest_url("ws://h:1/ingest")
            == "ws://h:1/ingest"
        )

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="must name MIT-BIH records"):
            resolve_records("100,999")
        with pytest.raises(ValueError, match="must name MIT-BIH records"):
            resolve_records("")


class TestLoadReplaySignal:
    def test_basic(self, data_dir: Path) -> None:
        signal = load_replay_signal("100", data_dir=data_dir, seconds=10)
        assert (signal.fs, signal.leads, signal.gain, signal.baseline) == (360.0, ("MLII", "V5"), 200.0, 1024)
        assert signal.samples.dtype == np.int16
        assert signal.n_samples == 3600
        np.testing.assert_array_equal(signal.samples, adc(data_dir, "100", 3600))
        assert signal.beats.size > 5
        assert signal.noise is None

    def test_edge_cases(self, data_dir: Path) -> None:
        """A later segment matches the record there; noise changes samples, but not the SNR asked for."""
        later = load_replay_signal("208", data_dir=data_dir, start_s=1.0, seconds=2.0)
        np.testing.assert_array_equal(later.samples, adc(data_dir, "208", 1080)[360:])
        clean = load_replay_signal("100", data_dir=data_dir, seconds=20)
        noisy = load_replay_signal("100", data_dir=data_dir, seconds=20, noise="ma", snr_db=6.0)
        assert (noisy.noise, noisy.snr_db) == ("ma", 6.0)
        x = clean.samples[:, 0] / clean.gain
        n = noisy.samples[:, 0] / noisy.gain - x
        half = 18
        pp = np.median([np.ptp(x[b - half : b + half + 1]) for b in clean.beats if half <= b < x.size - half])
        snr = 10 * np.log10(pp**2 / 8 / np.var(n))
        assert snr == pytest.approx(6.0, abs=0.1)  # quantisation to ADC counts moves it a little

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(ValueError, match="`noise` must be one of ma, bw"):
            load_replay_signal("100", data_dir=data_dir, seconds=1, noise="em")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="`start_s` must be >= 0"):
            load_replay_signal("100", data_dir=data_dir, start_s=-1)


class TestEnsureReplayDevices:
    def test_basic(self, sqlite_db: Database) -> None:
        tokens = ensure_replay_devices(sqlite_db, ["100", "208"])
        with sqlite_db.session() as session:
            device = device_for_token(session, tokens["100"])
            assert device is not None
            assert device.device_uid == replay_device_id("100") == "replay-mitdb-100"
            assert device.token_hash == hash_token(tokens["100"]) != tokens["100"]
            patient = session.get(Patient, device.patient_id)
            assert patient is not None
            assert patient.name == "MIT-BIH 100 (replay)"
            actions = session.scalars(select(AuditEntry.action)).all()
            assert actions == ["device.register", "device.register"]

    def test_edge_cases(self, sqlite_db: Database) -> None:
        """A second call keeps the device and patient and rotates the token."""
        first = ensure_replay_devices(sqlite_db, ["100"])["100"]
        second = ensure_replay_devices(sqlite_db, ["100"])["100"]
        assert first != second
        with sqlite_db.session() as session:
            assert device_for_token(session, first) is None
            assert device_for_token(session, second) is not None
            assert (
                len(session.scalars(select(Device)).all()) == len(session.scalars(select(Patient)).all()) == 1
            )

    def test_exceptions(self, sqlite_db: Database) -> None:
        ensure_replay_devices(sqlite_db, ["100"])
        with sqlite_db.session() as session:
            device = session.scalar(select(Device))
            assert device is not None
            device.revoked_at = utcnow()
        with pytest.raises(ReplayDeviceRevokedError, match="revoked"):
            ensure_replay_devices(sqlite_db, ["100"])


class TestReplayDevice:
    def test_basic(self, data_dir: Path) -> None:
        """The hello describes the record in ADC units and labels the stream as a replay."""
        signal = load_replay_signal("100", data_dir=data_dir, seconds=1)
        device = ReplayDevice(signal, "ws://127.0.0.1:1/ingest", "tok", stream_id="s-1")
        text = device.hello()
        hello = parsed_hello(text)
        assert is_replay_hello(hello)
        assert simulated_sensors(hello) == {"spo2", "pulse", "temperature"}
        raw = json.loads(text)
        assert (raw["replay"], raw["record"], raw["device_id"], raw["gain"], raw["baseline"]) == (
            True,
            "mitdb/100",
            "replay-mitdb-100",
            200.0,
            1024,
        )
        assert (device.frame_samples, device.n_frames) == (90, 4)

    def test_edge_cases(self, data_dir: Path) -> None:
        signal = load_replay_signal("100", data_dir=data_dir, seconds=1)
        device = ReplayDevice(signal, "ws://x/ingest", "tok", vitals_every_s=0, frame_s=0.3)
        assert simulated_sensors(parsed_hello(device.hello())) == frozenset()
        assert device.n_frames == 4
        assert device.frame_samples == 108

    def test_exceptions(self, data_dir: Path) -> None:
        signal = load_replay_signal("100", data_dir=data_dir, seconds=1)
        with pytest.raises(ValueError, match="`speed` must be >= 0"):
            ReplayDevice(signal, "ws://x/ingest", "tok", speed=-1)
        with pytest.raises(ValueError, match="`max_buffer_frames` >= `window_frames`"):
            ReplayDevice(signal, "ws://x/ingest", "tok", window_frames=10, max_buffer_frames=5)
