"""Tests of sigproc.peaks: offline and streaming R-peak detection."""

from __future__ import annotations

import functools
import importlib
import itertools
from pathlib import Path

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from sigproc._checks import SignalWarning
from sigproc.peaks import StreamingPeakDetector, detect_r_peaks
from sigproc.records import load_record
from sigproc.scoring import match_beats
from sigproc.synthetic import synthetic_ecg


def _stream(det: StreamingPeakDetector, x: NDArray[np.float64], cuts: list[int]) -> NDArray[np.int64]:
    bounds = [0, *sorted(set(cuts)), len(x)]
    found = [det.process(x[lo:hi]) for lo, hi in itertools.pairwise(bounds)]
    return np.concatenate([*found, det.flush()])


@functools.cache
def _strip() -> NDArray[np.float64]:
    """30 s with PVCs, noise and baseline wander, shared by the property test."""
    return synthetic_ecg(
        30.0, 250.0, heart_rate_bpm=80, pvc_every=6, noise_mv=0.05, baseline_mv=0.3, seed=11
    ).signal


@functools.cache
def _bursty() -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """60 s at 60 bpm in 5-15 Hz noise, with 10 Hz bursts (not QRS-shaped) mid-interval."""
    fs = 360.0
    ecg = synthetic_ecg(60.0, fs, heart_rate_bpm=60, seed=2)
    noise = scipy.signal.sosfilt(
        scipy.signal.butter(2, [5.0, 15.0], btype="bandpass", fs=fs, output="sos"),
        np.random.default_rng(2).standard_normal(ecg.signal.size),
    )
    x = ecg.signal + 0.08 * noise / noise.std()
    t = np.arange(round(0.3 * fs)) / fs
    burst = 0.2 * np.sin(2 * np.pi * 10.0 * t) * np.hanning(t.size)
    for r in ecg.r_peaks[2:-1:2]:
        x[r + round(0.5 * fs) : r + round(0.5 * fs) + t.size] += burst
    return x, ecg.r_peaks


class TestDetectRPeaks:
    def test_basic(self) -> None:
        ecg = synthetic_ecg(60.0, 360.0, heart_rate_bpm=70, noise_mv=0.03, baseline_mv=0.2, seed=3)
        peaks = detect_r_peaks(ecg.signal, ecg.fs)
        assert peaks.dtype == np.int64
        assert np.all(np.diff(peaks) > 0)
        result = match_beats(ecg.r_peaks, peaks, ecg.fs)
        assert (result.fn, result.fp) == (0, 0)
        assert np.abs(result.errors).max() <= 2

    @pytest.mark.parametrize("fs", [60.0, 100.0, 128.0, 250.0, 500.0, 1000.0])
    def test_any_sampling_rate(self, fs: float) -> None:
        ecg = synthetic_ecg(40.0, fs, heart_rate_bpm=90, pvc_every=7, noise_mv=0.02, seed=4)
        result = match_beats(ecg.r_peaks, detect_r_peaks(ecg.signal, fs), fs)
        assert (result.fn, result.fp) == (0, 0)
        assert np.abs(result.errors).max() <= max(1.0, 0.010 * fs)  # 10 ms, or a sample

    @pytest.mark.parametrize(("bpm", "pvc_every"), [(40.0, 5), (150.0, 5), (180.0, 5), (220.0, 0)])
    def test_heart_rates_and_pvcs(self, bpm: float, pvc_every: int) -> None:
        ecg = synthetic_ecg(
            60.0, 360.0, heart_rate_bpm=bpm, pvc_every=pvc_every, hrv=0.03, baseline_mv=0.5, seed=5
        )
        result = match_beats(ecg.r_peaks, detect_r_peaks(ecg.signal, ecg.fs), ecg.fs)
        assert (result.fn, result.fp) == (0, 0)

    def test_scale_invariance(self) -> None:
        x = synthetic_ecg(30.0, 360.0, noise_mv=0.05, seed=6).signal
        # Powers of two scale every intermediate exactly.
        np.testing.assert_array_equal(detect_r_peaks(x, 360.0), detect_r_peaks(4.0 * x + 1.0, 360.0))

    def test_multi_lead(self) -> None:
        ecg = synthetic_ecg(60.0, 360.0, n_leads=3, lead_gains=[1.0, 0.02, -3.0], noise_mv=0.02, seed=7)
        x = ecg.signal.copy()
        x[:, 1] += np.random.default_rng(0).normal(0.0, 0.2, len(x))  # one lead is all noise
        result = match_beats(ecg.r_peaks, detect_r_peaks(x, ecg.fs), ecg.fs)
        assert (result.fn, result.fp) == (0, 0)
        assert np.abs(result.errors).max() <= 3

    def test_one_column_is_one_lead(self) -> None:
        x = synthetic_ecg(20.0, 360.0, seed=8).signal
        np.testing.assert_array_equal(detect_r_peaks(x, 360.0), detect_r_peaks(x[:, None], 360.0))

    def test_pause_is_neither_missed_nor_filled(self) -> None:
        fs = 360.0
        before = synthetic_ecg(20.0, fs, heart_rate_bpm=75, seed=9)
        after = synthetic_ecg(20.0, fs, heart_rate_bpm=75, seed=10)
        pause = np.random.default_rng(1).normal(0.0, 0.01, int(4.0 * fs))  # 4 s sinus arrest
        x = np.concatenate([before.signal, pause, after.signal])
        truth = np.concatenate([before.r_peaks, after.r_peaks + len(before.signal) + len(pause)])
        result = match_beats(truth, detect_r_peaks(x, fs), fs)
        assert (result.fn, result.fp) == (0, 0)

    def test_noise_unlike_beats_is_rejected(self, monkeypatch: pytest.MonkeyPatch) -> None:
        x, truth = _bursty()
        checked = match_beats(truth, detect_r_peaks(x, 360.0), 360.0)
        monkeypatch.setattr(importlib.import_module("sigproc.peaks"), "_MIN_CORR", -2.0)
        unchecked = match_beats(truth, detect_r_peaks(x, 360.0), 360.0)
        assert checked.fn == 0
        assert checked.fp < unchecked.fp

    def test_edge_cases(self) -> None:
        with pytest.warns(SignalWarning, match="flat"):
            assert detect_r_peaks(np.zeros(1), 360.0).size == 0
        short = synthetic_ecg(1.0, 360.0, seed=1).signal
        assert detect_r_peaks(short, 360.0).size <= 1
        noise = np.random.default_rng(2).normal(0.0, 1.0, 3600)
        assert detect_r_peaks(noise, 360.0).dtype == np.int64

    def test_flat_line_warns(self) -> None:
        with pytest.warns(SignalWarning, match="flat line"):
            peaks = detect_r_peaks(np.full(3600, 0.7), 360.0)
        assert peaks.size == 0

    @pytest.mark.parametrize(
        ("x", "fs", "kwargs", "match"),
        [
            (np.empty(0), 360.0, {}, "at least 1 sample"),
            (np.array([0.0, np.nan, 1.0]), 360.0, {}, "NaN"),
            (np.array([0.0, np.inf, 1.0]), 360.0, {}, "infinite"),
            (np.zeros((10, 2, 2)), 360.0, {}, "1-D or 2-D"),
            (np.zeros((10, 0)), 360.0, {}, "at least one lead"),
            (np.ones(100), 0.0, {}, "`fs` must be positive"),
            (np.ones(100), -360.0, {}, "`fs` must be positive"),
            (np.ones(100), 1e9, {}, "`fs` must be between"),
            (np.ones(100), 20.0, {}, "`fs` must be at least 50"),
            (np.ones(100), 360.0, {"band_hz": (15.0, 5.0)}, "`band_hz`"),
            (np.ones(100), 360.0, {"threshold": 1.5}, "`threshold`"),
            (np.ones(100), 360.0, {"refractory_s": 2.0}, "`refractory_s`"),
            (np.ones(100), 360.0, {"integration_s": 0.0}, "`integration_s`"),
            (np.ones(100), 360.0, {"max_searchback_s": 0.1}, "`max_searchback_s`"),
            (np.ones(100), 360.0, {"refine_band_hz": (50.0, 40.0)}, "`refine_band_hz`"),
            (np.ones(100), 360.0, {"refine_band_hz": 3.0}, "`refine_band_hz`"),
        ],
    )
    def test_exceptions(
        self, x: NDArray[np.float64], fs: float, kwargs: dict[str, object], match: str
    ) -> None:
        with pytest.raises(ValueError, match=match):
            detect_r_peaks(x, fs, **kwargs)  # type: ignore[arg-type]


class TestStreamingPeakDetector:
    def test_basic(self) -> None:
        x = _strip()
        det = StreamingPeakDetector(250.0)
        streamed = _stream(det, x, list(range(0, len(x), 100)))
        np.testing.assert_array_equal(streamed, detect_r_peaks(x, 250.0))
        assert det.n_samples == 0  # flush starts a new stream

    @settings(max_examples=25, deadline=None)
    @given(st.lists(st.integers(min_value=1, max_value=len(_strip()) - 1), max_size=40))
    def test_chunking_does_not_matter(self, cuts: list[int]) -> None:
        x = _strip()
        streamed = _stream(StreamingPeakDetector(250.0), x, cuts)
        np.testing.assert_array_equal(streamed, detect_r_peaks(x, 250.0))

    def test_multi_lead_matches_offline(self) -> None:
        ecg = synthetic_ecg(30.0, 360.0, n_leads=2, noise_mv=0.03, pvc_every=4, seed=12)
        streamed = _stream(StreamingPeakDetector(360.0, n_leads=2), ecg.signal, [1, 77, 1000, 5000, 5001])
        np.testing.assert_array_equal(streamed, detect_r_peaks(ecg.signal, 360.0))

    def test_noisy_chunking_does_not_matter(self) -> None:
        # The shape check in noise reads buffered samples: chunking must not change it.
        x, _ = _bursty()
        streamed = _stream(StreamingPeakDetector(360.0), x, [1, 359, 2000, 2001, 9000, 15000])
        np.testing.assert_array_equal(streamed, detect_r_peaks(x, 360.0))
        tiny = _stream(StreamingPeakDetector(360.0), x, list(range(0, len(x), 7)))
        np.testing.assert_array_equal(tiny, detect_r_peaks(x, 360.0))

    def test_bounded_delay(self) -> None:
        fs = 250.0
        x = _strip()
        det = StreamingPeakDetector(fs)
        assert 0.2 < det.max_delay_s < 3.5
        step = 5
        for start in range(0, len(x), step):
            newest = min(start + step, len(x)) - 1
            for peak in det.process(x[start : start + step]):
                assert (newest - peak) / fs <= det.max_delay_s

    def test_nan_gap(self) -> None:
        fs = 360.0
        ecg = synthetic_ecg(40.0, fs, heart_rate_bpm=72, noise_mv=0.02, seed=13)
        x = ecg.signal.copy()
        gap = slice(int(15 * fs), int(20 * fs))
        x[gap] = np.nan
        found = _stream(StreamingPeakDetector(fs), x, list(range(0, len(x), 333)))
        assert not np.any((found >= gap.start) & (found < gap.stop))
        # Every beat at least one beat away from the gap is found, and nothing else.
        margin = int(1.0 * fs)
        away = (ecg.r_peaks < gap.start - margin) | (ecg.r_peaks >= gap.stop + margin)
        result = match_beats(ecg.r_peaks[away], found, fs)
        assert result.fn == 0
        assert result.fp <= 2  # at most the beats next to the gap edges

    def test_edge_cases(self) -> None:
        det = StreamingPeakDetector(360.0)
        assert det.process(np.empty(0)).size == 0
        assert det.process(np.full(1000, np.nan)).size == 0
        assert det.process(np.zeros(3000)).size == 0  # flat: nothing, no warning
        assert det.flush().size == 0
        assert det.flush().size == 0  # flushing twice is harmless
        two = StreamingPeakDetector(360.0, n_leads=2)
        assert two.process(np.zeros((10, 2))).size == 0

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"fs": 0.0}, "`fs`"),
            ({"fs": 360.0, "n_leads": 0}, "`n_leads`"),
            ({"fs": 360.0, "n_leads": 1.5}, "`n_leads`"),
            ({"fs": 360.0, "threshold": 0.0}, "`threshold`"),
        ],
    )
    def test_exceptions(self, kwargs: dict[str, float], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            StreamingPeakDetector(**kwargs)  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        ("n_leads", "chunk", "match"),
        [
            (1, np.zeros((10, 2)), "shape"),
            (2, np.zeros(10), "shape"),
            (1, np.array([0.0, np.inf]), "infinite"),
            (1, np.zeros((2, 2, 2)), "shape"),
            (1, ["a", "b"], "numeric"),
        ],
    )
    def test_bad_chunks(self, n_leads: int, chunk: object, match: str) -> None:
        det = StreamingPeakDetector(360.0, n_leads=n_leads)
        with pytest.raises(ValueError, match=match):
            det.process(chunk)  # type: ignore[arg-type]


@pytest.mark.data
class TestRealRecords:
    @pytest.mark.parametrize("record", ["100", "208", "119"])
    def test_mitdb_accuracy(self, record: str, data_dir: Path) -> None:
        rec = load_record(record, data_dir=data_dir, channels=[0])
        assert rec.annotations is not None
        reference = rec.annotations.beats().sample
        result = match_beats(reference, detect_r_peaks(rec.signal[:, 0], rec.fs), rec.fs)
        stats = result.stats()
        assert stats["se"] >= 99.5
        assert stats["ppv"] >= 99.5
        assert stats["mean_abs_error_ms"] <= 10.0

    @pytest.mark.parametrize("record", ["105", "203"])
    def test_streaming_agrees_with_offline(self, record: str, data_dir: Path) -> None:
        rec = load_record(record, data_dir=data_dir, channels=[0], sampto=360 * 600, annotations=False)
        x = rec.signal[:, 0]
        offline = detect_r_peaks(x, rec.fs)
        cuts = np.cumsum(np.random.default_rng(int(record)).integers(1, 900, size=len(x) // 400))
        streamed = _stream(StreamingPeakDetector(rec.fs), x, [int(c) for c in cuts if c < len(x)])
        agreement = match_beats(offline, streamed, rec.fs, window_s=1.0 / rec.fs)
        assert agreement.tp / len(offline) >= 0.999
        np.testing.assert_array_equal(streamed, offline)  # by construction: one engine
