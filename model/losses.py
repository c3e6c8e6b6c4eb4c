"""The training objective of eq. 17, one function per term.

``L = L_ce + w_bin L_bin + w_temp L_temp + w_early L_early
+ w_sym R_sym + w_tv R_tv + w_l2 ||theta||^2``

* ``L_ce``: class-weighted cross-entropy of each beat's AAMI class.
* ``L_bin``: binary cross-entropy of the normal-vs-abnormal head.
* ``L_temp``: temporal consistency, the squared distance between the class
  probabilities of consecutive beats, counted only where the reference
  labels of the two beats agree, so that the term smooths predictions
  within a run of one class and never fights a real transition (a
  premature beat after a normal one).
* ``L_early``: cross-entropy of the class of beat ``t + h`` from the history
  up to beat ``t`` (eq. 16), class-weighted and with an extra emphasis
  ``1 + e`` on abnormal targets, the beats an alarm is for.
* ``R_sym``, ``R_tv``: the morphology regulariser of eq. 13 on the
  QRS-branch kernels, mean squared asymmetry ``(w - flip(w))^2`` and mean
  total variation ``|w[k+1] - w[k]|``.
* ``||theta||^2``: L2 of the weight matrices and kernels (biases and
  batch-norm parameters excluded).

Labels of ``-1`` (beats without an AAMI class, targets past the record end)
are ignored by every term.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.cnn_lstm import BeatSequenceModel, ModelOutput

__all__ = [
    "LossConfig",
    "abnormal_loss",
    "class_weights_from_counts",
    "classification_loss",
    "early_alarm_loss",
    "l2_penalty",
    "morphology_regulariser",
    "temporal_consistency",
    "total_loss",
]

#: Label index of the normal class N.
NORMAL = 0


@dataclass(frozen=True)
class LossConfig:
    """Weights of the terms of eq. 17.

    Attributes
    ----------
    class_weights : tuple of float
        Cross-entropy weight per AAMI class (N, S, V, F, Q); see
        :func:`class_weights_from_counts`.
    w_binary, w_temporal, w_early : float
        Weights of the abnormal head, temporal consistency and early-alarm
        terms.
    early_emphasis : float
        Extra weight ``e`` of abnormal early-alarm targets (factor ``1 + e``).
    w_symmetry, w_tv : float
        Weights of the two parts of the morphology regulariser (eq. 13).
    w_l2 : float
        L2 weight (the paper's 1e-4).
    """

    class_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    w_binary: float = 0.5
    w_temporal: float = 0.1
    w_early: float = 0.5
    early_emphasis: float = 1.0
    w_symmetry: float = 1e-2
    w_tv: float = 1e-3
    w_l2: float = 1e-4


def class_weights_from_counts(
    counts: Tensor | list[int], *, power: float = 0.5, cap: float | Sequence[float] = 20.0
) -> tuple[float, ...]:
    """Class weights ``min(cap, (n_max / n_c) ** power)``; absent classes get ``cap``.

    ``power = 1`` is full inverse-frequency weighting; the default square
    root trades a little sensitivity on rare classes for positive
    predictivity, and the cap keeps a class with a handful of training beats
    (Q in DS1) from dominating. ``cap`` may also give one cap per class: a
    class whose training beats come from one or two patients (F in DS1,
    373 of its 415 beats in record 208) cannot be learnt for new patients,
    and a large weight only buys false alarms of it.

    Raises
    ------
    ValueError
        If per-class caps do not match the classes or a cap is not positive.
    """
    c = torch.as_tensor(counts, dtype=torch.float64)
    caps = torch.as_tensor(cap if isinstance(cap, (int, float)) else list(cap), dtype=torch.float64)
    if caps.ndim == 0:
        caps = caps.expand(c.shape)
    elif caps.shape != c.shape:
        raise ValueError(f"`cap` needs one value per class ({c.numel()}), got {caps.numel()}")
    if (caps <= 0).any():
        raise ValueError(f"class weight caps must be positive, got {caps.tolist()}")
    ratio = c.max() / c.clamp(min=1e-9)
    w = torch.where(c > 0, torch.minimum(ratio.pow(power), caps), caps)
    return tuple(float(v) for v in w)


def classification_loss(logits: Tensor, labels: Tensor, class_weights: Tensor) -> Tensor:
    """Class-weighted cross-entropy of ``logits`` (B, T, C) against ``labels`` (B, T).

    The weighted mean ``sum_i w_{y_i} CE_i / sum_i w_{y_i}`` over valid beats.
    """
    return _weighted_ce(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), class_weights)


def abnormal_loss(abnormal_logit: Tensor, labels: Tensor) -> Tensor:
    """Binary cross-entropy of ``abnormal_logit`` (B, T) against ``labels != N``."""
    valid = labels >= 0
    if not valid.any():
        return abnormal_logit.sum() * 0.0
    target = (labels[valid] != NORMAL).to(abnormal_logit.dtype)
    return F.binary_cross_entropy_with_logits(abnormal_logit[valid], target)


def temporal_consistency(class_logits: Tensor, labels: Tensor) -> Tensor:
    """Mean of ``||p_t - p_{t-1}||^2`` over consecutive beats with equal valid labels.

    ``class_logits`` (B, T, C), ``labels`` (B, T); zero when no pair qualifies.
    """
    p = torch.softmax(class_logits, dim=-1)  # (B, T, C)
    same = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] >= 0)  # (B, T-1)
    if not same.any():
        return class_logits.sum() * 0.0
    d = (p[:, 1:] - p[:, :-1]).pow(2).sum(dim=-1)  # (B, T-1)
    return d[same].mean()


def early_alarm_loss(early_logits: Tensor, future: Tensor, class_weights: Tensor, emphasis: float) -> Tensor:
    """Early-alarm cross-entropy, eq. 16 targets.

    ``early_logits`` (B, T, H, C) against ``future`` (B, T, H), the class of
    beat ``t + h``: the weighted mean with per-target weight
    ``w_y * (1 + emphasis * [y != N])``.
    """
    logits = early_logits.reshape(-1, early_logits.shape[-1])
    target = future.reshape(-1)
    valid = target >= 0
    if not valid.any():
        return early_logits.sum() * 0.0
    logits, target = logits[valid], target[valid]
    w = class_weights[target] * (1.0 + emphasis * (target != NORMAL).to(logits.dtype))
    ce = F.cross_entropy(logits, target, reduction="none")
    return (w * ce).sum() / w.sum()


def morphology_regulariser(kernels: Tensor) -> tuple[Tensor, Tensor]:
    """Eq. 13 on ``kernels`` (C_out, C_in, K): mean squared asymmetry and mean total variation.

    Returns
    -------
    symmetry : Tensor
        ``mean((w - flip(w))^2)``, zero for kernels symmetric about their centre.
    total_variation : Tensor
        ``mean(|w[..., k+1] - w[..., k]|)``.
    """
    sym = (kernels - kernels.flip(-1)).pow(2).mean()
    tv = (kernels[..., 1:] - kernels[..., :-1]).abs().mean()
    return sym, tv


def l2_penalty(model: nn.Module) -> Tensor:
    """Sum of squares of every parameter with two or more dimensions."""
    terms = [p.pow(2).sum() for p in model.parameters() if p.dim() >= 2]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def total_loss(
    output: ModelOutput,
    labels: Tensor,
    future: Tensor,
    model: BeatSequenceModel,
    config: LossConfig,
) -> tuple[Tensor, dict[str, float]]:
    """Eq. 17 for one batch.

    Parameters
    ----------
    output : ModelOutput
        The model's outputs for the batch.
    labels : Tensor, shape (B, T)
        AAMI class index of each beat (-1: ignore).
    future : Tensor, shape (B, T, H)
        Class of beat ``t + h`` (-1: ignore).
    model : BeatSequenceModel
        For the QRS kernels and the L2 term.
    config : LossConfig
        Term weights.

    Returns
    -------
    loss : Tensor
        The scalar to minimise.
    terms : dict of str to float
        Each unweighted term, for logging.
    """
    cw = torch.tensor(config.class_weights, dtype=output.class_logits.dtype, device=labels.device)
    terms = {
        "ce": classification_loss(output.class_logits, labels, cw),
        "binary": abnormal_loss(output.abnormal_logit, labels),
        "temporal": temporal_consistency(output.class_logits, labels),
        "early": early_alarm_loss(output.early_logits, future, cw, config.early_emphasis),
        "l2": l2_penalty(model).to(labels.device),
    }
    kernels = model.qrs_kernels()
    zero = output.class_logits.sum() * 0.0
    terms["symmetry"], terms["tv"] = morphology_regulariser(kernels) if kernels is not None else (zero, zero)
    loss = (
        terms["ce"]
        + config.w_binary * terms["binary"]
        + config.w_temporal * terms["temporal"]
        + config.w_early * terms["early"]
        + config.w_symmetry * terms["symmetry"]
        + config.w_tv * terms["tv"]
        + config.w_l2 * terms["l2"]
    )
    return loss, {k: float(v.detach()) for k, v in terms.items()}


# Internals -------------------------------------------------------------------


def _weighted_ce(logits: Tensor, target: Tensor, class_weights: Tensor) -> Tensor:
    if not (target >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, target, weight=class_weights, ignore_index=-1)
