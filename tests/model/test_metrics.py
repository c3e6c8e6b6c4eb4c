"""Metric functions against hand-made confusion matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model.metrics import class_metrics, confusion_matrix, ec57_gross, summary_metrics

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
