"""Each term of eq. 17 against a value computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from model.cnn_lstm import ModelConfig, ModelOutput
from model.losses import (
    LossConfig,
    abnormal_loss,
    class_weights_from_counts,
    classification_loss,
    early_alarm_loss,
    l2_penalty,
    morphology_regulariser,
    temporal_consistency,
    total_loss,
)
from model.registry import get_model

LN2 = math.log(2.0)


def _two_class_logits(values: list[list[float]]) -> torch.Tensor:
    """Logits whose softmax over 2 classes is known: [0, z] -> p1 = sigmoid(z)."""
    return torch.tensor([[[0.0, v] for v in row] for row in values])  # (B, T, 2)


class TestClassificationLoss:
    def test_basic(self) -> None:
        # Equal logits: CE = ln 2 per beat, whatever the weights.
        logits = torch.zeros(1, 3, 2)
        labels = torch.tensor([[0, 1, 1]])
        out = classification_loss(logits, labels, torch.tensor([1.0, 3.0]))
        assert out.item() == pytest.approx(LN2)

    def test_weights(self) -> None:
        # Beat 0: label 0, p0 = 1/(1+e) -> CE = ln(1+e); beat 1: label 1, equal logits -> ln 2.
        logits = _two_class_logits([[1.0, 0.0]])
        labels = torch.tensor([[0, 1]])
        out = classification_loss(logits, labels, torch.tensor([1.0, 3.0]))
        expected = (1 * math.log(1 + math.e) + 3 * LN2) / 4
        assert out.item() == pytest.approx(expected)

    def test_edge_cases(self) -> None:
        logits = torch.zeros(1, 2, 2, requires_grad=True)
        assert classification_loss(logits, torch.tensor([[-1, -1]]), torch.ones(2)).item() == 0.0


class TestAbnormalLoss:
    def test_basic(self) -> None:
        # logit 0 -> BCE ln 2 for either target; logit ln 3 with target 1 -> -ln(3/4).
        logit = torch.tensor([[0.0, math.log(3.0), 5.0]])
        labels = torch.tensor([[0, 2, -1]])
        expected = (LN2 - math.log(0.75)) / 2
        assert abnormal_loss(logit, labels).item() == pytest.approx(expected)


class TestTemporalConsistency:
    def test_basic(self) -> None:
        # p = [0.5, 0.5] then [1/(1+e), e/(1+e)]; labels equal -> squared distance counted.
        logits = _two_class_logits([[0.0, 1.0, 1.0]])
        labels = torch.tensor([[0, 0, 1]])  # only the first pair qualifies
        q = math.e / (1 + math.e)
        expected = 2 * (q - 0.5) ** 2
        assert temporal_consistency(logits, labels).item() == pytest.approx(expected)

    def test_edge_cases(self) -> None:
        logits = _two_class_logits([[0.0, 3.0]])
        assert temporal_consistency(logits, torch.tensor([[0, 1]])).item() == 0.0


class TestEarlyAlarmLoss:
    def test_basic(self) -> None:
        # Equal logits: CE ln 2 per target, so the weighted mean is ln 2.
        logits = torch.zeros(1, 2, 1, 2)  # (B, T, H, C)
        future = torch.tensor([[[0], [1]]])
        assert early_alarm_loss(logits, future, torch.ones(2), 2.0).item() == pytest.approx(LN2)

    def test_emphasis(self) -> None:
        # Target 0 with CE ln(1+e) (weight 1), target 1 with CE ln 2 (weight 1 + 2 = 3).
        logits = torch.tensor([[[[0.0, 1.0]], [[0.0, 0.0]]]])
        future = torch.tensor([[[0], [1]]])
        expected = (math.log(1 + math.e) + 3 * LN2) / 4
        assert early_alarm_loss(logits, future, torch.ones(2), 2.0).item() == pytest.approx(expected)


class TestMorphologyRegulariser:
    def test_basic(self) -> None:
        w = torch.tensor([[[1.0, 2.0, 4.0]]])  # flip: [4, 2, 1]
        sym, tv = morphology_regulariser(w)
        assert sym.item() == pytest.approx((9 + 0 + 9) / 3)
        assert tv.item() == pytest.approx((1 + 2) / 2)

    def test_edge_cases(self) -> None:
        sym, tv = morphology_regulariser(torch.ones(2, 1, 5))
        assert sym.item() == 0.0
        assert tv.item() == 0.0


class TestL2:
    def test_basic(self) -> None:
        lin = torch.nn.Linear(2, 1)
        with torch.no_grad():
            lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
            lin.bias.fill_(10.0)  # biases are not penalised
        assert l2_penalty(lin).item() == pytest.approx(5.0)


class TestClassWeights:
    def test_basic(self) -> None:
        assert class_weights_from_counts([100, 25, 0], power=0.5, cap=20.0) == pytest.approx((1.0, 2.0, 20.0))

    def test_edge_cases(self) -> None:
        assert class_weights_from_counts([10_000, 1], power=1.0, cap=50.0)[1] == 50.0

    def test_per_class_caps(self) -> None:
        """One cap per class: (400 / n) ** 1 = 1, 4, 8, 400, and the absent class its own cap."""
        got = class_weights_from_counts([400, 100, 50, 1, 0], power=1.0, cap=(20.0, 20.0, 5.0, 1.0, 2.0))
        assert got == pytest.approx((1.0, 4.0, 5.0, 1.0, 2.0))

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match=r"`cap` needs one value per class \(3\), got 2"):
            class_weights_from_counts([10, 5, 1], cap=(1.0, 2.0))
        with pytest.raises(ValueError, match="class weight caps must be positive"):
            class_weights_from_counts([10, 5, 1], cap=(1.0, 0.0, 2.0))


class TestTotalLoss:
    def test_weights_combine(self, tiny_config: ModelConfig) -> None:
        torch.manual_seed(0)
        net = get_model("cnn_lstm", tiny_config)
        out = ModelOutput(torch.randn(2, 4, 5), torch.randn(2, 4), torch.randn(2, 4, 3, 5))
        labels = torch.tensor([[0, 0, 2, 1], [0, 3, -1, 0]])
        future = torch.randint(0, 5, (2, 4, 3))
        cfg = LossConfig(w_binary=0.3, w_temporal=0.7, w_early=0.2, w_symmetry=0.05, w_tv=0.01, w_l2=1e-3)
        loss, terms = total_loss(out, labels, future, net, cfg)
        expected = (
            terms["ce"]
            + 0.3 * terms["binary"]
            + 0.7 * terms["temporal"]
            + 0.2 * terms["early"]
            + 0.05 * terms["symmetry"]
            + 0.01 * terms["tv"]
            + 1e-3 * terms["l2"]
        )
        assert loss.item() == pytest.approx(expected, rel=1e-5)

    def test_no_kernels(self, tiny_config: ModelConfig) -> None:
        net = get_model("lstm", tiny_config)
        out = ModelOutput(torch.zeros(1, 2, 5), torch.zeros(1, 2), torch.zeros(1, 2, 3, 5))
        _, terms = total_loss(
            out, torch.tensor([[0, 0]]), torch.zeros(1, 2, 3, dtype=torch.long), net, LossConfig()
        )
        assert terms["symmetry"] == 0.0
        assert terms["tv"] == 0.0
