"""Tests of sigproc.denoise: each method improves SNR, streaming equals one-shot."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from sigproc.denoise import (
    DENOISE_METHODS,
    EMDConfig,
    StreamingDenoiser,
    WindowConfig,
    denoise,
)
from sigproc.filters import bandpass
from sigproc.synthetic import synthetic_ecg

FS = 360.0
CANONICAL = ("bandpass", "wavelet", "emd", "emd+wavelet")


def _snr_db(y: np.ndarray, ref: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(ref**2) / np.sum((y - ref) ** 2)))


def _mixture(seed: int, duration_s: float = 40.0, noise_mv: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic ECG plus muscle-like noise (white noise band-limited to 5-100 Hz) and wander."""
    clean = synthetic_ecg(duration_s, FS, heart_rate_bpm=72, seed=seed).signal
    rng = np.random.default_rng(seed + 100)
    sos = scipy.signal.butter(4, [5.0, 100.0], btype="bandpass", fs=FS, output="sos")
    emg = scipy.signal.sosfilt(sos, rng.standard_normal(clean.size))
    emg *= noise_mv / emg.std()
    t = np.arange(clean.size) / FS
    wander = 0.3 * np.sin(2 * np.pi * 0.2 * t)
    return clean + emg + wander, bandpass(clean, FS)


class TestDenoise:
    @pytest.mark.parametrize("method", CANONICAL)
    @pytest.mark.parametrize("seed", [0, 1])
    def test_basic(self, method: str, seed: int) -> None:
        x, ref = _mixture(seed)
        y = denoise(x, FS, method)
        assert y.shape == x.shape
        assert np.isfinite(y).all()
        assert _snr_db(y, ref) > _snr_db(x, ref) + 6.0

    def test_emd_beats_bandpass_on_muscle_noise(self) -> None:
        x, ref = _mixture(2, noise_mv=0.2)
        gain = _snr_db(denoise(x, FS, "emd"), ref) - _snr_db(denoise(x, FS, "bandpass"), ref)
        assert gain > 1.0

    def test_qrs_trimming_removes_noise_on_the_complex(self) -> None:
        x, ref = _mixture(6, noise_mv=0.2)
        untouched = denoise(x, FS, "emd", emd=EMDConfig(qrs_threshold=0.0))
        assert _snr_db(denoise(x, FS, "emd"), ref) > _snr_db(untouched, ref)

    def test_clean_signal_passes_emd_unchanged(self) -> None:
        # Below the noise floor the gate leaves the band-passed ECG alone.
        x = synthetic_ecg(30.0, FS, seed=3).signal
        y_emd = denoise(x, FS, "emd")
        y_bp = denoise(x, FS, "bandpass")
        assert _snr_db(y_emd, y_bp) > 40.0

    def test_qrs_amplitude_kept(self) -> None:
        x, ref = _mixture(4)
        ecg = synthetic_ecg(40.0, FS, heart_rate_bpm=72, seed=4)
        y = denoise(x, FS, "emd")
        inner = ecg.r_peaks[(ecg.r_peaks > 400) & (ecg.r_peaks < len(x) - 400)]
        ratio = y[inner] / ref[inner]
        assert np.median(ratio) == pytest.approx(1.0, abs=0.1)

    def test_edge_cases(self) -> None:
        x, _ = _mixture(5, duration_s=30.0)
        x[3000:3400] = np.nan
        x[7000] = np.nan
        for method in CANONICAL:
            y = denoise(x, FS, method)
            assert np.array_equal(np.isnan(y), np.isnan(x)), method
        two = np.stack([x, np.nan_to_num(x)], axis=1)
        y2 = denoise(two, FS, "emd")
        assert y2.shape == two.shape
        assert np.array_equal(y2[:, 0], denoise(x, FS, "emd"), equal_nan=True)
        # Aliases and case.
        assert np.array_equal(denoise(x, FS, "BP"), denoise(x, FS, "bandpass"), equal_nan=True)
        assert set(DENOISE_METHODS) >= set(CANONICAL)
        # Very short input survives.
        assert denoise(np.ones(10), FS, "emd").shape == (10,)

    def test_exceptions(self) -> None:
        x = np.zeros(1000)
        with pytest.raises(ValueError, match=r"`method` must be one of .*'emd'"):
            denoise(x, FS, "ica")
        with pytest.raises(ValueError, match="`fs` must be above 80"):
            denoise(x, 60.0, "emd")
        with pytest.raises(ValueError, match="`fs`"):
            denoise(x, -1.0)
        bad = x.copy()
        bad[3] = np.inf
        with pytest.raises(ValueError, match="`x` contains infinite"):
            denoise(bad, FS)
        with pytest.raises(ValueError, match="`x` must be 1-D or 2-D"):
            denoise(np.zeros((4, 4, 4)), FS)
        with pytest.raises(ValueError, match="`window`"):
            denoise(x, FS, window=WindowConfig(window_s=1.0, margin_s=0.5, fade_s=0.5))


class TestStreamingDenoiser:
    @pytest.mark.parametrize("method", ["wavelet", "emd", "emd+wavelet"])
    def test_basic(self, method: str) -> None:
        x, _ = _mixture(6, duration_s=45.0)
        x[5000:5100] = np.nan
        one_shot = denoise(x, FS, method)
        rng = np.random.default_rng(0)
        for n_cuts in (3, 40):
            cuts = np.sort(rng.integers(0, len(x), n_cuts))
            den = StreamingDenoiser(FS, method)
            parts = [den.process(part) for part in np.split(x, cuts)]
            y = np.concatenate([*parts, den.flush()])
            assert np.array_equal(y, one_shot, equal_nan=True)

    def test_latency_is_bounded(self) -> None:
        x = synthetic_ecg(40.0, FS, seed=7).signal
        den = StreamingDenoiser(FS, "emd")
        fed = out = 0
        lag = []
        for part in np.array_split(x, 80):
            fed += len(part)
            out += len(den.process(part))
            lag.append(fed - out)
        assert max(lag) <= den.latency_s * FS
        assert den.latency_s == pytest.approx(WindowConfig().max_latency_s())

    def test_bandpass_stream_is_close(self) -> None:
        x, _ = _mixture(8, duration_s=30.0)
        den = StreamingDenoiser(FS, "bandpass")
        y = np.concatenate([den.process(x[:4000]), den.process(x[4000:]), den.flush()])
        assert _snr_db(y, denoise(x, FS, "bandpass")) > 40.0

    def test_edge_cases(self) -> None:
        x = synthetic_ecg(20.0, FS, n_leads=2, seed=9).signal
        den = StreamingDenoiser(FS, "emd", n_leads=2)
        y = np.concatenate([den.process(x[:1234]), den.process(x[1234:]), den.flush()])
        assert np.array_equal(y, denoise(x, FS, "emd"))
        assert den.process(np.empty((0, 2))).shape == (0, 2)
        cfg = EMDConfig(sift_iterations=1, max_imf=4, spline="akima")
        z = denoise(x[:, 0], FS, "emd", emd=cfg)
        assert np.isfinite(z).all()

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`n_leads`"):
            StreamingDenoiser(FS, n_leads=0)
        with pytest.raises(ValueError, match="`method` must be one of"):
            StreamingDenoiser(FS, "median")
        den = StreamingDenoiser(FS, n_leads=2)
        with pytest.raises(ValueError, match="`chunk` must be 1-D or of shape"):
            den.process(np.zeros((10, 3)))
        with pytest.raises(ValueError, match="`chunk` must have 2 columns"):
            den.process(np.zeros(10))
        one = StreamingDenoiser(FS)
        one.process(np.zeros(10))
        with pytest.raises(ValueError, match="`chunk` must stay 1-D"):
            one.process(np.zeros((10, 1)))
        with pytest.raises(ValueError, match="infinite"):
            one.process(np.array([1.0, np.inf]))
