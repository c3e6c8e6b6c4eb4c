"""Tests of sigproc.quality: artifacts are flagged, clean strips pass."""

from __future__ import annotations

import numpy as np
import pytest

from sigproc.quality import (
    Artifact,
    QualityConfig,
    assess_quality,
    best_lead,
    gate_peaks,
    merge_lead_peaks,
)
from sigproc.synthetic import synthetic_ecg

FS = 360.0
WIN = 1440  # samples in the default 4-s window


def _strip(seed: int = 0, duration_s: float = 24.0) -> np.ndarray:
    return synthetic_ecg(duration_s, FS, noise_mv=0.02, baseline_mv=0.1, seed=seed).signal


class TestAssessQuality:
    def test_basic(self) -> None:
        rep = assess_quality(_strip(), FS)
        assert rep.sqi.shape == (6, 1)
        assert rep.readable().all()
        assert (rep.sqi > 0.9).all()
        assert (rep.flags == 0).all()
        assert rep.readable_fraction() == 1.0
        assert rep.unreadable_intervals().shape == (0, 2)

    @pytest.mark.parametrize(
        ("damage", "flag"),
        [
            ("flat", Artifact.FLAT),
            ("clip", Artifact.CLIPPED),
            ("spike", Artifact.JUMP),
            ("big", Artifact.SPIKE),
            ("gap", Artifact.GAP),
        ],
    )
    def test_artifacts_flagged(self, damage: str, flag: Artifact) -> None:
        x = _strip(1)
        w = slice(2 * WIN, 3 * WIN)
        if damage == "flat":
            x[w] = 0.41
        elif damage == "clip":
            x[w] = np.clip(3 * x[w], -0.4, 0.9)
        elif damage == "spike":
            x[2 * WIN + 700 : 2 * WIN + 704] += 4.0  # 11-ms motion spike
        elif damage == "big":
            x[w] += np.linspace(0.0, 8.0, WIN)
        else:
            x[w] = np.nan
        rep = assess_quality(x, FS)
        assert rep.flags[2, 0] & flag
        assert rep.sqi[2, 0] == 0.0
        assert rep.readable().tolist() == [True, True, False, True, True, True]
        assert rep.unreadable_intervals().tolist() == [[2 * WIN, 3 * WIN]]

    def test_soft_scores(self) -> None:
        x = _strip(2)
        rng = np.random.default_rng(0)
        x[WIN : 2 * WIN] += 0.3 * rng.standard_normal(WIN)  # heavy broadband noise
        rep = assess_quality(x, FS)
        assert rep.sqi[1, 0] < 0.5
        assert rep.flags[1, 0] & (Artifact.HF_NOISE | Artifact.LOW_KURTOSIS)
        assert rep.sqi[0, 0] > 0.9

    def test_edge_cases(self) -> None:
        # A short last window, a custom window length, several leads.
        x = _strip(3, duration_s=10.0)
        rep = assess_quality(x, FS, QualityConfig(window_s=3.0))
        assert rep.starts.tolist() == [0, 1080, 2160, 3240]
        two = np.stack([x, x * 0 + 0.2], axis=1)
        rep2 = assess_quality(two, FS)
        assert rep2.sqi.shape == (3, 2)
        assert (rep2.sqi[:, 1] == 0).all()
        assert rep2.readable().all()  # one good lead is enough
        assert best_lead(rep2).tolist() == [0, 0, 0]

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`fs`"):
            assess_quality(np.zeros(100), 0.0)
        with pytest.raises(ValueError, match="`x` must be 1-D or 2-D"):
            assess_quality(np.zeros((2, 2, 2)), FS)
        with pytest.raises(ValueError, match="`jump_mv`"):
            assess_quality(np.zeros(100), FS, QualityConfig(jump_mv=-1.0))


class TestLeadsAndGating:
    def test_basic(self) -> None:
        ecg = synthetic_ecg(24.0, FS, n_leads=2, lead_gains=[1.0, 0.8], noise_mv=0.01, seed=4)
        x = ecg.signal.copy()
        x[: 3 * WIN, 0] = 0.0  # lead 0 off for 12 s
        rep = assess_quality(x, FS)
        assert best_lead(rep).tolist() == [1, 1, 1, 0, 0, 0]
        peaks_0 = ecg.r_peaks[ecg.r_peaks >= 3 * WIN]  # lead 0 sees beats only when on
        peaks_1 = ecg.r_peaks + 1
        merged = merge_lead_peaks([peaks_0, peaks_1], rep)
        assert len(merged) == len(ecg.r_peaks)
        assert np.abs(merged - ecg.r_peaks).max() <= 1

    def test_gate_peaks(self) -> None:
        x = _strip(5)
        x[WIN : 2 * WIN] = 0.0
        rep = assess_quality(x, FS)
        peaks = np.array([100, WIN + 10, 2 * WIN + 5])
        assert gate_peaks(peaks, rep).tolist() == [100, 2 * WIN + 5]
        assert gate_peaks(np.empty(0, dtype=np.int64), rep).size == 0

    def test_exceptions(self) -> None:
        rep = assess_quality(_strip(6), FS)
        with pytest.raises(ValueError, match="`peaks` must lie in"):
            gate_peaks([-1], rep)
        with pytest.raises(ValueError, match="`peaks_per_lead` must hold one array per lead"):
            merge_lead_peaks([[1], [2]], rep)
