"""A tiny training run, determinism and the checkpoint round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.cnn_lstm import ModelConfig
from model.data import PreprocessConfig, inter_patient_split
from model.registry import get_model
from model.training import TrainConfig, select_device, train

TINY = TrainConfig(
    records=("101", "106"),
    validation_records=("118",),
    epochs=3,
    max_batches=6,
    batch_size=16,
    hidden=8,
    branch_channels=3,
    conv_channels=8,
    seq_len=8,
    lr=3e-3,
)


@pytest.mark.data
@pytest.mark.slow
class TestTrain:
    def test_loss_falls(self, data_dir: Path, tmp_path: Path) -> None:
        cfg = TrainConfig(**{**TINY.__dict__, "data_dir": str(data_dir)})
        res = train(cfg, out=tmp_path / "m.pt", progress=False)
        losses = [h["loss"] for h in res["history"]]
        assert losses[-1] < losses[0]
        ckpt = load_checkpoint(tmp_path / "m.pt")
        assert ckpt.split.train == ("101", "106")
        assert ckpt.split.validation == ("118",)
        assert ckpt.train_config["lr"] == 3e-3
        assert ckpt.metrics["epochs_run"] == 3
        assert "confusion" in ckpt.metrics["validation"]

    def test_deterministic(self, data_dir: Path, tmp_path: Path) -> None:
        cfg = TrainConfig(**{**TINY.__dict__, "data_dir": str(data_dir), "epochs": 1, "max_batches": 3})
        train(cfg, out=tmp_path / "a.pt", progress=False)
        train(cfg, out=tmp_path / "b.pt", progress=False)
        a, b = load_checkpoint(tmp_path / "a.pt"), load_checkpoint(tmp_path / "b.pt")
        for k, v in a.state_dict.items():
            assert torch.equal(v, b.state_dict[k]), k


class TestTrainConfig:
    def test_plain_types(self) -> None:
        for name, value in TrainConfig().__dict__.items():
            assert isinstance(value, int | float | str | bool | tuple), name
            if isinstance(value, tuple):
                assert all(isinstance(v, int | str) for v in value), name

    def test_paper_defaults(self) -> None:
        c = TrainConfig()
        assert (c.lr, c.batch_size, c.dropout, c.l2, c.epochs, c.patience) == (1e-3, 64, 0.3, 1e-4, 50, 10)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`device` must be"):
            select_device("tpu")


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

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            load_checkpoint(tmp_path / "none.pt")
        torch.save({"format": "other"}, tmp_path / "x.pt")
        with pytest.raises(ValueError, match="is not a"):
            load_checkpoint(tmp_path / "x.pt")
