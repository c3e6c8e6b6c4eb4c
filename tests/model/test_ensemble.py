"""Seed ensembles: averaged probabilities, one checkpoint, the inference API unchanged."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from app import cli
from model.checkpoint import Checkpoint, ensemble_checkpoints, load_checkpoint, save_checkpoint
from model.cnn_lstm import BeatSequenceModel, ModelConfig
from model.data import PreprocessConfig, inter_patient_split
from model.ensemble import SeedEnsemble
from model.inference import BeatClassifier
from model.registry import get_model, list_models


def _members(config: ModelConfig, k: int, name: str = "cnn_lstm") -> list[BeatSequenceModel]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(get_model(name, config).eval())
    return nets


def _run(path: Path, net: BeatSequenceModel, seed: int) -> Path:
    cfg = net.config
    pre = PreprocessConfig(fs=cfg.fs, window_s=cfg.n_window / cfg.fs)
    ckpt = Checkpoint(
        "cnn_lstm", cfg, pre, net.state_dict(), inter_patient_split(), metrics={"seed": seed}, train_config={}
    )
    return save_checkpoint(ckpt, path)


class TestSeedEnsemble:
    @pytest.mark.parametrize("name", list_models())
    def test_basic(self, name: str, tiny_config: ModelConfig) -> None:
        """Class and early probabilities are the members' means; abnormal probability too."""
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True, shape_skip=True)
        nets = _members(cfg, 3, name)
        ens = SeedEnsemble(nets).eval()
        x, rr = torch.randn(2, 5, 2, cfg.n_window), torch.rand(2, 5, 7) + 0.5
        out = ens(x, rr)
        outs = [n(x, rr) for n in nets]
        want = torch.stack([o.class_logits.softmax(-1) for o in outs]).mean(0)
        assert torch.allclose(out.class_logits.exp(), want, atol=1e-6)
        want_early = torch.stack([o.early_logits.softmax(-1) for o in outs]).mean(0)
        assert torch.allclose(out.early_logits.exp(), want_early, atol=1e-6)
        want_abn = torch.stack([o.abnormal_logit.sigmoid() for o in outs]).mean(0)
        assert torch.allclose(out.abnormal_logit.sigmoid(), want_abn, atol=1e-6)

    def test_edge_cases(self, tiny_config: ModelConfig) -> None:
        """One member is that member; batch norms fold in every member."""
        (net,) = _members(tiny_config, 1)
        x, rr = torch.randn(1, 4, 2, tiny_config.n_window), torch.rand(1, 4, 7) + 0.5
        ens = SeedEnsemble([net]).eval()
        assert torch.allclose(
            ens(x, rr).class_logits.softmax(-1), net(x, rr).class_logits.softmax(-1), atol=1e-6
        )
        ens = SeedEnsemble(_members(tiny_config, 2)).eval()
        features = ens.encode(x, rr)
        full, _ = ens.temporal(features)
        assert torch.allclose(ens.temporal(features, last_only=True)[0], full[:, -1:])
        before = ens(x, rr).class_logits
        assert ens.encoder._fused is None
        ens.encoder.fuse()
        assert ens.encoder._fused is not None
        assert torch.allclose(ens(x, rr).class_logits, before, atol=1e-5)

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        with pytest.raises(ValueError, match="at least one member"):
            SeedEnsemble([])
        with pytest.raises(ValueError, match="must share type and config"):
            SeedEnsemble([get_model("cnn_lstm", tiny_config), get_model("cnn", tiny_config)])
        with pytest.raises(ValueError, match="must share type and config"):
            SeedEnsemble(
                [get_model("cnn_lstm", tiny_config), get_model("cnn_lstm", replace(tiny_config, hidden=4))]
            )
        ens = SeedEnsemble(_members(tiny_config, 2))
        with pytest.raises(ValueError, match="takes no carried state"):
            ens.temporal(torch.zeros(1, 2, 10), (torch.zeros(1), torch.zeros(1)))


class TestEnsembleCheckpoint:
    def test_round_trip(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        """Runs -> one file -> BeatClassifier: batch and stream agree and match the in-memory ensemble."""
        nets = _members(tiny_config, 3)
        paths = [_run(tmp_path / f"s{i}.pt", n, i) for i, n in enumerate(nets)]
        ckpt = ensemble_checkpoints(paths)
        assert ckpt.members == 3
        assert ckpt.metrics["members"] == [{"seed": 0}, {"seed": 1}, {"seed": 2}]
        back = load_checkpoint(save_checkpoint(ckpt, tmp_path / "ens.pt"))
        assert back.members == 3
        clf = BeatClassifier(back)
        rng = np.random.default_rng(0)
        x, rr = rng.standard_normal((9, 2, tiny_config.n_window)), rng.uniform(0.5, 1.5, (9, 7))
        batch = clf.predict(x, rr)
        stream = clf.stream(n_leads=2)
        got = np.concatenate([stream.push(x[i], rr[i]).class_probs for i in range(9)])
        assert np.allclose(got, batch.class_probs, atol=1e-6)
        expected = BeatClassifier(load_checkpoint(paths[0]))
        assert not np.allclose(expected.predict(x, rr).class_probs, batch.class_probs)  # not one member
        xt, rt, _, _ = clf.prepare(x, rr)
        with torch.no_grad():  # the first seq_len beats: the whole sequence is their context
            seq = SeedEnsemble(nets).eval()(xt[None], rt[None])
        assert np.allclose(seq.class_logits[0, :4].exp().numpy(), batch.class_probs[:4], atol=1e-5)

    def test_exceptions(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        (net,) = _members(tiny_config, 1)
        a = _run(tmp_path / "a.pt", net, 0)
        with pytest.raises(ValueError, match="at least two runs, got 1"):
            ensemble_checkpoints([a])
        other = get_model("cnn_lstm", replace(tiny_config, hidden=4))
        b = _run(tmp_path / "b.pt", other, 1)
        with pytest.raises(ValueError, match=r"differs from .* in model_config"):
            ensemble_checkpoints([a, b])
        ens = save_checkpoint(ensemble_checkpoints([a, a]), tmp_path / "e.pt")
        with pytest.raises(ValueError, match="is already an ensemble of 2"):
            ensemble_checkpoints([ens, a])

    def test_cli(self, tiny_config: ModelConfig, tmp_path: Path) -> None:
        nets = _members(tiny_config, 2)
        paths = [str(_run(tmp_path / f"s{i}.pt", n, i)) for i, n in enumerate(nets)]
        out = tmp_path / "ens.pt"
        result = CliRunner().invoke(cli, ["ensemble", *paths, "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "2 x cnn_lstm" in result.output
        assert load_checkpoint(out).members == 2
        result = CliRunner().invoke(cli, ["ensemble", paths[0], "--out", str(out)])
        assert result.exit_code == 2
        assert "at least two runs" in result.output
