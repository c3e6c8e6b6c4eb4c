"""Beat windows (eq. 10) and RR features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sigproc.beats import RR_FEATURE_NAMES, StreamingRRFeatures, beat_windows, rr_features
from sigproc.synthetic import synthetic_ecg


class TestBeatWindows:
    def test_basic(self) -> None:
        ecg = synthetic_ecg(10.0, 360.0, n_leads=2, seed=3)
        bw = beat_windows(ecg.signal, ecg.r_peaks, 360.0, window_s=0.5)
        assert bw.windows.shape == (len(ecg.r_peaks), 2, 180)
        # eq. 10: the R peak sits in the middle of its window, on every lead.
        np.testing.assert_array_equal(bw.windows[:, :, 90], ecg.signal[ecg.r_peaks])
        assert bw.complete.all()

    def test_edge_cases(self) -> None:
        x = np.arange(100.0)
        bw = beat_windows(x, [0, 99], 100.0, window_s=0.2, pre_fraction=0.25)
        assert bw.windows.shape == (2, 1, 20)
        assert not bw.complete.any()
        assert bw.windows[0, 0, 0] == 0.0
        assert bw.windows[1, 0, -1] == 99.0
        assert bw.start.tolist() == [-5, 94]
        assert beat_windows(x, np.array([], dtype=int), 100.0).windows.shape == (0, 1, 72)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`r_peaks` must lie in"):
            beat_windows(np.zeros(10), [10], 100.0)
        with pytest.raises(ValueError, match="`window_s` gives 1 sample"):
            beat_windows(np.zeros(10), [5], 100.0, window_s=0.01)
        with pytest.raises(ValueError, match="`pre_fraction`"):
            beat_windows(np.zeros(10), [5], 100.0, pre_fraction=1.5)
        with pytest.raises(ValueError, match="integer sample indices"):
            beat_windows(np.zeros(10), [5.5], 100.0)
        with pytest.raises(ValueError, match="`x` must be 1-D or 2-D"):
            beat_windows(np.zeros((2, 2, 2)), [1], 100.0)


class TestRRFeatures:
    def test_basic(self) -> None:
        peaks = np.array([0, 360, 720, 900, 1440])  # RR 1.0, 1.0, 0.5 (premature), 1.5 s
        f = rr_features(peaks, 360.0, local_beats=2)
        assert f.shape == (5, len(RR_FEATURE_NAMES))
        col = {name: f[:, i] for i, name in enumerate(RR_FEATURE_NAMES)}
        np.testing.assert_allclose(col["pre_rr"], [0.8, 1.0, 1.0, 0.5, 1.5])
        np.testing.assert_allclose(col["post_rr"], [1.0, 1.0, 0.5, 1.5, 1.5])
        np.testing.assert_allclose(col["local_rr"], [0.8, 1.0, 1.0, 0.75, 1.0])
        np.testing.assert_allclose(col["mean_rr"], [0.8, 1.0, 1.0, 2.5 / 3, 1.0])
        assert col["pre_local_ratio"][3] == pytest.approx(0.5 / 0.75)

    @settings(max_examples=30, deadline=None)
    @given(rr=st.lists(st.integers(min_value=60, max_value=800), min_size=1, max_size=60))
    def test_streaming_equals_batch(self, rr: list[int]) -> None:
        peaks = np.cumsum([100, *rr])
        batch = rr_features(peaks, 250.0, local_beats=4, mean_beats=20)
        s = StreamingRRFeatures(250.0, local_beats=4, mean_beats=20)
        causal = [s.push(int(p)) for p in peaks]
        post = [*batch[1:, 0], batch[-1, 0]]
        live = np.array([StreamingRRFeatures.complete(c, p) for c, p in zip(causal, post, strict=True)])
        np.testing.assert_allclose(live, batch, rtol=1e-12)

    def test_edge_cases(self) -> None:
        assert rr_features([], 360.0).shape == (0, 7)
        one = rr_features([42], 360.0)
        assert one.shape == (1, 7)
        assert np.isfinite(one).all()
        s = StreamingRRFeatures(360.0)
        s.push(100)
        s.reset()
        assert s.push(50)[0] == pytest.approx(0.8)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="strictly increasing"):
            rr_features([10, 10], 360.0)
        with pytest.raises(ValueError, match="`r_peaks` must be 1-D"):
            rr_features([[1, 2]], 360.0)
        with pytest.raises(ValueError, match="`local_beats` must be >= 1"):
            rr_features([1, 2], 360.0, local_beats=0)
        with pytest.raises(ValueError, match="`fs` must be positive"):
            rr_features([1, 2], -1.0)
        s = StreamingRRFeatures(360.0)
        s.push(10)
        with pytest.raises(ValueError, match="`r_peak` must increase"):
            s.push(5)
