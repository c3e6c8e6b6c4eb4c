"""Normalisation, the synthetic ECG generator and the shared argument checks."""

from __future__ import annotations

import numpy as np
import pytest

from sigproc._checks import check_fs
from sigproc.normalize import normalize
from sigproc.synthetic import synthetic_ecg


class TestNormalize:
    def test_basic(self) -> None:
        x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 2, 100))
        z = normalize(x, "zscore")
        np.testing.assert_allclose(z.mean(axis=-1), 0.0, atol=1e-12)
        np.testing.assert_allclose(z.std(axis=-1), 1.0, atol=1e-12)
        m = normalize(x, "min-max")
        assert m.min() == pytest.approx(0.0)
        assert m.max() == pytest.approx(1.0)
        r = normalize(x[0, 0], "robust")
        assert np.median(r) == pytest.approx(0.0, abs=1e-12)

    def test_robust_resists_a_spike(self) -> None:
        x = np.random.default_rng(1).standard_normal(1000)
        spiked = x.copy()
        spiked[500] = 1000.0
        base = normalize(x, "robust")
        np.testing.assert_allclose(np.delete(normalize(spiked, "mad"), 500), np.delete(base, 500), atol=0.01)
        assert normalize(spiked, "zscore").std() == pytest.approx(1.0)

    def test_edge_cases(self) -> None:
        assert np.all(normalize(np.full(10, 5.0), "zscore") == 0.0)  # flat: zeros, not NaN
        assert normalize(np.zeros((3, 10)), "robust", axis=0).shape == (3, 10)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`method` must be one of"):
            normalize([1.0, 2.0], "l2")
        with pytest.raises(ValueError, match="NaN"):
            normalize([1.0, np.nan], "zscore")
        with pytest.raises(ValueError, match="at least 1 sample"):
            normalize([], "zscore")


class TestSynthetic:
    def test_basic(self) -> None:
        ecg = synthetic_ecg(60.0, 250.0, heart_rate_bpm=75, seed=0)
        assert ecg.signal.shape == (15000,)
        assert abs(len(ecg.r_peaks) - 75) <= 3
        assert np.all(ecg.signal[ecg.r_peaks] > 1.0)

    def test_edge_cases(self) -> None:
        a = synthetic_ecg(10.0, seed=5, noise_mv=0.1)
        b = synthetic_ecg(10.0, seed=5, noise_mv=0.1)
        np.testing.assert_array_equal(a.signal, b.signal)
        pvc = synthetic_ecg(30.0, pvc_every=4, n_leads=3)
        assert pvc.signal.shape[1] == 3
        assert set(pvc.labels) == {"N", "V"}
        assert (pvc.labels == "V").sum() >= 5

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`heart_rate_bpm` must be between"):
            synthetic_ecg(10.0, heart_rate_bpm=400)
        with pytest.raises(ValueError, match="`n_leads` must be >= 1"):
            synthetic_ecg(10.0, n_leads=0)


class TestCheckFs:
    @pytest.mark.parametrize(
        ("fs", "message"),
        [
            (0, "positive"),
            (-360, "positive"),
            (float("nan"), "positive"),
            ("abc", "number"),
            (1e9, "between"),
        ],
    )
    def test_exceptions(self, fs: object, message: str) -> None:
        with pytest.raises(ValueError, match=f"`fs` must be .*{message}"):
            check_fs(fs)  # type: ignore[arg-type]

    def test_basic(self) -> None:
        assert check_fs(360) == 360.0
