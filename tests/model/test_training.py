"""A tiny training run, determinism and the checkpoint round trip."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.cnn_lstm import ModelConfig
from model.data import BeatSequences, PreprocessConfig, RecordBeats, inter_patient_split
from model.metrics import class_metrics
from model.registry import get_model
from model.training import (
    OFFSET_GRID,
    TrainConfig,
    _recompute_batch_norm,
    _search_offsets,
    _update_average,
    augment_batch,
    calibrate_class_offsets,
    grid_search,
    make_data,
    select_device,
    selection_score,
    train,
)
from sigproc.rhythm import AFDetector, SVTRule


@pytest.mark.data
@pytest.mark.slow
class TestTrain:
    def test_loss_falls(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        cfg = tiny_train
        res = train(cfg, out=tmp_path / "m.pt", progress=False)
        losses = [h["loss"] for h in res["history"]]
        assert losses[-1] < losses[0]
        ckpt = load_checkpoint(tmp_path / "m.pt")
        assert ckpt.split.train == ("101", "106")
        assert ckpt.split.validation == ("118",)
        assert ckpt.train_config["lr"] == 3e-3
        assert ckpt.metrics["epochs_run"] == 3
        assert "confusion" in ckpt.metrics["validation"]
        for h in res["history"]:  # each held-out record's matrix, for record-level resampling
            assert list(h["val_records"]) == ["118"]
            assert h["val_records"]["118"] == h["val_confusion"]

    def test_refit_without_validation(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        """No validation records: exactly ``epochs`` epochs, the last one kept, augmentation on."""
        cfg = replace(tiny_train, validation_records=(), patience=1)
        res = train(replace(cfg, augment=True), out=tmp_path / "m.pt", progress=False)
        assert (res["epochs_run"], res["best_epoch"]) == (3, 3)  # patience 1 stops nothing
        assert all("val_score" not in h for h in res["history"])
        ckpt = load_checkpoint(tmp_path / "m.pt")
        assert ckpt.split.validation == ()
        assert ckpt.train_config["augment"] is True
        with pytest.raises(ValueError, match="`calibrate` needs validation records"):
            train(replace(cfg, calibrate=True), out=tmp_path / "c.pt", progress=False)

    def test_lr_halves_on_plateau(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        cfg = replace(tiny_train, epochs=5, lr_patience=1)
        history = train(cfg, out=tmp_path / "m.pt", progress=False)["history"]
        # The rule of ReduceLROnPlateau (mode max, relative threshold 1e-4):
        # halve after more than `lr_patience` epochs in a row without a better score.
        lr, best, bad = cfg.lr, -np.inf, 0
        for h in history:
            if h["val_score"] > best * (1 + 1e-4) if best > 0 else h["val_score"] > best:
                best, bad = h["val_score"], 0
            else:
                bad += 1
            if bad > cfg.lr_patience:
                lr, bad = lr / 2, 0
            assert h["lr"] == pytest.approx(lr)
        with pytest.raises(ValueError, match="`lr_patience` must be >= 0"):
            train(replace(cfg, lr_patience=-1), out=tmp_path / "x.pt", progress=False)

    def test_grid_search(
        self, tiny_train: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The grid's table: one row per setting, best validation score first, the epoch cap recorded."""
        import csv

        import model.training as training

        monkeypatch.setattr(training, "GRID", {"lr": (1e-3, 3e-3), "batch_size": (16,), "dropout": (0.2,)})
        cfg = replace(tiny_train, max_batches=2)
        rows = grid_search(cfg, out_csv=tmp_path / "grid.csv", max_epochs=1)
        assert sorted(r["lr"] for r in rows) == [1e-3, 3e-3]
        assert [r["val_score"] for r in rows] == sorted((r["val_score"] for r in rows), reverse=True)
        assert all(r["max_epochs"] == 1 and r["best_epoch"] == 1 for r in rows)
        with (tmp_path / "grid.csv").open() as fh:
            table = list(csv.DictReader(fh))
        assert [float(r["lr"]) for r in table] == [r["lr"] for r in rows]
        with pytest.raises(ValueError, match="`max_epochs` must be >= 1"):
            grid_search(cfg, out_csv=tmp_path / "x.csv", max_epochs=0)
        with pytest.raises(ValueError, match="`validation_records` is empty"):
            grid_search(replace(cfg, validation_records=()), out_csv=tmp_path / "x.csv", max_epochs=1)

    def test_weight_averaging(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        """SWA from epoch 2: the raw network trains exactly as without it; only averages are kept."""
        cfg = replace(tiny_train, epochs=4, patience=4)
        plain = train(cfg, out=tmp_path / "plain.pt", progress=False)["history"]
        res = train(replace(cfg, swa_start=2), out=tmp_path / "swa.pt", progress=False)
        history = res["history"]
        assert history[0]["val_score"] == plain[0]["val_score"]
        assert "val_score_raw" not in history[0]
        for h, p in zip(history[1:], plain[1:], strict=True):
            assert h["val_score_raw"] == p["val_score"]  # the training run's random state is untouched
            assert h["val_confusion_raw"] == p["val_confusion"]
        assert res["best_epoch"] >= 2  # the warm-up epoch is never kept
        best = history[res["best_epoch"] - 1]["val_score"]
        assert best == max(h["val_score"] for h in history[1:])
        assert load_checkpoint(tmp_path / "swa.pt").train_config["swa_start"] == 2

    def test_select_on(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        """Early stopping follows the mean F1 of ``select_on``, computed from each epoch's matrix."""
        cfg = replace(tiny_train, select_on=("N", "V", "F"))
        res = train(cfg, out=tmp_path / "m.pt", progress=False)
        for h in res["history"]:
            per = class_metrics(np.array(h["val_confusion"]))
            f1 = [np.nan_to_num(per[c]["f1"]) for c in ("N", "V", "F") if per[c]["support"] > 0]
            assert h["val_score"] == pytest.approx(np.mean(f1))
            assert set(h) >= {"val_f1_N", "val_f1_S", "val_f1_V", "val_f1_F"}
        assert res["best_epoch"] == 1 + int(np.argmax([h["val_score"] for h in res["history"]]))
        assert load_checkpoint(tmp_path / "m.pt").train_config["select_on"] == ["N", "V", "F"]

    def test_deterministic(self, tiny_train: TrainConfig, tmp_path: Path) -> None:
        cfg = replace(tiny_train, epochs=1, max_batches=3)
        train(cfg, out=tmp_path / "a.pt", progress=False)
        train(cfg, out=tmp_path / "b.pt", progress=False)
        a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
        for k, v in a.state_dict.items():
            assert torch.equal(v, b.state_dict[k]), k


@pytest.mark.data
class TestMakeData:
    def test_cv_parts(self, tiny_train: TrainConfig) -> None:
        """Each fold: test, validation and training apart; the validation tenth drawn from every record."""
        cfg = replace(tiny_train, protocol="cv", records=("101", "106", "118"), n_folds=5)
        tests = []
        for k in range(5):
            data = make_data(replace(cfg, fold=k))
            for rec, val, test in zip(data.validation, data.validation_mask, data.test_mask, strict=True):
                assert not (val & test).any()
                assert val.sum() > 0, f"fold {k}: no validation beats in record {rec.record}"
            n_val, n_test = (
                sum(int(m.sum()) // cfg.seq_len for m in ms) for ms in (data.validation_mask, data.test_mask)
            )
            assert n_val == (len(data.train) + n_val + n_test) // 10
            tests.append(np.concatenate(data.test_mask))
        assert (np.sum(tests, axis=0) <= 1).all()  # each beat is tested in one fold at most


class TestTrainConfig:
    def test_plain_types(self) -> None:
        for name, value in TrainConfig().__dict__.items():
            assert isinstance(value, int | float | str | bool | tuple), name
            if isinstance(value, tuple):
                assert all(isinstance(v, int | str) for v in value), name

    def test_paper_defaults(self) -> None:
        c = TrainConfig()
        assert (c.lr, c.batch_size, c.dropout, c.l2, c.epochs, c.patience) == (1e-3, 64, 0.3, 1e-4, 50, 10)

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="`device` must be"):
            select_device("tpu")
        with pytest.raises(ValueError, match=r"`ema_decay` must be in \[0, 1\), got 1.0"):
            train(TrainConfig(ema_decay=1.0), out=tmp_path / "x.pt", progress=False)
        with pytest.raises(ValueError, match=r"`swa_start` must be in 0..epochs \(50\), got 51"):
            train(TrainConfig(swa_start=51), out=tmp_path / "x.pt", progress=False)
        with pytest.raises(ValueError, match="`swa_start` and `ema_decay`"):
            train(TrainConfig(swa_start=5, ema_decay=0.9), out=tmp_path / "x.pt", progress=False)
        with pytest.raises(ValueError, match=r"`select_on`: \['X'\] not among the classes"):
            TrainConfig(select_on=("N", "X"))
        for bad in ((), ("N", "N")):
            with pytest.raises(ValueError, match="`select_on` needs distinct classes"):
                TrainConfig(select_on=bad)


class TestSelectionScore:
    def test_basic(self) -> None:
        """The mean F1 of the chosen classes that have beats; an undefined F1 counts as 0."""
        val = {
            "classes": {
                "N": {"f1": 98.0, "support": 900},
                "S": {"f1": 80.0, "support": 40},
                "V": {"f1": 90.0, "support": 50},
                "F": {"f1": float("nan"), "support": 10},  # no F predicted
                "Q": {"f1": float("nan"), "support": 0},
            }
        }
        assert selection_score(val) == pytest.approx((98 + 80 + 90) / 3)
        assert selection_score(val, ("N", "S", "V", "F")) == pytest.approx((98 + 80 + 90 + 0) / 4)
        assert selection_score(val, ("N", "Q")) == pytest.approx(98.0)  # Q has no beats
        assert selection_score(val, ("Q",)) == 0.0


class TestAugmentBatch:
    def test_basic(self) -> None:
        rng = np.random.default_rng(0)
        w = rng.normal(size=(4, 5, 2, 30)).astype(np.float32)
        rr = rng.uniform(0.5, 1.5, size=(4, 5, 7)).astype(np.float32)
        w2, rr2 = augment_batch(w, rr, np.random.default_rng(1), max_shift=2, noise=0.0)
        assert w2.shape == w.shape
        assert rr2.shape == rr.shape
        assert w2.dtype == rr2.dtype == np.float32
        # One factor per sequence on the four intervals; the ratios are untouched.
        factor = rr2[..., :4] / rr[..., :4]
        assert np.allclose(factor, factor[:, :1, :1], rtol=1e-5)
        assert np.all((factor > np.exp(-0.25) - 1e-6) & (factor < np.exp(0.25) + 1e-6))
        np.testing.assert_array_equal(rr2[..., 4:], rr[..., 4:])
        # Every window is its own shift by at most two samples, both leads alike.
        for b in range(4):
            for t in range(5):
                match = [
                    k
                    for k in range(-2, 3)
                    if np.array_equal(w2[b, t], w[b, t][:, np.clip(np.arange(30) + k, 0, 29)])
                ]
                assert match, (b, t)
        # The inputs are not modified.
        assert not np.shares_memory(rr2, rr)

    def test_noise(self) -> None:
        w = np.zeros((64, 8, 1, 50), dtype=np.float32)
        rr = np.ones((64, 8, 7), dtype=np.float32)
        w2, _ = augment_batch(w, rr, np.random.default_rng(0), noise=0.05)
        assert abs(float(w2.std()) - 0.05) < 0.002


class TestWeightAverage:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """One update moves every parameter and float buffer a quarter of the way (decay 0.75)."""
        torch.manual_seed(0)
        avg, net = get_model("cnn_lstm", tiny_config), get_model("cnn_lstm", tiny_config)
        net(torch.randn(3, 4, 2, tiny_config.n_window), torch.rand(3, 4, 7) + 0.5)  # batch-norm statistics
        before = {k: v.clone() for k, v in avg.state_dict().items()}
        _update_average(avg, net, 0.75)
        target = net.state_dict()
        for k, v in avg.state_dict().items():
            if v.is_floating_point():
                assert torch.allclose(v, 0.75 * before[k] + 0.25 * target[k], atol=1e-6), k
            else:
                assert torch.equal(v, target[k]), k

    def test_equal_weights(self, tiny_config: ModelConfig) -> None:
        """Decays n / (n + 1) make the running average of n + 1 networks their plain mean (SWA)."""
        torch.manual_seed(0)
        nets = [get_model("cnn_lstm", tiny_config) for _ in range(4)]
        avg = copy.deepcopy(nets[0])
        for n, net in enumerate(nets[1:], start=1):
            _update_average(avg, net, n / (n + 1))
        for name, p in avg.named_parameters():
            mean = torch.stack([dict(net.named_parameters())[name] for net in nets]).mean(0)
            assert torch.allclose(p, mean, atol=1e-6), name


class TestRecomputeBatchNorm:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """The first batch norm's statistics become those of its inputs over every sequence.

        Six sequences in three batches of two: the mean of the batch means is the overall mean.
        """
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        w = tiny_config.n_window
        recs = [
            RecordBeats(
                name,
                rng.normal(size=(n, 2, w)).astype(np.float32),
                (rng.random((n, 7)) + 0.5).astype(np.float32),
                np.zeros(n, dtype=np.int64),
                np.arange(n, dtype=np.int64) * 300,
            )
            for name, n in (("a", 13), ("b", 12))
        ]
        seqs = BeatSequences(recs, seq_len=tiny_config.seq_len, horizons=tiny_config.horizons)
        net = get_model("cnn_lstm", tiny_config)
        cfg = TrainConfig(batch_size=2, lead_dropout=0.0, n_leads=2)
        bn = net.encoder.post_branch[0]
        bn.running_mean.fill_(7.0)
        state = torch.random.get_rng_state()
        _recompute_batch_norm(net, seqs, cfg, torch.device("cpu"))
        assert torch.equal(torch.random.get_rng_state(), state)  # dropout was off
        assert not net.training
        assert bn.momentum == 0.1
        windows = torch.from_numpy(seqs.batch(np.arange(len(seqs)))[0])  # (S, T, L, W)
        with torch.no_grad():
            z = net.encoder.attention(windows).reshape(-1, 1, w)
            f = torch.cat([branch(z) for branch in net.encoder.branches], dim=1)
        assert torch.allclose(bn.running_mean, f.mean(dim=(0, 2)), atol=1e-5)
        assert len(seqs) == 6
        assert torch.allclose(bn.running_var, f.var(dim=(0, 2)), rtol=0.1)  # mean of the batches' variances


class TestCheckpoint:
    def test_round_trip(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        torch.manual_seed(0)
        net = get_model("cnn_lstm", tiny_config).eval()
        pre = PreprocessConfig(fs=tiny_config.fs, window_s=tiny_config.n_window / tiny_config.fs)
        ckpt = Checkpoint(
            "cnn_lstm", tiny_config, pre, net.state_dict(), inter_patient_split(), metrics={"a": 1.5}
        )
        path = save_checkpoint(ckpt, tmp_path / "c.pt")
        back = load_checkpoint(path)
        assert back.model_config == tiny_config
        assert back.preprocess == pre
        assert back.split == inter_patient_split()
        assert back.metrics == {"a": 1.5}
        assert back.label_map == ["N", "S", "V", "F", "Q"]
        x, rr = torch.randn(1, 3, 2, tiny_config.n_window), torch.rand(1, 3, 7) + 0.5
        assert torch.equal(net(x, rr).class_logits, back.build()(x, rr).class_logits)
        assert back.af_detector is None
        gated = save_checkpoint(
            replace(ckpt, af_detector=AFDetector(window=32), svt_rule=SVTRule(0.5)), tmp_path / "g.pt"
        )
        assert load_checkpoint(gated).af_detector == AFDetector(window=32)
        assert load_checkpoint(gated).svt_rule == SVTRule(0.5)
        assert back.svt_rule is None

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_checkpoint(tmp_path / "none.pt")
        torch.save({"format": "other"}, tmp_path / "x.pt")
        with pytest.raises(ValueError, match="is not a"):
            load_checkpoint(tmp_path / "x.pt")


class TestClassOffsets:
    def test_basic(self) -> None:
        """S beats score S 0.6 below N, N beats 0.8 below: the smallest separating offset wins."""
        labels = np.array([0] * 20 + [1] * 5 + [2] * 5, dtype=np.int64)
        logits = torch.zeros(30, 5)
        logits[:, 1] = torch.where(torch.from_numpy(labels) == 1, -0.6, -0.8)
        logits[:, 2] = torch.where(torch.from_numpy(labels) == 2, 1.0, -1.0)  # V already right
        logits[:, 3:] = -5.0
        offsets = _search_offsets([(logits, labels)], ("S", "V"), OFFSET_GRID, 2, 5)
        assert offsets == (0.0, 0.75, 0.0, 0.0, 0.0)  # 0.75 is the first grid value in (0.6, 0.8]

    def test_edge_cases(self, tiny_config: ModelConfig) -> None:
        """On a real (tiny) network: one offset per class, N untouched, values from the grid."""
        torch.manual_seed(0)
        net = get_model("cnn_lstm", tiny_config)
        rng = np.random.default_rng(0)
        n = 30
        rec = RecordBeats(
            "x",
            rng.standard_normal((n, 2, tiny_config.n_window)).astype(np.float32),
            rng.uniform(0.6, 1.2, (n, 7)).astype(np.float32),
            rng.choice([0, 0, 0, 1, 2], n).astype(np.int64),
            np.arange(n, dtype=np.int64) * 100,
        )
        offsets = calibrate_class_offsets(net, [rec])
        assert len(offsets) == 5
        assert offsets[0] == 0.0
        assert set(offsets) <= set(OFFSET_GRID)
        shifted = get_model("cnn_lstm", replace(tiny_config, class_offsets=offsets)).eval()
        shifted.load_state_dict(net.state_dict())
        x, rr = torch.from_numpy(rec.windows)[None], torch.from_numpy(rec.rr)[None]
        diff = shifted(x, rr).class_logits - net.eval()(x, rr).class_logits
        assert torch.allclose(diff, torch.tensor(offsets).expand_as(diff), atol=1e-6)

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        net = get_model("cnn_lstm", tiny_config)
        with pytest.raises(ValueError, match="`classes` must be AAMI classes"):
            calibrate_class_offsets(net, [], classes=("X",))
        with pytest.raises(ValueError, match="one value per class"):
            replace(tiny_config, class_offsets=(1.0,))
