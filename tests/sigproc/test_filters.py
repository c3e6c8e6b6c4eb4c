"""Zero-phase and streaming filters."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from sigproc.filters import FilterSpec, StreamingFilter, bandpass, design_sos, notch, remove_baseline

FS = 360.0


def _tone(freq: float, seconds: float = 10.0, fs: float = FS) -> np.ndarray:
    t = np.arange(round(seconds * fs)) / fs
    return np.sin(2 * np.pi * freq * t)


def _gain(y: np.ndarray) -> float:
    core = y[len(y) // 4 : -len(y) // 4]
    return float(np.sqrt(np.mean(core**2)) / np.sqrt(0.5))


class TestBandpass:
    def test_basic(self) -> None:
        assert _gain(bandpass(_tone(10.0), FS)) == pytest.approx(1.0, abs=0.02)
        assert _gain(bandpass(_tone(0.05), FS)) < 0.05
        assert _gain(bandpass(_tone(120.0), FS)) < 0.05

    def test_edge_cases(self) -> None:
        two = np.column_stack([_tone(10.0), 2 * _tone(10.0)])
        y = bandpass(two, FS)
        assert y.shape == two.shape
        np.testing.assert_allclose(y[:, 1], 2 * y[:, 0], atol=1e-12)
        assert bandpass(np.ones(5), FS).shape == (5,)  # shorter than the padding

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`fs` must be positive"):
            bandpass(_tone(1.0), 0)
        with pytest.raises(ValueError, match="`high_hz` must be below the Nyquist"):
            bandpass(_tone(1.0), FS, 0.5, 200.0)
        with pytest.raises(ValueError, match=r"`low_hz` .* must be below `high_hz`"):
            bandpass(_tone(1.0), FS, 40.0, 10.0)
        with pytest.raises(ValueError, match="`x` contains NaN"):
            bandpass(np.array([1.0, np.nan, 2.0]), FS)
        with pytest.raises(ValueError, match="`x` must have at least 1"):
            bandpass(np.array([]), FS)
        with pytest.raises(ValueError, match="`x` must be 1-D or 2-D"):
            bandpass(np.zeros((3, 3, 3)), FS)
        with pytest.raises(ValueError, match="`kind` must be one of"):
            design_sos("comb", FS)  # type: ignore[arg-type]


class TestBaselineAndNotch:
    def test_basic(self) -> None:
        wander = 2.0 * _tone(0.1) + _tone(15.0)
        assert _gain(remove_baseline(wander, FS)) == pytest.approx(1.0, abs=0.05)
        hum = _tone(50.0) + _tone(10.0)
        assert _gain(notch(hum, FS, 50.0)) == pytest.approx(1.0, abs=0.05)
        assert _gain(notch(_tone(60.0), FS, 60.0)) < 0.05

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`notch_hz` must be below the Nyquist"):
            notch(_tone(1.0, fs=100.0), 100.0, 60.0)
        with pytest.raises(ValueError, match="`order` must be an integer"):
            remove_baseline(_tone(1.0), FS, order=0)


class TestStreamingFilter:
    def test_basic(self) -> None:
        x = np.random.default_rng(1).standard_normal((2000, 2))
        one = StreamingFilter(design_sos("bandpass", FS)).process(x)
        f = StreamingFilter.from_spec(FilterSpec("bandpass"), FS)
        parts = [f.process(x[a:b]) for a, b in ((0, 1), (1, 700), (700, 700), (700, 2000))]
        np.testing.assert_allclose(np.concatenate(parts), one, rtol=0, atol=1e-12)

    @settings(max_examples=40, deadline=None)
    @given(
        cuts=st.lists(st.integers(min_value=0, max_value=1500), max_size=12),
        seed=st.integers(min_value=0, max_value=2**16),
        kind=st.sampled_from(["bandpass", "highpass", "lowpass", "notch"]),
    )
    def test_any_chunking_equals_one_call(self, cuts: list[int], seed: int, kind: str) -> None:
        x = np.random.default_rng(seed).standard_normal(1500)
        x[200:260] = np.nan  # a dropout inside the stream
        spec = FilterSpec(kind)  # type: ignore[arg-type]
        whole = StreamingFilter.from_spec(spec, FS).process(x)
        f = StreamingFilter.from_spec(spec, FS)
        bounds = [0, *sorted(cuts), len(x)]
        chunked = np.concatenate([f.process(x[a:b]) for a, b in itertools.pairwise(bounds)])
        np.testing.assert_array_equal(np.isnan(chunked), np.isnan(whole))
        np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12, equal_nan=True)

    def test_edge_cases(self) -> None:
        f = StreamingFilter(design_sos("highpass", FS))
        y = f.process(np.full(720, 3.0))  # a DC offset starts without a transient
        assert np.max(np.abs(y)) < 1e-9
        x = _tone(10.0, 2.0)
        x[100:200] = np.nan
        y = f.process(x)
        assert np.isnan(y[100:200]).all()
        assert np.isfinite(y[200:]).all()
        assert f.process(np.array([])).shape == (0,)
        f.reset()
        assert np.isfinite(f.process(x[:10])).all()

    def test_exceptions(self) -> None:
        f = StreamingFilter(design_sos("bandpass", FS))
        f.process(np.zeros((10, 2)))
        with pytest.raises(ValueError, match="must have 2 lead"):
            f.process(np.zeros((10, 3)))
        with pytest.raises(ValueError, match="must stay 2-D"):
            f.process(np.zeros(10))
        with pytest.raises(ValueError, match="infinite"):
            f.process(np.array([[np.inf, 0.0]]))
        with pytest.raises(ValueError, match=r"shape \(n_sections, 6\)"):
            StreamingFilter(np.zeros((2, 5)))


class TestStreamingFilterKernel:
    """The one-pass path for NaN-free chunks gives scipy's sosfilt bit for bit."""

    def test_basic(self) -> None:
        x = np.random.default_rng(3).standard_normal((3000, 2)).cumsum(axis=0)
        sos = design_sos("bandpass", FS)
        zi = scipy.signal.sosfilt_zi(sos)[:, :, None] * x[0][None, None, :]  # (sections, 2, leads)
        expected, _ = scipy.signal.sosfilt(sos, x, axis=0, zi=zi)
        f = StreamingFilter(sos)
        got = np.concatenate([f.process(x[i : i + 90]) for i in range(0, len(x), 90)])
        np.testing.assert_array_equal(got, expected)

    def test_edge_cases(self) -> None:
        """A lead that restarts after a NaN chunk starts from its own first sample, the other carries on."""
        x = np.random.default_rng(4).standard_normal((600, 2))
        x[200:300, 1] = np.nan
        sos = design_sos("highpass", FS)
        f = StreamingFilter(sos)
        got = np.concatenate([f.process(x[i : i + 100]) for i in range(0, len(x), 100)])
        for lead, segments in ((0, [(0, 600)]), (1, [(0, 200), (300, 600)])):
            for a, b in segments:
                zi = scipy.signal.sosfilt_zi(sos) * x[a, lead]
                expected, _ = scipy.signal.sosfilt(sos, x[a:b, lead], zi=zi)
                np.testing.assert_array_equal(got[a:b, lead], expected)
        assert np.isnan(got[200:300, 1]).all()
