"""Early-alarm baselines, paired t-tests and the result shape."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.cnn_lstm import ModelConfig
from model.data import PreprocessConfig, RecordBeats, Split, load_records, random_split
from model.evaluation import (
    _with_detection_errors,
    compare_models,
    compare_results,
    early_alarm_report,
    evaluate_model,
    finished_run,
    markov_transitions,
    paired_t_tests,
    paper_protocol,
    plot_confusion,
    pooled_folds,
    record_intervals,
    result_from_confusion,
    terms_baseline,
)
from model.registry import get_model
from model.training import TrainConfig


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


def _run_file(
    path: Path, tiny: ModelConfig, metrics: dict[str, Any], config: TrainConfig | None = None
) -> Path:
    """A checkpoint of an untrained tiny CNN-LSTM with the given run metrics (and settings)."""
    pre = PreprocessConfig(fs=tiny.fs, window_s=tiny.n_window / tiny.fs)
    ckpt = Checkpoint(
        "cnn_lstm",
        tiny,
        pre,
        get_model("cnn_lstm", tiny).state_dict(),
        random_split(),
        metrics=metrics,
        train_config=config.to_dict() if config is not None else {},
    )
    return save_checkpoint(ckpt, path)


def _saved_run(
    path: Path, config: TrainConfig, tiny: ModelConfig, *, epochs_run: int, best_epoch: int
) -> Path:
    return _run_file(path, tiny, {"epochs_run": epochs_run, "best_epoch": best_epoch}, config)


def _fold_run(path: Path, tiny: ModelConfig, confusions: list[list[list[int]]], **extra: object) -> Path:
    """A fold's checkpoint whose history holds the given 5x5 validation confusions, one per epoch."""
    history = [{"epoch": e + 1, "val_confusion": cm, **extra} for e, cm in enumerate(confusions)]
    return _run_file(path, tiny, {"history": history})


def _cm(n: tuple[int, int, int], s: tuple[int, int, int], v: tuple[int, int, int]) -> list[list[int]]:
    """5x5 confusion with rows N, S, V given over the columns N, S, V; F and Q empty."""
    return [[*n, 0, 0], [*s, 0, 0], [*v, 0, 0], [0] * 5, [0] * 5]


class TestPooledFolds:
    def test_basic(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        """Confusions are summed over folds per epoch, then scored: not the mean of fold scores."""
        a = _fold_run(
            tmp_path / "a.pt",
            tiny_config,
            [_cm((90, 0, 0), (10, 0, 0), (0, 0, 10)), _cm((90, 0, 0), (0, 10, 0), (0, 0, 10))],
        )
        b = _fold_run(
            tmp_path / "b.pt",
            tiny_config,
            [_cm((80, 10, 0), (0, 10, 0), (0, 0, 0)), _cm((90, 0, 0), (0, 10, 0), (0, 0, 0))],
        )
        res = pooled_folds([a, b], from_epoch=1)
        first, second = res["epochs"]
        # epoch 1 pooled: N 170 right of 180, 10 N called S; S 10 of 20 found, +P 10/20; V 10 of 10.
        assert first["N"]["se"] == pytest.approx(100 * 170 / 180)
        assert first["N"]["ppv"] == pytest.approx(100 * 170 / 180)
        assert first["S"]["se"] == pytest.approx(50.0)
        assert first["S"]["ppv"] == pytest.approx(50.0)
        assert first["V"]["f1"] == pytest.approx(100.0)
        n_f1 = 100 * 170 / 180
        assert first["score"] == pytest.approx((n_f1 + 50.0 + 100.0) / 3)
        assert first["accuracy"] == pytest.approx(100 * 190 / 210)
        assert second["score"] == pytest.approx(100.0)
        assert (res["best_epoch"], res["best_score"]) == (2, pytest.approx(100.0))
        assert res["mean"] == pytest.approx((first["score"] + 100.0) / 2)
        assert pooled_folds([a, b], from_epoch=2)["mean"] == pytest.approx(100.0)

    def test_records(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        """Each held-out record's matrices summed from ``from_epoch``, resampled and compared by record."""
        good, poor = _cm((10, 0, 0), (0, 10, 0), (0, 0, 10)), _cm((10, 0, 0), (5, 5, 0), (0, 0, 10))

        def run(path: Path, held_out: dict[str, list[list[int]]]) -> Path:
            pooled = np.sum([np.asarray(m) for m in held_out.values()], axis=0).tolist()
            history = [{"epoch": e, "val_confusion": pooled, "val_records": held_out} for e in (1, 2, 3)]
            return _run_file(path, tiny_config, {"history": history})

        ours = [
            run(tmp_path / "a0.pt", {"w": good, "x": poor}),
            run(tmp_path / "a1.pt", {"y": good, "z": good}),
        ]
        res = pooled_folds(ours, from_epoch=2)
        assert list(res["records"]) == ["w", "x", "y", "z"]
        assert res["records"]["x"] == (2 * np.asarray(poor)).tolist()  # epochs 2 and 3
        assert res["intervals"]["n_records"] == 4
        worse = pooled_folds(
            [
                run(tmp_path / "b0.pt", {"w": poor, "x": poor}),
                run(tmp_path / "b1.pt", {"y": poor, "z": good}),
            ],
            from_epoch=2,
        )
        cmp = compare_results(res, worse, n_resamples=200)
        assert cmp["macro_f1_classes"] == ["N", "S", "V"]  # the fold score
        assert cmp["candidate"]["macro_f1"] == pytest.approx(res["mean"])
        assert cmp["difference"]["share_ahead"]["classes"]["S"]["se"] > 0.8  # not when only x and z are drawn
        from click.testing import CliRunner

        from app import cli

        a, b = tmp_path / "a.json", tmp_path / "b.json"
        args = ["evaluate", "folds", *map(str, ours), "--from-epoch", "2", "--json", str(a)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "interval over the 4 held-out records resampled" in result.output
        b.write_text(json.dumps(worse))
        result = CliRunner().invoke(cli, ["evaluate", "compare", str(a), str(b)])
        assert result.exit_code == 0, result.output
        assert "DS1 folds, 4 records" in result.output
        # Runs without per-record matrices (older checkpoints) pool as before, without intervals.
        plain = _fold_run(tmp_path / "p.pt", tiny_config, [good, good])
        assert "records" not in pooled_folds([plain], from_epoch=1)

    def test_raw(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        """A weight-averaged run also holds the raw network's confusion; ``raw`` scores that."""
        good, bad = _cm((10, 0, 0), (0, 10, 0), (0, 0, 10)), _cm((10, 0, 0), (10, 0, 0), (10, 0, 0))
        path = _fold_run(tmp_path / "a.pt", tiny_config, [good], val_confusion_raw=bad)
        assert pooled_folds([path])["epochs"][0]["score"] == pytest.approx(100.0)
        assert pooled_folds([path], raw=True)["epochs"][0]["score"] < 50.0
        assert math.isnan(pooled_folds([path])["mean"])  # the run is shorter than `from_epoch`

    def test_exceptions(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        cm = _cm((10, 0, 0), (0, 10, 0), (0, 0, 10))
        one = _fold_run(tmp_path / "one.pt", tiny_config, [cm])
        two = _fold_run(tmp_path / "two.pt", tiny_config, [cm, cm])
        with pytest.raises(ValueError, match="differ in length"):
            pooled_folds([one, two])
        with pytest.raises(ValueError, match="is empty"):
            pooled_folds([])
        refit = _saved_run(tmp_path / "r.pt", TrainConfig(), tiny_config, epochs_run=1, best_epoch=1)
        with pytest.raises(ValueError, match="no validation confusion per epoch"):
            pooled_folds([refit])

    def test_cli(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        from click.testing import CliRunner

        from app import cli

        cm = _cm((10, 0, 0), (0, 10, 0), (0, 0, 10))
        a = _fold_run(tmp_path / "a.pt", tiny_config, [cm, cm])
        out = tmp_path / "folds.json"
        result = CliRunner().invoke(
            cli, ["evaluate", "folds", str(a), "--from-epoch", "1", "--json", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert "mean from epoch 1: 100.0" in result.output
        assert len(json.loads(out.read_text())["epochs"]) == 2
        bad = _fold_run(tmp_path / "b.pt", tiny_config, [cm])
        result = CliRunner().invoke(cli, ["evaluate", "folds", str(a), str(bad)])
        assert result.exit_code == 2
        assert "differ in length" in result.output


class TestTermsBaseline:
    def test_basic(self, data_dir: Path) -> None:
        """Every labelled beat of the held-out records scored once; V found in patients never seen."""
        folds = [("119",), ("208",), ("106",)]
        res = terms_baseline(folds, data_dir=data_dir)
        labelled = sum(
            int((rb.labels >= 0).sum()) for rb in load_records(["119", "208", "106"], data_dir=data_dir)
        )
        assert np.asarray(res["confusion"]).sum() == labelled
        assert res["protocol"] == "terms"
        assert res["folds"] == [list(f) for f in folds]
        assert res["classes"]["V"]["se"] > 80
        assert res["classes"]["V"]["ppv"] > 80
        assert res["score"] == pytest.approx(
            np.mean([res["classes"][c]["f1"] for c in ("N", "S", "V")]), abs=1e-9
        )

    def test_test_records(self, data_dir: Path) -> None:
        """Fitted on every fold, the regression scores the outside records once, per record and pooled."""
        res = terms_baseline([("119",), ("208",)], data_dir=data_dir, test=["106", "233"])
        test = res["test"]
        assert list(test["records"]) == ["106", "233"]
        pooled = np.sum([np.asarray(m) for m in test["records"].values()], axis=0)
        assert pooled.tolist() == test["confusion"]
        labelled = sum(int((rb.labels >= 0).sum()) for rb in load_records(["106", "233"], data_dir=data_dir))
        assert pooled.sum() == labelled
        assert test["macro_f1_classes"] == ["N", "S", "V", "F"]
        assert test["classes"]["V"]["se"] > 80  # V beats of two patients the regression never saw
        assert test["intervals"]["n_records"] == 2
        assert "test" not in terms_baseline([("119",), ("208",)], data_dir=data_dir)

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(ValueError, match="at least two folds, got 1"):
            terms_baseline([("119", "208")], data_dir=data_dir)
        with pytest.raises(ValueError, match=r"a record is in two folds: \['119'\]"):
            terms_baseline([("119",), ("208", "119")], data_dir=data_dir)
        with pytest.raises(ValueError, match=r"test records are also in the folds: \['208'\]"):
            terms_baseline([("119",), ("208",)], data_dir=data_dir, test=["208", "106"])

    def test_cli(self, data_dir: Path, tmp_path: Path) -> None:
        from click.testing import CliRunner

        from app import cli

        out = tmp_path / "terms.json"
        args = ["evaluate", "terms", "--data-dir", str(data_dir), "--folds", "119; 208", "--json", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "score " in result.output
        assert "  V: Se" in result.output
        assert json.loads(out.read_text())["folds"] == [["119"], ["208"]]
        result = CliRunner().invoke(cli, ["evaluate", "terms", "--data-dir", str(data_dir), "--folds", "119"])
        assert result.exit_code == 2
        assert "at least two folds" in result.output
        args = ["evaluate", "terms", "--data-dir", str(data_dir), "--folds", "119;208", "--test", "106, 233"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "test records 106, 233:" in result.output
        assert "[95 % intervals over 2 test records resampled]" in result.output


class TestFinishedRun:
    def test_basic(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        cfg = TrainConfig(protocol="random", epochs=20, patience=5)
        # Stopped early: 5 epochs without improvement after the best one.
        assert finished_run(_saved_run(tmp_path / "a.pt", cfg, tiny_config, epochs_run=12, best_epoch=7), cfg)
        # Ran to the last epoch, still improving.
        assert finished_run(
            _saved_run(tmp_path / "b.pt", cfg, tiny_config, epochs_run=20, best_epoch=20), cfg
        )
        # Execution settings do not matter.
        assert finished_run(tmp_path / "a.pt", replace(cfg, threads=1, device="cpu", data_dir="/x"))

    def test_edge_cases(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        cfg = TrainConfig(protocol="random", epochs=20, patience=5)
        assert not finished_run(tmp_path / "none.pt", cfg)
        # Written at an improvement, then interrupted.
        path = _saved_run(tmp_path / "a.pt", cfg, tiny_config, epochs_run=8, best_epoch=8)
        assert not finished_run(path, cfg)
        # Finished, but with other settings than asked for.
        path = _saved_run(tmp_path / "b.pt", cfg, tiny_config, epochs_run=12, best_epoch=7)
        assert not finished_run(path, replace(cfg, lr=1e-2))
        assert not finished_run(path, replace(cfg, epochs=30))


@pytest.mark.data
@pytest.mark.slow
class TestCompareModels:
    def test_parallel_and_resume(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        cfg = replace(tiny_train, n_folds=2, epochs=1, max_batches=2)
        kw = {"protocol": "cv", "out_dir": tmp_path, "max_epochs": 1, "models": ("cnn_lstm", "lstm")}
        first = compare_models(cfg, jobs=2, progress=False, **kw)
        paths = sorted(tmp_path.glob("*.pt"))
        assert [p.name for p in paths] == [
            "cnn_lstm_cv_fold0.pt",
            "cnn_lstm_cv_fold1.pt",
            "lstm_cv_fold0.pt",
            "lstm_cv_fold1.pt",
        ]
        assert set(first["t_tests"]) == {"lstm"}
        assert {"accuracy", "macro_f1", "f1_N", "f1_S", "f1_V", "f1_F", "epochs_run"} <= set(
            first["table"]["lstm"]
        )
        stamps = [p.stat().st_mtime_ns for p in paths]
        # Finished runs are reused, not retrained; the scores are the same.
        again = compare_models(cfg, jobs=1, progress=False, **kw)
        assert [p.stat().st_mtime_ns for p in paths] == stamps
        assert again["table"] == first["table"]
        # Runs of other settings are trained again.
        changed = compare_models(replace(cfg, lr=2e-3), jobs=1, progress=False, **kw)
        assert all(p.stat().st_mtime_ns != s for p, s in zip(paths, stamps, strict=True))
        assert changed["table"] != first["table"]

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="`jobs` must be >= 1"):
            compare_models(TrainConfig(), protocol="cv", out_dir=tmp_path, max_epochs=1, jobs=0)
        with pytest.raises(ValueError, match="`protocol` must be 'random' or 'cv'"):
            compare_models(TrainConfig(), protocol="x", out_dir=tmp_path, max_epochs=1)


@pytest.mark.data
@pytest.mark.slow
class TestPaperProtocol:
    def test_basic(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        """Each model keeps its best candidate on validation; Table 3 scores it, Table 4 cross-validates."""
        cfg = replace(tiny_train, n_folds=2, epochs=1, max_batches=2, select_on=("N", "V"))
        candidates = {"low": {"dropout": 0.2}, "high": {"dropout": 0.5, "lr": 1e-2}}
        kw = {"out_dir": tmp_path, "max_epochs": 1, "models": ("cnn_lstm", "lstm"), "progress": False}
        res = paper_protocol(cfg, candidates, jobs=2, json_path=tmp_path / "paper.json", **kw)
        assert json.loads((tmp_path / "paper.json").read_text())["chosen"] == res["chosen"]
        assert res["select_on"] == ["N", "V"]
        for m in ("cnn_lstm", "lstm"):
            scores = {c: row["score"] for c, row in res["selection"][m].items()}
            assert set(scores) == {"low", "high"}
            for c, score in scores.items():  # candidates ranked on the score their runs stopped on
                meta = load_checkpoint(tmp_path / "select" / f"{m}_{c}.pt").metrics
                assert score == meta["history"][meta["best_epoch"] - 1]["val_score"]
                per = meta["validation"]["classes"]
                assert score == pytest.approx(np.mean([np.nan_to_num(per[k]["f1"]) for k in ("N", "V")]))
            assert scores[res["chosen"][m]] == max(scores.values())
            # the chosen run is Table 3's; its validation score is the one stored by training
            run = load_checkpoint(tmp_path / "select" / f"{m}_{res['chosen'][m]}.pt")
            assert run.train_config["protocol"] == "random"
            assert run.train_config["dropout"] == candidates[res["chosen"][m]]["dropout"]
            for k in range(2):
                fold = load_checkpoint(tmp_path / "cv" / f"{m}_{res['chosen'][m]}_fold{k}.pt")
                assert (fold.train_config["protocol"], fold.train_config["fold"]) == ("cv", k)
                assert fold.train_config["dropout"] == run.train_config["dropout"]
        assert set(res["random"]["table"]) == set(res["cv"]["table"]) == {"cnn_lstm", "lstm"}
        assert set(res["cv"]["t_tests"]) == {"lstm"}
        assert len(list((tmp_path / "cv").glob("*.pt"))) == 4
        # finished runs are reused: the same result without training
        stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")}
        again = paper_protocol(cfg, candidates, jobs=1, **kw)
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*.pt")} == stamps
        assert again["selection"] == res["selection"]
        assert again["cv"]["table"] == res["cv"]["table"]

    def test_exceptions(self, tmp_path: Path) -> None:
        kw = {"out_dir": tmp_path, "max_epochs": 1}
        with pytest.raises(ValueError, match="`candidates` is empty"):
            paper_protocol(TrainConfig(), {}, **kw)
        with pytest.raises(ValueError, match="candidate 'a' sets \\['epochs'\\]"):
            paper_protocol(TrainConfig(), {"a": {"epochs": 3}}, **kw)
        with pytest.raises(ValueError, match="candidate name 'a/b'"):
            paper_protocol(TrainConfig(), {"a/b": {}}, **kw)
        with pytest.raises(ValueError, match="`pool_bins` must be >= 1"):
            paper_protocol(TrainConfig(), {"a": {"pool_bins": 0}}, **kw)
        with pytest.raises(ValueError, match=r"candidate 'a': .*'colour'"):
            paper_protocol(TrainConfig(), {"a": {"colour": 1}}, **kw)
        with pytest.raises(ValueError, match="candidate 'b' sets select_on, which all candidates share"):
            paper_protocol(TrainConfig(), {"a": {}, "b": {"select_on": ("N", "S", "V", "F")}}, **kw)
        assert not list(tmp_path.rglob("*.pt"))  # nothing trained before the checks


class TestDetectionErrors:
    def test_basic(self) -> None:
        """Missed beats lower Se, false detections lower +P, both lower accuracy."""
        z = np.zeros((3, 1, 2), dtype=np.float32)
        rec = RecordBeats("x", z, np.zeros((3, 7), dtype=np.float32), np.array([0, 2, -2]), np.arange(3))
        rec = replace(rec, missed=np.array([1, 0, 1, 0, 0]))
        truths, preds = [np.array([0, 2, -2])], [np.array([0, 2, 2])]
        cm = np.zeros((5, 5), dtype=np.int64)
        cm[0, 0] = cm[2, 2] = 1
        full, det = _with_detection_errors(cm, [rec], truths, preds)
        assert full.shape == (6, 6)
        assert full[5].tolist() == [0, 0, 1, 0, 0, 0]  # the false detection, called V
        assert full[:, 5].tolist() == [1, 0, 1, 0, 0, 0]  # one N and one V never detected
        res = result_from_confusion("inter-patient", full)
        assert res["classes"]["V"]["se"] == pytest.approx(50.0)  # 1 of 2 V beats
        assert res["classes"]["V"]["ppv"] == pytest.approx(50.0)  # 1 of 2 V calls
        assert res["accuracy"] == pytest.approx(100.0 * 2 / 5)
        assert res["gross"]["VEB"]["fn"] == 1
        assert (det["matched"], det["missed"], det["false"]) == (2, 2, 1)
        assert det["se"] == pytest.approx(50.0)
        assert det["ppv"] == pytest.approx(100.0 * 2 / 3)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`peaks` must be one of"):
            evaluate_model(None, protocol="inter-patient", peaks="annotations")


@pytest.mark.data
class TestNoisyTestRecords:
    def test_basic(
        self, tiny_config: ModelConfig, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """NSTDB noise goes into the test records only, and the result says so."""
        import model.evaluation as evaluation

        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
        pre = PreprocessConfig(fs=tiny_config.fs, window_s=tiny_config.n_window / tiny_config.fs)
        split = Split("inter-patient", ("101",), (), ("100", "119"))
        state = get_model("cnn_lstm", tiny_config).state_dict()
        path = save_checkpoint(Checkpoint("cnn_lstm", tiny_config, pre, state, split), tmp_path / "m.pt")
        calls: list[tuple[list[str], object, object]] = []

        def spy(records: Any, *args: Any, **kw: Any) -> list[RecordBeats]:
            calls.append((list(records), kw.get("noise"), kw.get("snr_db")))
            return load_records(records, *args, **kw)

        monkeypatch.setattr(evaluation, "load_records", spy)
        kw = {"protocol": "inter-patient", "data_dir": data_dir, "leads": 1, "progress": False}
        clean = evaluate_model(path, **kw)
        noisy = evaluate_model(path, noise="ma", snr_db=0.0, **kw)
        assert calls[2:] == [(["100", "119"], "ma", 0.0), (["101"], None, None)]  # training records clean
        assert (clean["noise"], noisy["noise"]) == (None, {"source": "ma", "snr_db": 0.0})
        assert noisy["notes"][-1].startswith("NSTDB ma noise mixed into every test record at 0 dB")
        assert noisy["test_records"] == clean["test_records"] == ["100", "119"]
        assert noisy["n_beats"] == clean["n_beats"]
        with pytest.raises(ValueError, match="`noise` is only supported for the inter-patient protocol"):
            evaluate_model(path, protocol="random", noise="ma", snr_db=6.0)


def _labelled(name: str, truth: list[int]) -> RecordBeats:
    return replace(_rec(truth), record=name)


class TestRecordIntervals:
    def test_basic(self) -> None:
        recs = [_labelled("a", [0, 0, 1, -1]), _labelled("b", [0, 2, 2])]
        truths = [r.labels for r in recs]
        preds = [np.array([0, 1, 1, 0]), np.array([0, 2, 0])]
        out = record_intervals(recs, truths, preds, n_resamples=100)
        a, b = (np.asarray(out["records"][k]) for k in ("a", "b"))
        assert (a[0, 0], a[0, 1], a[1, 1], a.sum()) == (1, 1, 1, 3)  # the unlabelled beat is left out
        assert (b[0, 0], b[2, 2], b[2, 0], b.sum()) == (1, 1, 1, 3)
        assert out["intervals"]["n_records"] == 2
        assert set(out["intervals"]["classes"]) == set("NSVFQ")

    def test_detector(self) -> None:
        """At the detector's peaks each record's matrix has its own false detections and missed beats."""
        rec = replace(_labelled("a", [0, 2, -2]), missed=np.array([1, 0, 0, 0, 0]))
        other = _labelled("b", [0, 0])
        truths, preds = [rec.labels, other.labels], [np.array([0, 2, 2]), np.array([0, 0])]
        out = record_intervals([rec, other], truths, preds, detector=True, n_resamples=100)
        a = np.asarray(out["records"]["a"])
        assert a.shape == (6, 6)
        assert (a[5, 2], a[0, 5]) == (1, 1)  # the false detection called V, the missed N beat
        assert np.asarray(out["records"]["b"])[5].sum() == 0
        assert "none" not in out["intervals"]["classes"]


def _inter_patient(records: dict[str, Any], leads: str = "1") -> dict[str, Any]:
    return {"by_leads": {leads: {"records": records}}}


class TestCompareResults:
    def test_basic(self) -> None:
        rng = np.random.default_rng(1)
        base = {f"r{i}": rng.integers(0, 20, size=(5, 5)).tolist() for i in range(6)}
        better = {k: (np.asarray(v) + np.diag([0, 15, 15, 0, 0])).tolist() for k, v in base.items()}
        res = compare_results(_inter_patient(better), _inter_patient(base), n_resamples=300)
        assert res["records"] == list(base)
        assert res["candidate"]["classes"]["S"]["f1"] > res["baseline"]["classes"]["S"]["f1"]
        assert res["difference"]["classes"]["S"]["f1"][0] > 0  # ahead on every resample of patients
        assert res["difference"]["share_ahead"]["classes"]["V"]["se"] == 1.0
        pooled = np.sum([np.asarray(v) for v in better.values()], axis=0)
        assert res["candidate"]["accuracy"] == pytest.approx(100 * np.trace(pooled) / pooled.sum())
        # A terms baseline's test block compares like an evaluation on MLII.
        terms = {"test": {"records": base}}
        same = compare_results(_inter_patient(base), terms, n_resamples=50)
        assert same["difference"]["accuracy"] == [0, 0]

    def test_exceptions(self) -> None:
        one = _inter_patient({"a": np.eye(5).tolist(), "b": np.eye(5).tolist()})
        with pytest.raises(ValueError, match="cover different records"):
            compare_results(one, _inter_patient({"a": np.eye(5).tolist(), "c": np.eye(5).tolist()}))
        with pytest.raises(ValueError, match="the baseline was not evaluated with 2 lead"):
            compare_results(_inter_patient(one["by_leads"]["1"]["records"], "2"), one, leads=2)
        with pytest.raises(ValueError, match="the candidate has no per-record confusion matrices"):
            compare_results({"by_leads": {"1": {}}}, one)
        with pytest.raises(ValueError, match="terms baseline, scored on MLII only"):
            compare_results({"test": {"records": {}}}, one, leads=2)
        with pytest.raises(ValueError, match="not an inter-patient evaluation"):
            compare_results(one, {"accuracy": 1.0})
        six = _inter_patient({"a": np.eye(6).tolist(), "b": np.eye(6).tolist()})
        with pytest.raises(ValueError, match="one result is at the reference peaks"):
            compare_results(one, six)

    def test_cli(self, tmp_path: Path) -> None:
        from click.testing import CliRunner

        from app import cli

        rng = np.random.default_rng(2)
        base = {f"r{i}": rng.integers(0, 20, size=(5, 5)).tolist() for i in range(4)}
        better = {k: (np.asarray(v) + np.diag([0, 15, 0, 0, 0])).tolist() for k, v in base.items()}
        a, b, out = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "cmp.json"
        a.write_text(json.dumps(_inter_patient(better)))
        b.write_text(json.dumps(_inter_patient(base)))
        result = CliRunner().invoke(cli, ["evaluate", "compare", str(a), str(b), "--json", str(out)])
        assert result.exit_code == 0, result.output
        assert "1 lead(s), 4 records" in result.output
        assert "ahead in 100.0 % of resamples" in result.output  # the S Se row
        assert json.loads(out.read_text())["records"] == list(base)
        result = CliRunner().invoke(cli, ["evaluate", "compare", str(a), str(b), "--leads", "2"])
        assert result.exit_code == 2
        assert "not evaluated with 2 lead(s)" in result.output
