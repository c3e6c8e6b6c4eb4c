"""Beat datasets and splits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.data import (
    CAUSAL_RR_COLUMNS,
    FALSE_DETECTION,
    BeatSequences,
    PreprocessConfig,
    RecordBeats,
    Split,
    inter_patient_split,
    kfold_splits,
    load_record_beats,
    normalise_windows,
    random_split,
    resample_windows,
)
from sigproc.records import DS1, DS2, PACED_RECORDS


def _fake_record(name: str, labels: list[int], w: int = 10) -> RecordBeats:
    n = len(labels)
    return RecordBeats(
        name,
        np.arange(n * 2 * w, dtype=np.float32).reshape(n, 2, w),
        np.ones((n, 7), dtype=np.float32),
        np.array(labels, dtype=np.int64),
        np.arange(n, dtype=np.int64) * 300,
    )


class TestSplits:
    def test_inter_patient(self) -> None:
        s = inter_patient_split()
        assert set(s.validation) <= set(DS1)
        assert not set(s.train) & set(s.validation)
        assert set(s.test) == set(DS2) - set(PACED_RECORDS)
        assert not set(PACED_RECORDS) & set(s.train + s.validation + s.test)

    def test_round_trip(self) -> None:
        s = kfold_splits(3, seed=4)[2]
        assert Split.from_dict(s.to_dict()) == s
        assert random_split().protocol == "random"

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="must come from DS1"):
            inter_patient_split(("100",))
        with pytest.raises(ValueError, match="n_folds"):
            kfold_splits(1)


class TestBeatSequences:
    def test_basic(self) -> None:
        seqs = BeatSequences([_fake_record("a", [0, 1, 2, 0, 0, 3])], seq_len=3, horizons=(1, 2))
        w, r, y, fut = seqs.batch(np.arange(len(seqs)))
        assert w.shape == (2, 3, 2, 10)
        assert r.shape == (2, 3, 7)
        assert y.tolist() == [[0, 1, 2], [0, 0, 3]]
        assert fut[0].tolist() == [[1, 2], [2, 0], [0, 0]]
        assert fut[1].tolist() == [[0, 3], [3, -1], [-1, -1]]  # past the record end

    def test_reshuffle(self) -> None:
        seqs = BeatSequences(
            [_fake_record("a", [0] * 10), _fake_record("b", [1] * 5)], seq_len=4, horizons=(1,)
        )
        seqs.reshuffle(2)
        assert seqs.starts.tolist() == [0, 2, 6, 10]  # record b (5 beats) fits one sequence
        _, _, y, fut = seqs.batch(np.array([2]))
        assert y.tolist() == [[0, 0, 0, 0]]
        assert fut[0, :, 0].tolist() == [0, 0, 0, -1]  # never reads into the next record

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="seq_len"):
            BeatSequences([_fake_record("a", [0])], seq_len=0, horizons=(1,))


class TestWindows:
    def test_resample(self) -> None:
        t = np.arange(259) / 360.0
        x = np.sin(2 * np.pi * 3 * t)[None, None]
        y = resample_windows(x, 360.0, 180.0, 130)
        assert y.shape == (1, 1, 130)
        t2 = np.arange(130) / 180.0
        assert np.abs(y[0, 0, 5:-5] - np.sin(2 * np.pi * 3 * t2)[5:-5]).max() < 0.02

    def test_normalise(self) -> None:
        x = np.random.default_rng(0).normal(3.0, 2.0, (4, 2, 50))
        z = normalise_windows(x)
        assert np.allclose(z.mean(-1), 0, atol=1e-6)
        assert np.allclose(z.std(-1), 1, atol=1e-5)
        assert np.all(normalise_windows(np.ones((1, 1, 5))) == 0)

    def test_causal_columns(self) -> None:
        assert CAUSAL_RR_COLUMNS == (0, 2, 3, 4, 5)


@pytest.mark.data
class TestLoadRecordBeats:
    def test_basic(self, data_dir: Path) -> None:
        cfg = PreprocessConfig()
        beats = load_record_beats("114", cfg, data_dir=data_dir, use_cache=False)
        assert beats.windows.shape[1:] == (2, cfg.n_window)
        assert beats.rr.shape == (len(beats), 7)
        assert np.isfinite(beats.windows).all()
        # Record 114 stores MLII second; lead 0 must be MLII, whose R waves are upright.
        r = round(cfg.pre_fraction * cfg.n_window)
        assert np.median(beats.windows[beats.labels == 0, 0, r]) > 1.0

    def test_device_rate(self, data_dir: Path) -> None:
        """A 250 Hz device: the record is resampled, windows still come out at the model's rate."""
        cfg = PreprocessConfig()
        native = load_record_beats("100", cfg, data_dir=data_dir)
        dev = load_record_beats("100", cfg, data_dir=data_dir, use_cache=False, device_fs=250.0)
        assert dev.windows.shape == native.windows.shape
        assert np.abs(dev.r_peaks - np.round(native.r_peaks * 250 / 360)).max() <= 1
        assert np.corrcoef(dev.windows[100:110, 0].ravel(), native.windows[100:110, 0].ravel())[0, 1] > 0.95

    def test_detector_peaks(self, data_dir: Path) -> None:
        """Beats where the detector puts them, labelled by the reference beat they match."""
        cfg = PreprocessConfig()
        ref = load_record_beats("119", cfg, data_dir=data_dir, use_cache=False)
        det = load_record_beats("119", cfg, data_dir=data_dir, use_cache=False, peaks="detector")
        n_false = int((det.labels == FALSE_DETECTION).sum())
        # Every reference beat is either matched (once) or counted as missed, per class.
        matched = np.bincount(det.labels[det.labels >= 0], minlength=5)
        assert (matched + det.missed).tolist() == np.bincount(
            ref.labels[ref.labels >= 0], minlength=5
        ).tolist()
        # Record 119 (bigeminy, 444 V beats) is an easy one for the detector.
        assert det.missed.sum() + n_false < 0.01 * len(ref)
        assert matched[2] > 400
        # The windows and RR features are those of the detections.
        assert det.rr.shape == (len(det), 7)
        assert not np.array_equal(det.r_peaks, ref.r_peaks[: len(det)])
        np.testing.assert_array_equal(ref.missed, np.zeros(5))

    def test_concurrent_cache_writes(
        self, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Parallel runs building the same record's cache entry each finish; no temporary file is left."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        cfg = PreprocessConfig()
        together, savez = threading.Barrier(4, timeout=60), np.savez

        def savez_together(*args: Any, **kwargs: Any) -> None:
            together.wait()  # all four writers at once: the race of parallel training runs
            savez(*args, **kwargs)

        monkeypatch.setattr(np, "savez", savez_together)
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda _: load_record_beats("100", cfg, data_dir=data_dir), range(4)))
        assert all(np.array_equal(g.windows, got[0].windows) for g in got)
        files = sorted(p.name for p in tmp_path.rglob("*.npz"))
        assert files == ["100.npz"]
        cached = load_record_beats("100", cfg, data_dir=data_dir)
        assert np.array_equal(cached.labels, got[0].labels)

    def test_noise(self, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """NSTDB noise mixed in: the same beats and labels, noisier windows at a lower SNR, cached apart."""
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        cfg = PreprocessConfig()
        clean = load_record_beats("100", cfg, data_dir=data_dir)
        err = {}
        for snr in (12.0, 0.0):
            noisy = load_record_beats("100", cfg, data_dir=data_dir, noise="ma", snr_db=snr)
            np.testing.assert_array_equal(noisy.labels, clean.labels)
            np.testing.assert_array_equal(noisy.r_peaks, clean.r_peaks)
            err[snr] = float(np.mean((noisy.windows - clean.windows) ** 2))
        assert 0 < err[12.0] < err[0.0]
        assert sorted(p.name for p in tmp_path.rglob("*.npz")) == [
            "100+ma0dB.npz",
            "100+ma12dB.npz",
            "100.npz",
        ]
        again = load_record_beats("100", cfg, data_dir=data_dir, noise="ma", snr_db=0.0, use_cache=False)
        np.testing.assert_array_equal(again.windows, noisy.windows)  # the same stretch of noise every time

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(ValueError, match="`peaks` must be one of"):
            load_record_beats("100", data_dir=data_dir, use_cache=False, peaks="annotations")
        with pytest.raises(ValueError, match="`noise` must be one of ma, bw, em, got 'hum'"):
            load_record_beats("100", data_dir=data_dir, use_cache=False, noise="hum", snr_db=6.0)
        with pytest.raises(ValueError, match="`noise` and `snr_db` go together"):
            load_record_beats("100", data_dir=data_dir, use_cache=False, noise="ma")
        with pytest.raises(ValueError, match="`noise` and `snr_db` go together"):
            load_record_beats("100", data_dir=data_dir, use_cache=False, snr_db=6.0)
