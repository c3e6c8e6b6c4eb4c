"""Early-alarm baselines, paired t-tests and the result shape."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from model.data import RecordBeats
from model.evaluation import (
    early_alarm_report,
    markov_transitions,
    paired_t_tests,
    plot_confusion,
    result_from_confusion,
)


def _rec(labels: list[int]) -> RecordBeats:
    n = len(labels)
    z = np.zeros((n, 1, 2), dtype=np.float32)
    return RecordBeats("x", z, np.zeros((n, 7), dtype=np.float32), np.array(labels), np.arange(n))


class TestMarkov:
    def test_basic(self) -> None:
        p = markov_transitions([_rec([0, 0, 2, 0, -1, 2])], n_classes=3)
        # Counts (+1 each): 0->0 once, 0->2 once, 2->0 once; the -1 breaks the chain.
        assert np.allclose(p.sum(1), 1)
        assert p[0].tolist() == pytest.approx([2 / 5, 1 / 5, 2 / 5])
        assert p[2].tolist() == pytest.approx([2 / 4, 1 / 4, 1 / 4])


class TestEarlyAlarmReport:
    def test_basic(self) -> None:
        truth = [np.array([0, 2, 0, 2, 0, 2])]  # bigeminy
        early = [np.array([[2], [0], [2], [0], [2], [0]])]  # a perfect h = 1 forecaster
        beat = [truth[0].copy()]
        trans = markov_transitions([_rec([0, 2, 0, 2, 0, 2, 0])], n_classes=5)
        rep = early_alarm_report(truth, early, beat, (1,), trans)["h1"]
        assert rep["n"] == 5
        assert rep["model"]["V"]["se"] == 100.0
        assert rep["persistence"]["V"]["se"] == 0.0  # V never follows V here
        assert rep["markov"]["V"]["se"] == 100.0  # the chain learnt N -> V
        assert rep["markov"]["V"]["ppv"] == 100.0


class TestPairedTTests:
    def test_basic(self) -> None:
        ours = [{"accuracy": v} for v in (90.0, 92.0, 91.0, 93.0)]
        base = [{"accuracy": v} for v in (89.0, 90.0, 90.5, 91.0)]
        res = paired_t_tests(ours, base, ("accuracy",))["accuracy"]
        d = np.array([1.0, 2.0, 0.5, 2.0])
        t = d.mean() / (d.std(ddof=1) / math.sqrt(4))
        assert res["t"] == pytest.approx(t)
        assert res["mean_diff"] == pytest.approx(1.375)
        assert 0 < res["p"] < 0.05

    def test_edge_cases(self) -> None:
        res = paired_t_tests([{"a": 1.0}, {"a": 2.0}], [{"a": 0.0}, {"a": 1.0}], ("a",))["a"]
        assert math.isnan(res["p"])  # constant difference: no variance to test


class TestResultShape:
    def test_basic(self, tmp_path: Path) -> None:
        cm = np.diag([10, 2, 3, 1, 0])
        res = result_from_confusion("inter-patient", cm, macro_over=("N", "S", "V", "F"))
        for key in ("protocol", "accuracy", "macro_f1", "classes", "confusion", "early_alarm"):
            assert key in res
        assert res["macro_f1"] == pytest.approx(100.0)
        assert set(res["classes"]["S"]) == {"se", "ppv", "f1", "support"}
        assert plot_confusion(cm, tmp_path / "cm.png", title="t").stat().st_size > 1000
