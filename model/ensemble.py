"""Seed ensembles: networks of one architecture trained from different seeds, averaged.

On unseen patients one training run is a draw: four refits that differ only
in their seed span 18 points of DS2 SVEB F1 (docs/model-card.md).
Averaging the class probabilities of several seeds removes most of that
spread. :class:`SeedEnsemble` keeps the interface of a single network
(``encode`` -> ``temporal`` -> ``heads``, one ``config``), so the inference
API, the live pipeline and the evaluation run it unchanged: its features
are the members' features side by side, its heads average the members'
probabilities and return them as logits.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from model.cnn_lstm import BeatSequenceModel, LSTMState, ModelOutput

__all__ = ["SeedEnsemble"]


class _MemberEncoders(nn.Module):
    """What inference code reaches through ``model.encoder``: batch-norm folding of every member."""

    def __init__(self, members: Sequence[BeatSequenceModel]) -> None:
        super().__init__()
        self._members = tuple(members)  # not registered: the weights belong to the ensemble's ModuleList

    @property
    def _fused(self) -> object | None:
        encoders = [m.encoder for m in self._members]
        return None if any(getattr(e, "_fused", None) is None for e in encoders) else True

    def fuse(self) -> None:
        for m in self._members:
            fuse = getattr(m.encoder, "fuse", None)
            if callable(fuse):
                fuse()


def _log_mean_softmax(logits: Tensor) -> Tensor:
    """``log(mean_k softmax(logits_k))`` over the first axis, as logits."""
    return torch.logsumexp(torch.log_softmax(logits, dim=-1), dim=0) - math.log(logits.shape[0])


class SeedEnsemble(BeatSequenceModel):
    """Several networks of one configuration; class and early-alarm probabilities averaged.

    Parameters
    ----------
    members : sequence of BeatSequenceModel
        Networks of the same type and :class:`~model.cnn_lstm.ModelConfig`.

    Raises
    ------
    ValueError
        If there are no members or they differ in type or configuration.

    Examples
    --------
    >>> from model.registry import get_model
    >>> ens = SeedEnsemble([get_model("cnn_lstm") for _ in range(3)]).eval()
    >>> out = ens(torch.zeros(1, 4, 2, 130), torch.ones(1, 4, 7))
    >>> tuple(out.class_logits.shape), round(float(out.class_logits.exp().sum()), 3)
    ((1, 4, 5), 4.0)
    """

    def __init__(self, members: Sequence[BeatSequenceModel]) -> None:
        if not members:
            raise ValueError("a seed ensemble needs at least one member")
        kinds = {(type(m).__name__, m.config) for m in members}
        if len(kinds) > 1:
            raise ValueError(f"seed ensemble members must share type and config, got {len(kinds)} kinds")
        nn.Module.__init__(self)  # no heads of its own: the members' heads are averaged
        self.config = members[0].config
        self.members = nn.ModuleList(members)  # registers the weights under ``members.<i>.``
        self._nets: tuple[BeatSequenceModel, ...] = tuple(members)  # the same modules, typed
        self.encoder = _MemberEncoders(self._nets)

    def encode(self, windows: Tensor, rr: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """The members' beat features side by side (B, T, K * D)."""
        return torch.cat([m.encode(windows, rr, lead_mask) for m in self._nets], dim=-1)

    def temporal(
        self, features: Tensor, state: LSTMState | None = None, *, last_only: bool = False
    ) -> tuple[Tensor, LSTMState | None]:
        """Each member's temporal part over its own features; outputs side by side (B, T, K * H).

        The ensemble carries no state between calls (every caller reruns the
        context), so ``state`` must be None; ``last_only`` as for one network.
        """
        if state is not None:
            raise ValueError("a seed ensemble reruns the context; it takes no carried state")
        parts = features.chunk(len(self._nets), dim=-1)
        outs = [m.temporal(p, last_only=last_only)[0] for m, p in zip(self._nets, parts, strict=True)]
        return torch.cat(outs, dim=-1), None

    def heads(self, s: Tensor) -> ModelOutput:
        """The members' probabilities averaged, returned as logits (log probabilities)."""
        outs = [m.heads(p) for m, p in zip(self._nets, s.chunk(len(self._nets), dim=-1), strict=True)]
        abnormal = torch.stack([torch.sigmoid(o.abnormal_logit) for o in outs]).mean(dim=0)
        return ModelOutput(
            _log_mean_softmax(torch.stack([o.class_logits for o in outs])),
            torch.logit(abnormal, eps=1e-7),
            _log_mean_softmax(torch.stack([o.early_logits for o in outs])),
        )

    def qrs_kernels(self) -> Tensor | None:
        """Not trained as a whole: members are trained one by one."""
        return None
