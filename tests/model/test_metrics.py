"""Metric functions against hand-made confusion matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import class_metrics, confusion_matrix, ec57_gross, record_bootstrap, summary_metrics

# Reference rows N, S, V, F, Q; predicted columns in the same order.
CM = np.array(
    [
        [90, 5, 3, 2, 0],
        [4, 16, 0, 0, 0],
        [1, 0, 18, 1, 0],
        [2, 0, 3, 5, 0],
        [0, 0, 1, 0, 0],
    ]
)


class TestConfusionMatrix:
    def test_basic(self) -> None:
        cm = confusion_matrix([0, 1, 2, 2, -1], [0, 2, 2, 0, 1], 3)
        assert cm.tolist() == [[1, 0, 0], [0, 0, 1], [1, 0, 1]]

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="differ in length"):
            confusion_matrix([0, 1], [0])
        with pytest.raises(ValueError, match="labels must lie"):
            confusion_matrix([0, 5], [0, 0], 3)


class TestClassMetrics:
    def test_basic(self) -> None:
        m = class_metrics(CM)
        assert m["S"]["se"] == pytest.approx(100 * 16 / 20)
        assert m["S"]["ppv"] == pytest.approx(100 * 16 / 21)
        se, ppv = 80.0, 100 * 16 / 21
        assert m["S"]["f1"] == pytest.approx(2 * se * ppv / (se + ppv))
        assert m["V"]["ppv"] == pytest.approx(100 * 18 / 25)
        assert m["N"]["support"] == 100

    def test_edge_cases(self) -> None:
        m = class_metrics(CM)
        assert m["Q"]["se"] == 0.0
        assert math.isnan(m["Q"]["ppv"])  # never predicted: undefined, not 0
        assert math.isnan(m["Q"]["f1"])


class TestSummaryMetrics:
    def test_basic(self) -> None:
        s = summary_metrics(CM)
        assert s["accuracy"] == pytest.approx(100 * 129 / 151)
        m = class_metrics(CM)
        recalls = [m[c]["se"] for c in "NSVFQ"]
        assert s["macro_recall"] == pytest.approx(np.mean(recalls))
        support = np.array([100, 20, 20, 10, 1])
        assert s["weighted_recall"] == pytest.approx(np.dot(recalls, support) / support.sum())
        assert s["weighted_recall"] == pytest.approx(s["accuracy"])

    def test_edge_cases(self) -> None:
        s = summary_metrics(np.zeros((5, 5), dtype=int))
        assert math.isnan(s["accuracy"])


class TestEC57Gross:
    def test_basic(self) -> None:
        g = ec57_gross(CM)
        # VEB: FP counts N and S predicted V (3 + 0), not F (3) or Q (1).
        assert (g["VEB"]["tp"], g["VEB"]["fn"], g["VEB"]["fp"]) == (18, 2, 3)
        assert g["VEB"]["ppv"] == pytest.approx(100 * 18 / 21)
        assert g["VEB"]["fpr"] == pytest.approx(100 * 3 / 120)
        # SVEB: FP counts N, V, F predicted S (5 + 0 + 0).
        assert (g["SVEB"]["tp"], g["SVEB"]["fn"], g["SVEB"]["fp"]) == (16, 4, 5)


class TestMacroOver:
    def test_basic(self) -> None:
        s = summary_metrics(CM, macro_over=("N", "S", "V", "F"))
        m = class_metrics(CM)
        assert s["macro_recall"] == pytest.approx(np.mean([m[c]["se"] for c in "NSVF"]))


class TestRecordBootstrap:
    def test_identical_records(self) -> None:
        """Every resample pools copies of one matrix: each interval shrinks to that matrix's metric."""
        cm = np.array(CM)
        cm[4] = 0  # Q absent: its Se is undefined in every resample
        res = record_bootstrap([cm] * 5, macro_over=("N", "S", "V", "F"), n_resamples=200)
        per, summ = class_metrics(cm), summary_metrics(cm, macro_over=("N", "S", "V", "F"))
        assert res["accuracy"] == pytest.approx([summ["accuracy"]] * 2)
        assert res["macro_f1"] == pytest.approx([summ["macro_f1"]] * 2)
        for c in "NSVF":
            for m in ("se", "ppv", "f1"):
                assert res["classes"][c][m] == pytest.approx([per[c][m]] * 2)
        assert res["classes"]["Q"]["se"] == [None, None]
        assert res["classes"]["Q"]["f1"] == [None, None]  # undefined, not 0
        assert (res["n_records"], res["n_resamples"], res["level"]) == (5, 200, 95.0)

    def test_hand_computed(self) -> None:
        """One perfect record and one all wrong: a resample holds 0, 1 or 2 copies of the good one."""
        good = np.array([[10, 0], [0, 0]])
        bad = np.array([[0, 10], [0, 0]])
        res = record_bootstrap([good, bad], classes=("N", "V"), n_resamples=4000, seed=3)
        assert res["accuracy"] == [0.0, 100.0]  # each of the extremes has probability 1/4
        res = record_bootstrap([good, bad], classes=("N", "V"), n_resamples=4000, level=40.0, seed=3)
        assert res["accuracy"] == [50.0, 50.0]  # the middle half of the draws is one of each

    def test_paired(self) -> None:
        rng = np.random.default_rng(0)
        cms = rng.integers(0, 30, size=(8, 5, 5))
        same = record_bootstrap(cms, cms, n_resamples=300)
        assert same["accuracy"] == [0.0, 0.0]
        assert same["share_ahead"]["accuracy"] == 0.0
        better = cms.copy()
        better[:, 1, 1] += 20  # more S beats found in every record, nothing else changed
        res = record_bootstrap(better, cms, n_resamples=300)
        assert res["classes"]["S"]["se"][0] > 0
        assert res["accuracy"][0] > 0
        assert res["share_ahead"]["classes"]["S"]["f1"] == 1.0
        assert res["share_ahead"]["accuracy"] == 1.0
        # Seeded: the same draws give the same intervals.
        assert record_bootstrap(better, cms, n_resamples=300) == res

    def test_exceptions(self) -> None:
        cms = np.ones((3, 5, 5))
        with pytest.raises(ValueError, match=r"shape \(records, 5, 5\), got \(5, 5\)"):
            record_bootstrap(np.ones((5, 5)))
        with pytest.raises(ValueError, match="at least two records, got 1"):
            record_bootstrap(cms[:1])
        with pytest.raises(ValueError, match="`level` must lie strictly between 0 and 100, got 100"):
            record_bootstrap(cms, level=100)
        with pytest.raises(ValueError, match="`n_resamples` must be >= 1, got 0"):
            record_bootstrap(cms, n_resamples=0)
        with pytest.raises(ValueError, match=r"`baseline` must have the shape of `confusions` \(3, 5, 5\)"):
            record_bootstrap(cms, cms[:2])
