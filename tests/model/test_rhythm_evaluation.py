"""The AF gate scored against the MIT-BIH rhythm annotations (``cardiac-monitor evaluate af``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from app import cli
from model.inference import SHIPPED_WEIGHTS
from model.rhythm_evaluation import AF_GRID, evaluate_af
from sigproc.records import Annotations
from sigproc.rhythm import AFDetector

pytestmark = pytest.mark.data


class TestEvaluateAF:
    def test_basic(self, data_dir: Path) -> None:
        """221 is in atrial fibrillation throughout, 100 in sinus rhythm; neither seen in training."""
        res = evaluate_af([SHIPPED_WEIGHTS], ["221", "100"], data_dir=data_dir, progress=False)
        af, sinus = res["records"]["221"], res["records"]["100"]
        assert af["af_beats"] > 2000
        assert af["se"] > 90
        assert sinus["af_beats"] == 0
        assert sinus["other_called"] == 0
        assert sinus["se"] is None
        pooled = res["pooled"]
        assert pooled["af_beats"] == af["af_beats"]
        assert pooled["other_beats"] == af["other_beats"] + sinus["other_beats"]
        assert pooled["j"] == pytest.approx((pooled["se"] - pooled["fpr"]) / 100)
        assert res["detector"] == {"lags": 3, "window": 96, "min_intervals": 16, "threshold": 0.03}

    def test_grid_and_detector(self, data_dir: Path) -> None:
        strict = AFDetector(threshold=0.2)
        res = evaluate_af(
            [SHIPPED_WEIGHTS], ["221"], data_dir=data_dir, detector=strict, grid=True, progress=False
        )
        assert res["records"]["221"]["af_called"] < 100  # a threshold far above AF's irregularity
        rows = res["grid"]
        assert len(rows) == np.prod([len(v) for v in AF_GRID.values()])
        js = [r["j"] for r in rows]
        assert js == sorted(js, reverse=True)
        default = evaluate_af([SHIPPED_WEIGHTS], ["221"], data_dir=data_dir, progress=False)["pooled"]
        row = next(r for r in rows if (r["lags"], r["window"], r["threshold"]) == (3, 96, 0.03))
        assert (row["af_called"], row["other_called"]) == (default["af_called"], default["other_called"])

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(ValueError, match="every checkpoint was trained on record 203"):
            evaluate_af([SHIPPED_WEIGHTS], ["203"], data_dir=data_dir, progress=False)
        with pytest.raises(ValueError, match="at least one checkpoint"):
            evaluate_af([], ["221"], data_dir=data_dir)
        with pytest.raises(ValueError, match="`leads` must be 1 to 2"):
            evaluate_af([SHIPPED_WEIGHTS], ["221"], data_dir=data_dir, leads=3, progress=False)

    def test_cli(self, data_dir: Path, tmp_path: Path) -> None:
        out = tmp_path / "af.json"
        args = ["evaluate", "af", "--data-dir", str(data_dir), "--records", "221,100", "--json", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "pooled: AF sensitivity" in result.output
        assert set(json.loads(out.read_text())["records"]) == {"221", "100"}
        result = CliRunner().invoke(cli, ["evaluate", "af", "--data-dir", str(data_dir), "--records", "999"])
        assert result.exit_code == 2
        assert "mitdb has no record(s) 999" in result.output
        result = CliRunner().invoke(cli, ["evaluate", "af", "--data-dir", str(data_dir), "--records", "ds1"])
        assert result.exit_code == 2
        assert "every checkpoint was trained on record 101" in result.output


def test_rhythms() -> None:
    ann = Annotations(
        np.array([10, 20, 30, 40]), np.array(["+", "N", "+", "N"]), ("(N", "", "(AFIB", ""), 360.0
    )
    assert ann.rhythms([0, 10, 25, 30, 45]).tolist() == ["", "(N", "(N", "(AFIB", "(AFIB"]
    assert ann.rhythms([]).shape == (0,)
    none = Annotations(np.array([5]), np.array(["N"]), ("",), 360.0)
    assert none.rhythms([1, 9]).tolist() == ["", ""]


class TestOutOfFold:
    def test_basic(self, data_dir: Path, tmp_path: Path) -> None:
        """Each record goes to the first network not trained on it; `evaluate compare` pairs the result."""
        from dataclasses import replace

        from model.checkpoint import load_checkpoint, save_checkpoint
        from model.data import load_records
        from model.evaluation import compare_results, evaluate_out_of_fold
        from model.metrics import confusion_matrix
        from model.training import predict_records

        shipped = load_checkpoint(SHIPPED_WEIGHTS)
        saw_221 = save_checkpoint(
            replace(shipped, split=replace(shipped.split, train=(*shipped.split.train, "221"))),
            tmp_path / "a.pt",
        )
        res = evaluate_out_of_fold(
            [saw_221, SHIPPED_WEIGHTS], ["100", "221"], data_dir=data_dir, progress=False
        )
        assert res["owners"]["100"]["checkpoint"] == "a.pt"
        assert res["owners"]["221"]["checkpoint"] == SHIPPED_WEIGHTS.name
        assert res["owners"]["221"]["af_gate"] == {
            "lags": 3,
            "window": 96,
            "min_intervals": 16,
            "threshold": 0.03,
        }
        rec = load_records(["221"], shipped.preprocess, data_dir=data_dir)
        t, p, _ = predict_records(shipped.build(), rec, n_leads=1, af_detector=shipped.af_detector)
        assert res["records"]["221"] == confusion_matrix(t[0], p[0]).tolist()
        assert np.sum([np.asarray(m) for m in res["records"].values()], axis=0).tolist() == res["confusion"]
        same = compare_results(res, res)
        assert same["difference"]["accuracy"] == [0.0, 0.0]  # a result against itself: no difference
        plain = evaluate_out_of_fold(
            [SHIPPED_WEIGHTS], ["221"], data_dir=data_dir, af_gate=False, progress=False
        )
        assert plain["owners"]["221"]["af_gate"] is None
        n_called_s = [r["records"]["221"][0][1] for r in (plain, res)]  # 221: AF throughout, no S beat
        assert n_called_s[1] < n_called_s[0]

    def test_exceptions(self, data_dir: Path) -> None:
        from model.evaluation import evaluate_out_of_fold

        with pytest.raises(ValueError, match="every checkpoint was trained on record 101"):
            evaluate_out_of_fold([SHIPPED_WEIGHTS], ["101"], data_dir=data_dir, progress=False)
        with pytest.raises(ValueError, match="at least one checkpoint"):
            evaluate_out_of_fold([], ["101"], data_dir=data_dir)
