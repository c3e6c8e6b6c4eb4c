"""The RR-based atrial-fibrillation evidence: what it calls AF, causality, batch = stream."""

from __future__ import annotations

import numpy as np
import pytest

from sigproc.rhythm import (
    AFDetector,
    AFMonitor,
    PrematurityGate,
    SVTRule,
    af_irregularity,
    clean_intervals,
)


def _ectopic_sinus(n: int, every: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sinus rhythm (0.8 s, 1 % jitter) with a premature beat every ``every`` beats."""
    rr = 0.8 * (1 + 0.01 * rng.standard_normal(n))
    ectopic = np.zeros(n, bool)
    ectopic[every - 1 :: every] = True
    rr[ectopic] *= 0.6  # premature...
    after = np.flatnonzero(ectopic) + 1
    rr[after[after < n]] *= 1.4  # ...and a compensatory pause
    return rr, ectopic


class TestIrregularity:
    def test_hand_computed(self) -> None:
        # lags=1: m_t = |log rr_t - log rr_(t-1)|; window 2: the median (mean) of the last two
        rr = np.exp([0.0, 0.1, 0.1, 0.4, 0.2])
        det = AFDetector(lags=1, window=2, min_intervals=1, threshold=0.06)
        got = af_irregularity(rr, np.ones(5, bool), det)
        np.testing.assert_allclose(got, [np.nan, 0.1, 0.05, 0.15, 0.25], atol=1e-12)
        assert det.flags(got).tolist() == [False, True, False, True, True]

    def test_unclean_intervals_are_skipped(self) -> None:
        rr = np.exp([0.0, 0.1, 0.9, 0.1, 0.4])
        clean = np.array([True, True, False, True, True])  # the 0.9 interval does not count
        det = AFDetector(lags=1, window=2, min_intervals=1, threshold=0.05)
        np.testing.assert_allclose(
            af_irregularity(rr, clean, det), [np.nan, 0.1, 0.1, 0.05, 0.15], atol=1e-12
        )

    @pytest.mark.parametrize("every", [2, 3, 7])
    def test_repeating_ectopy_is_not_af(self, every: int) -> None:
        # bigeminy, trigeminy, an isolated atrial premature beat every 7: irregular beat to
        # beat, but each interval repeats one of the last three; the premature beats are
        # atrial here, so they stay in the clean intervals
        rng = np.random.default_rng(every)
        rr, _ = _ectopic_sinus(300, every, rng)
        got = af_irregularity(rr, np.ones(rr.size, bool))
        assert np.nanmax(got[100:]) < AFDetector().threshold
        beat_to_beat = np.mean(np.abs(np.diff(np.log(rr))))
        assert beat_to_beat > 0.15  # what a plain irregularity measure would see

    def test_ventricular_ectopy_is_left_out(self) -> None:
        rng = np.random.default_rng(4)
        rr, ectopic = _ectopic_sinus(300, 4, rng)  # a ventricular beat every 4th: no repeat at lags 1-3
        rr[ectopic] *= 1 + 0.3 * rng.random(ectopic.sum())  # with a variable coupling interval
        with_v = af_irregularity(rr, np.ones(rr.size, bool))
        without_v = af_irregularity(rr, clean_intervals(ectopic))
        assert np.nanmedian(with_v[100:]) > AFDetector().threshold
        assert np.nanmax(without_v[100:]) < AFDetector().threshold

    def test_af_is_af(self) -> None:
        rng = np.random.default_rng(5)
        rr = rng.uniform(0.45, 1.0, 300)  # independent intervals, as in atrial fibrillation
        got = af_irregularity(rr, np.ones(300, bool))
        assert AFDetector().flags(got[64:]).mean() > 0.95
        assert np.isnan(got[: 3 + 16 - 1]).all()  # lags + min_intervals - 1 intervals without evidence
        assert not np.isnan(got[3 + 16 - 1 :]).any()

    def test_causal(self) -> None:
        rng = np.random.default_rng(6)
        rr = rng.uniform(0.5, 1.2, 200)
        clean = rng.random(200) > 0.2
        full = af_irregularity(rr, clean)
        np.testing.assert_array_equal(af_irregularity(rr[:120], clean[:120]), full[:120])

    def test_stream_matches_batch(self) -> None:
        rng = np.random.default_rng(7)
        sinus, _ = _ectopic_sinus(150, 5, rng)
        rr = np.concatenate([sinus, rng.uniform(0.4, 1.1, 150), sinus])  # into AF and back
        ectopic = rng.random(rr.size) < 0.1
        batch = af_irregularity(rr, clean_intervals(ectopic))
        mon = AFMonitor()
        stream = np.array(
            [mon.push_beat(float(r), ectopic=bool(e)) for r, e in zip(rr, ectopic, strict=True)]
        )
        np.testing.assert_allclose(stream, batch, equal_nan=True)
        assert mon.af == bool(AFDetector().flags(batch[-1:])[0])
        flags = AFDetector().flags(batch)
        assert not flags[100:150].any()
        assert flags[220:300].all()
        assert not flags[-20:].any()
        mon.reset()
        assert np.isnan(mon.irregularity)
        assert not mon.af

    def test_copy(self) -> None:
        """A copy goes on exactly as the original would, and pushing one leaves the other alone."""
        rng = np.random.default_rng(8)
        rr = rng.uniform(0.4, 1.1, 300)
        ectopic = rng.random(rr.size) < 0.1
        mon = AFMonitor(AFDetector(window=32, min_intervals=8))
        for r, e in zip(rr[:150], ectopic[:150], strict=True):
            mon.push_beat(float(r), ectopic=bool(e))
        twin = mon.copy()
        assert twin.detector == mon.detector
        rest = list(zip(rr[150:].tolist(), ectopic[150:].tolist(), strict=True))
        ahead = [twin.push_beat(r, ectopic=e) for r, e in rest]
        assert [mon.push_beat(r, ectopic=e) for r, e in rest] == ahead
        twin.reset()
        assert np.isnan(twin.irregularity)
        assert mon.irregularity == ahead[-1]

    def test_short_input(self) -> None:
        assert np.isnan(af_irregularity([0.8, 0.8], [True, True])).all()
        assert af_irregularity([], []).shape == (0,)

    def test_clean_intervals(self) -> None:
        got = clean_intervals([False, False, True, False, False])
        assert got.tolist() == [False, True, False, False, True]
        assert clean_intervals([]).shape == (0,)

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="`clean` has shape"):
            af_irregularity([0.8, 0.9], [True])
        with pytest.raises(ValueError, match="finite, positive"):
            af_irregularity([0.8, 0.0], [True, True])
        with pytest.raises(ValueError, match="one-dimensional"):
            af_irregularity(np.ones((2, 2)), np.ones((2, 2), bool))
        with pytest.raises(ValueError, match="`lags`"):
            AFDetector(lags=0)
        with pytest.raises(ValueError, match="`min_intervals`"):
            AFDetector(window=8, min_intervals=9)
        with pytest.raises(ValueError, match="`threshold`"):
            AFDetector(threshold=0.0)
        with pytest.raises(ValueError, match="finite, positive"):
            AFMonitor().push(float("nan"), clean=True)
        with pytest.raises(ValueError, match="one-dimensional"):
            clean_intervals(np.zeros((2, 2), bool))


class TestPrematurityGate:
    def test_basic(self) -> None:
        gate = PrematurityGate()
        pre = np.array([0.7, 0.89, 0.9, 0.85, 0.85, 0.4, 0.59, 1.2])
        local = np.array([1.0, 1.0, 1.0, 0.85, 0.86, 0.42, 0.61, 1.6])
        # 30 % early / just over 10 % early / exactly 10 % (not premature) / on time (conduction
        # after 2:1 block, record 231) / on time / a run at 150 bpm, on time for the run /
        # on time at 98 bpm / early only against the long intervals of a pause (0.75)
        assert gate.allows(pre, local).tolist() == [True, True, False, False, False, True, False, True]
        assert PrematurityGate(max_pre_to_local=1.0).allows([0.99], [1.0]).tolist() == [True]
        assert PrematurityGate(max_local_rr=0.9).allows([0.85], [0.85]).tolist() == [True]

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match=r"`max_pre_to_local` must be in \(0, 1\], got 1.2"):
            PrematurityGate(max_pre_to_local=1.2)
        with pytest.raises(ValueError, match=r"`max_local_rr` must be positive, got 0\.0"):
            PrematurityGate(max_local_rr=0.0)
        with pytest.raises(ValueError, match=r"`pre_rr` has shape \(2,\), `local_rr` \(3,\)"):
            PrematurityGate().allows([0.8, 0.8], [0.8, 0.8, 0.8])


class TestSVTRule:
    def test_basic(self) -> None:
        rule = SVTRule()
        local = np.array([0.4, 0.4, 0.59, 0.61, 0.96, 0.5])
        mean = np.array([0.8, 0.45, 0.8, 0.9, 1.7, 0.6])
        # fast and abrupt / fast but the patient's usual rate / just over 100 bpm / 98 bpm /
        # normal beats after a slow stretch (record 231) / fast, 0.83 of the mean
        assert rule.flags(local, mean).tolist() == [True, False, True, False, False, False]

    def test_errors(self) -> None:
        with pytest.raises(ValueError, match="`max_local_rr`"):
            SVTRule(max_local_rr=0.0)
        with pytest.raises(ValueError, match="`max_local_to_mean`"):
            SVTRule(max_local_to_mean=1.5)
