"""Training of the beat networks: the paper's settings as defaults, all overridable.

``cardiac-monitor train`` calls :func:`train` with a :class:`TrainConfig`
built from its options (one option per field); ``cardiac-monitor train
--grid`` calls :func:`grid_search`.

Per the paper: Adam, learning rate 1e-3, batch 64, dropout 0.3, L2 1e-4,
early stopping on the validation set with patience 10, at most 50 epochs.
A batch is 64 sequences of ``seq_len`` consecutive beats. The L2 term is
part of the loss (eq. 17), not Adam's weight decay. Model selection uses
the validation set only: for the inter-patient protocol it is a set of DS1
records (:data:`model.data.DEFAULT_VALIDATION_RECORDS`), never DS2. The
score tracked for early stopping is the mean F1 of the N, S and V classes on
the validation beats, each beat classified with the sliding context used at
inference.

Single-lead use is learnt by *lead dropout*: with probability
``lead_dropout`` a training sequence loses its second lead (masked out of
the lead attention), so one checkpoint serves the two-lead MIT-BIH records
and the single-lead AD8232 wearable.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
.. [2] Kingma DP, Ba J. Adam: a method for stochastic optimization. ICLR 2015.
"""

from __future__ import annotations

import copy
import csv
import itertools
import random
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor, nn
from tqdm import tqdm

from model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from model.cnn_lstm import BeatSequenceModel, ModelConfig
from model.data import (
    DEFAULT_VALIDATION_RECORDS,
    BeatSequences,
    PreprocessConfig,
    RecordBeats,
    Split,
    inter_patient_split,
    kfold_splits,
    load_records,
    random_split,
)
from model.inference import predict_arrays, rhythm_gates
from model.losses import LossConfig, class_weights_from_counts, total_loss
from model.metrics import class_metrics, confusion_matrix, summary_metrics
from model.registry import get_model
from sigproc.records import AAMI_CLASSES
from sigproc.rhythm import AFDetector, PrematurityGate, SVTRule

__all__ = [
    "GRID",
    "OFFSET_GRID",
    "PROTOCOLS",
    "SELECTION_CLASSES",
    "TrainConfig",
    "TrainData",
    "augment_batch",
    "calibrate_checkpoint",
    "calibrate_class_offsets",
    "grid_search",
    "make_data",
    "select_device",
    "selection_score",
    "train",
]

#: Classes of the default selection score (:func:`selection_score`, :attr:`TrainConfig.select_on`):
#: those with beats in several patients of DS1.
SELECTION_CLASSES: tuple[str, ...] = ("N", "S", "V")

#: Evaluation protocols a model can be trained for.
PROTOCOLS: tuple[str, ...] = ("inter-patient", "random", "cv")

#: The paper's grid: learning rate x batch size x dropout.
GRID: dict[str, tuple[float, ...]] = {
    "lr": (1e-4, 1e-3, 1e-2),
    "batch_size": (32, 64, 128),
    "dropout": (0.2, 0.5),
}


#: Candidate logit offsets of :func:`calibrate_class_offsets`.
OFFSET_GRID: tuple[float, ...] = tuple(round(v, 2) for v in np.arange(-2.0, 3.01, 0.25))


@dataclass(frozen=True)
class TrainConfig:
    """Everything :func:`train` needs; plain-typed fields, one CLI option each.

    Attributes
    ----------
    model : str
        Registry name: ``cnn_lstm`` (default), ``cnn`` or ``lstm``.
    protocol : str
        ``inter-patient`` (DS1 -> DS2), ``random`` (80:10:10) or ``cv`` (fold ``fold`` of ``n_folds``).
    lr, batch_size, dropout, l2, epochs, patience : float, int, float, float, int, int
        The paper's optimisation settings.
    seed : int
        Seeds torch, numpy, Python and the random splits.
    seq_len : int
        Beats per training sequence and inference context.
    hidden, branch_channels, conv_channels : int
        Network widths.
    pool_bins : int
        Bins of the convolutions' final average pooling (1: the paper's
        global average; :attr:`model.cnn_lstm.ModelConfig.pool_bins`).
    use_post_rr : bool
        Let the network read the next RR interval (one beat of delay).
    horizons : tuple of int
        Early-alarm horizons in beats.
    n_leads : int
        Leads the model takes (2: MLII and the second lead).
    lead_dropout : float
        Probability of masking the second lead of a training sequence.
    rr_mode : str
        ``raw`` or ``relative`` RR inputs (:class:`model.cnn_lstm.RRInputs`).
    context_contrast : bool
        Let the CNN-LSTM's LSTM read each beat's features against the
        running mean of its context (:meth:`model.cnn_lstm.CNNLSTM.sequence`).
    rr_rate : bool
        With ``rr_mode=relative``, also the local RR interval's log ratio to
        0.8 s (:attr:`model.cnn_lstm.ModelConfig.rr_rate`).
    rr_skip : bool
        The heads also read the beat's own RR ratios and their squares
        (:attr:`model.cnn_lstm.ModelConfig.rr_skip`; needs ``rr_mode=relative``).
    rr_irregularity : bool
        With ``rr_skip``, the heads also read the rhythm's irregularity over
        the context (:attr:`model.cnn_lstm.ModelConfig.rr_irregularity`).
    shape_skip : bool
        With ``rr_skip``, the heads also read hand-measured QRS widths and
        the beat's likeness to the median of the beats before it
        (:attr:`model.cnn_lstm.ModelConfig.shape_skip`).
    morphology_dropout : float
        Probability that a training beat's pooled convolutional features are
        zeroed (:attr:`model.cnn_lstm.ModelConfig.morphology_dropout`).
    class_weight_power, class_weight_cap : float
        Class weighting of the cross-entropy (:func:`model.losses.class_weights_from_counts`).
    class_weight_caps : tuple of float
        One cap per class (N, S, V, F, Q) in place of ``class_weight_cap``;
        empty for the single cap.
    w_binary, w_temporal, w_early, early_emphasis, w_symmetry, w_tv : float
        Loss term weights (:class:`model.losses.LossConfig`); ``l2`` is ``w_l2``.
    validation_records : tuple of str
        DS1 records held out for early stopping (inter-patient).
    fold, n_folds : int
        Cross-validation fold (``cv``).
    records : tuple of str
        Restrict the training records (empty: the protocol's); for smoke tests.
    data_dir : str
        Folder holding ``mitdb/`` (empty: the default search).
    threads : int
        ``torch.set_num_threads`` (0: leave torch's default).
    device : str
        ``auto`` (a GPU when present), ``cpu`` or ``cuda``.
    max_batches : int
        Cap on batches per epoch (0: no cap); for smoke tests.
    ema_decay : float
        Decay of an exponential moving average of the weights (and batch-norm
        statistics), updated after every step; when positive, validation,
        early stopping and the checkpoint use the averaged network, which
        damps the epoch-to-epoch swings of the inter-patient validation
        score. 0 (the paper's setting) trains and keeps the raw weights.
    calibrate : bool
        After training, choose class logit offsets on the validation records
        (:func:`calibrate_class_offsets`) and store them in the checkpoint.
    lr_patience : int
        Halve the learning rate after this many epochs without a better
        validation score (:class:`torch.optim.lr_scheduler.ReduceLROnPlateau`);
        0, the paper's setting, keeps it constant.
    swa_start : int
        From this epoch on, keep the equal-weight average of the end-of-epoch
        weights (stochastic weight averaging, Izmailov et al. 2018) with its
        batch-norm statistics re-estimated on the training sequences;
        validation, early stopping and the checkpoint then use the averaged
        network, and earlier epochs are warm-up (never kept). The raw
        network's validation score is kept in the history as well. 0 (the
        paper's setting) trains and keeps the raw weights.
    select_on : tuple of str
        Classes whose mean validation F1 is the selection score
        (:func:`selection_score`): what early stopping, the learning-rate
        schedule, the grid and :func:`model.evaluation.paper_protocol`'s
        choice of candidate maximise. ``N, S, V`` (the default) suits unseen
        patients, where F is a handful of beats in one or two records; the
        random split's tables average ``N, S, V, F``, and selecting on those
        four makes the score the one the tables report.
    augment : bool
        Augment each training batch (:func:`augment_batch`): the intervals of
        a sequence's RR features scaled by one factor (another heart rate,
        the same rhythm) and each beat window shifted by a few samples
        (R-peak jitter of a detector) with a little noise. Off in the paper's
        setting.

    With no validation records (``validation_records=()``, inter-patient)
    the network is refitted on every training record for exactly
    ``epochs`` epochs, with no early stopping, and the checkpoint holds the
    last epoch: the way to retrain on all of DS1 with an epoch count chosen
    beforehand on held-out DS1 records.
    """

    model: str = "cnn_lstm"
    protocol: str = "inter-patient"
    lr: float = 1e-3
    batch_size: int = 64
    dropout: float = 0.3
    l2: float = 1e-4
    epochs: int = 50
    patience: int = 10
    seed: int = 0
    seq_len: int = 16
    hidden: int = 64
    branch_channels: int = 12
    conv_channels: int = 32
    pool_bins: int = 1
    use_post_rr: bool = True
    horizons: tuple[int, ...] = (1, 2, 3)
    n_leads: int = 2
    lead_dropout: float = 0.5
    rr_mode: str = "raw"
    rr_rate: bool = False
    context_contrast: bool = False
    rr_skip: bool = False
    rr_irregularity: bool = False
    shape_skip: bool = False
    morphology_dropout: float = 0.0
    class_weight_power: float = 0.5
    class_weight_cap: float = 20.0
    class_weight_caps: tuple[float, ...] = ()
    w_binary: float = 0.5
    w_temporal: float = 0.1
    w_early: float = 0.5
    early_emphasis: float = 1.0
    w_symmetry: float = 1e-2
    w_tv: float = 1e-3
    validation_records: tuple[str, ...] = DEFAULT_VALIDATION_RECORDS
    fold: int = 0
    n_folds: int = 5
    records: tuple[str, ...] = ()
    data_dir: str = ""
    threads: int = 0
    device: str = "auto"
    max_batches: int = 0
    ema_decay: float = 0.0
    calibrate: bool = False
    lr_patience: int = 0
    swa_start: int = 0
    augment: bool = False
    select_on: tuple[str, ...] = SELECTION_CLASSES

    def __post_init__(self) -> None:
        if not self.select_on or len(set(self.select_on)) != len(self.select_on):
            raise ValueError(f"`select_on` needs distinct classes of {AAMI_CLASSES}, got {self.select_on}")
        if unknown := [c for c in self.select_on if c not in AAMI_CLASSES]:
            raise ValueError(f"`select_on`: {unknown} not among the classes {AAMI_CLASSES}")
        if self.class_weight_caps and len(self.class_weight_caps) != len(AAMI_CLASSES):
            raise ValueError(
                f"`class_weight_caps` needs one cap per class {AAMI_CLASSES}, "
                f"got {len(self.class_weight_caps)}"
            )

    def model_config(self, preprocess: PreprocessConfig) -> ModelConfig:
        """The network configuration these settings imply."""
        return ModelConfig(
            n_leads=self.n_leads,
            fs=preprocess.fs,
            n_window=preprocess.n_window,
            horizons=tuple(self.horizons),
            use_post_rr=self.use_post_rr,
            branch_channels=self.branch_channels,
            conv_channels=self.conv_channels,
            pool_bins=self.pool_bins,
            hidden=self.hidden,
            dropout=self.dropout,
            seq_len=self.seq_len,
            rr_mode=self.rr_mode,
            rr_rate=self.rr_rate,
            context_contrast=self.context_contrast,
            rr_skip=self.rr_skip,
            rr_irregularity=self.rr_irregularity,
            shape_skip=self.shape_skip,
            r_position=preprocess.pre_fraction,
            morphology_dropout=self.morphology_dropout,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain-type form (tuples as lists) for checkpoints and JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class TrainData:
    """Records of a protocol, partitioned; beat-sequence splits carry index masks."""

    split: Split
    train: BeatSequences
    validation: list[RecordBeats]
    test: list[RecordBeats]
    #: For pooled splits: per validation/test record, the beats that belong to that set.
    validation_mask: list[NDArray[np.bool_]] | None = None
    test_mask: list[NDArray[np.bool_]] | None = None


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"`device` must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def make_data(config: TrainConfig, preprocess: PreprocessConfig | None = None) -> TrainData:
    """Load the records of ``config.protocol`` and split them.

    For ``random`` and ``cv`` the unit of the split is the beat sequence of
    ``seq_len`` beats (the paper's random split lets one patient's beats sit
    in train and test); validation and test beats are those of the held-out
    sequences.
    """
    pre = preprocess or PreprocessConfig(n_leads=config.n_leads)
    data_dir = config.data_dir or None
    horizons = tuple(config.horizons)
    if config.protocol == "inter-patient":
        split = inter_patient_split(config.validation_records)
        train_recs = config.records or split.train
        split = replace(split, train=tuple(train_recs))
        return TrainData(
            split,
            BeatSequences(
                load_records(train_recs, pre, data_dir=data_dir), seq_len=config.seq_len, horizons=horizons
            ),
            load_records(split.validation, pre, data_dir=data_dir),
            load_records(split.test, pre, data_dir=data_dir),
        )
    if config.protocol == "random":
        split = random_split(seed=config.seed, records=config.records or random_split().train)
    elif config.protocol == "cv":
        folds = kfold_splits(config.n_folds, seed=config.seed, records=config.records or random_split().train)
        if not 0 <= config.fold < config.n_folds:
            raise ValueError(f"`fold` must be in 0..{config.n_folds - 1}, got {config.fold}")
        split = folds[config.fold]
    else:
        raise ValueError(f"`protocol` must be one of {PROTOCOLS}, got {config.protocol!r}")
    return _pooled_data(split, load_records(split.train, pre, data_dir=data_dir), config)


def train(config: TrainConfig, *, out: Path, progress: bool = True) -> dict[str, Any]:
    """Train a beat network and write its checkpoint to ``out``.

    What ``cardiac-monitor train`` calls. Seeded and deterministic on the
    CPU; uses a GPU when one is present (``device="auto"``).

    Parameters
    ----------
    config : TrainConfig
        Settings (the paper's defaults).
    out : Path
        Checkpoint file to write (the best validation epoch's weights).
    progress : bool
        Show a tqdm bar per epoch.

    Returns
    -------
    dict
        ``checkpoint``, ``split``, ``best_epoch``, ``epochs_run``,
        ``validation`` (metrics at the best epoch), ``history`` (per epoch:
        train loss and terms, validation score), ``train_seconds``.
    """
    if not 0.0 <= config.ema_decay < 1.0:
        raise ValueError(f"`ema_decay` must be in [0, 1), got {config.ema_decay}")
    if config.lr_patience < 0:
        raise ValueError(f"`lr_patience` must be >= 0, got {config.lr_patience}")
    if config.swa_start < 0 or config.swa_start > config.epochs:
        raise ValueError(f"`swa_start` must be in 0..epochs ({config.epochs}), got {config.swa_start}")
    if config.swa_start and config.ema_decay:
        raise ValueError("`swa_start` and `ema_decay` are two ways of averaging weights; choose one")
    if config.calibrate and not config.validation_records and config.protocol == "inter-patient":
        raise ValueError("`calibrate` needs validation records to choose the offsets on")
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    _seed_everything(config.seed)
    device = select_device(config.device)
    pre = PreprocessConfig(n_leads=config.n_leads)
    data = make_data(config, pre)
    model = get_model(config.model, config.model_config(pre)).to(device)
    counts = np.bincount(data.train.labels[data.train.labels >= 0], minlength=len(AAMI_CLASSES))
    loss_cfg = LossConfig(
        class_weights=class_weights_from_counts(
            counts.tolist(),
            power=config.class_weight_power,
            cap=config.class_weight_caps or config.class_weight_cap,
        ),
        w_binary=config.w_binary,
        w_temporal=config.w_temporal,
        w_early=config.w_early,
        early_emphasis=config.early_emphasis,
        w_symmetry=config.w_symmetry,
        w_tv=config.w_tv,
        w_l2=config.l2,
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = (
        torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimiser, mode="max", factor=0.5, patience=config.lr_patience
        )
        if config.lr_patience > 0
        else None
    )
    averaged = copy.deepcopy(model) if config.ema_decay > 0 else None
    kept = averaged if averaged is not None else model  # the network validated and saved
    swa = copy.deepcopy(model).requires_grad_(False) if config.swa_start else None
    rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, Any]] | None = None
    started = time.perf_counter()
    for epoch in range(1, config.epochs + 1):
        data.train.reshuffle(int(rng.integers(config.seq_len)))
        terms = _train_epoch(
            model, data.train, optimiser, loss_cfg, config, rng, device, epoch, progress, averaged
        )
        warm_up = swa is not None and epoch < config.swa_start
        if swa is not None and not warm_up:
            _update_average(swa, model, (epoch - config.swa_start) / (epoch - config.swa_start + 1))
            _recompute_batch_norm(swa, data.train, config, device)
            kept = swa
        if data.validation:
            val = evaluate_beats(kept, data.validation, data.validation_mask, device=device)
            score = selection_score(val, config.select_on)
            if scheduler is not None:
                scheduler.step(score)
            shown = [c for c in AAMI_CLASSES if c in SELECTION_CLASSES or c in config.select_on]
            f1 = {f"val_f1_{c}": val["classes"][c]["f1"] for c in shown}
            raw: dict[str, Any] = {}
            if kept is swa:
                val_raw = evaluate_beats(model, data.validation, data.validation_mask, device=device)
                raw = {
                    "val_score_raw": selection_score(val_raw, config.select_on),
                    "val_confusion_raw": val_raw["confusion"],
                }
            history.append(
                {
                    "epoch": epoch,
                    **terms,
                    "val_score": score,
                    "val_accuracy": val["accuracy"],
                    **f1,
                    "val_confusion": val["confusion"],
                    **({"val_records": val["records"]} if "records" in val else {}),
                    **raw,
                    "lr": optimiser.param_groups[0]["lr"],
                }
            )
            if progress:
                per = "  ".join(f"{c} {v:.1f}" for c, v in zip(shown, f1.values(), strict=True))
                on = ",".join(config.select_on)
                tqdm.write(f"epoch {epoch}: loss {terms['loss']:.4f}  val mean F1({on}) {score:.2f}  ({per})")
        else:  # a refit: every epoch replaces the last, no early stopping
            val, score = {}, float(epoch)
            history.append({"epoch": epoch, **terms})
            if progress:
                tqdm.write(f"epoch {epoch}: loss {terms['loss']:.4f}")
        if warm_up:
            continue  # the averaged network does not exist yet; nothing to keep or stop on
        if best is None or score > best[0]:
            state = {k: v.detach().cpu().clone() for k, v in kept.state_dict().items()}
            best = (score, epoch, state, val)
            # Written at every improvement, so that an interrupted run leaves its best epoch behind.
            metrics = _run_metrics(best, history, started, loss_cfg)
            save_checkpoint(_checkpoint(config, model, pre, data.split, best[2], metrics), out)
        elif epoch - best[1] >= config.patience:
            break
    assert best is not None  # at least one epoch ran: epochs >= 1 is checked below
    metrics = _run_metrics(best, history, started, loss_cfg)
    save_checkpoint(_checkpoint(config, model, pre, data.split, best[2], metrics), out)
    if config.calibrate:
        metrics = calibrate_checkpoint(out, out, data.validation, masks=data.validation_mask).metrics
    return {"checkpoint": str(out), "split": data.split.to_dict(), **metrics}


def grid_search(config: TrainConfig, *, out_csv: Path, max_epochs: int) -> list[dict[str, Any]]:
    """The paper's grid (:data:`GRID`) scored on the validation set; writes a CSV table.

    What ``cardiac-monitor train --grid`` calls. Each of the 18 settings is
    trained for at most ``max_epochs`` epochs (capped so that the grid fits
    on a CPU; the table records the cap) and scored by the validation
    selection score; the test set is never touched.

    Returns
    -------
    list of dict
        One row per setting: ``lr``, ``batch_size``, ``dropout``,
        ``max_epochs``, ``best_epoch``, ``val_score``, ``val_accuracy``,
        ``seconds``; best first.
    """
    if max_epochs < 1:
        raise ValueError(f"`max_epochs` must be >= 1, got {max_epochs}")
    if config.protocol == "inter-patient" and not config.validation_records:
        raise ValueError("the grid is scored on validation records; `validation_records` is empty")
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for lr, bs, dr in itertools.product(GRID["lr"], GRID["batch_size"], GRID["dropout"]):
            cfg = replace(config, lr=lr, batch_size=int(bs), dropout=dr, epochs=max_epochs)
            res = train(cfg, out=Path(tmp) / "grid.pt", progress=False)
            rows.append(
                {
                    "lr": lr,
                    "batch_size": int(bs),
                    "dropout": dr,
                    "max_epochs": max_epochs,
                    "best_epoch": res["best_epoch"],
                    "val_score": selection_score(res["validation"], cfg.select_on),
                    "val_accuracy": res["validation"]["accuracy"],
                    "seconds": round(res["train_seconds"], 1),
                }
            )
    rows.sort(key=lambda r: -r["val_score"])
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with out_csv.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


@torch.no_grad()
def calibrate_class_offsets(
    model: BeatSequenceModel,
    records: list[RecordBeats],
    masks: list[NDArray[np.bool_]] | None = None,
    *,
    classes: tuple[str, ...] = ("S", "V"),
    leads: tuple[int, ...] = (2, 1),
    grid: tuple[float, ...] = OFFSET_GRID,
    rounds: int = 2,
) -> tuple[float, ...]:
    """Class logit offsets that maximise the validation selection score.

    The network's class logits on the validation ``records`` are computed
    once per lead count; then, by coordinate ascent over ``classes`` (N and
    the rest stay at 0), each offset takes the value of ``grid`` that
    maximises the mean over ``leads`` of the early-stopping score (mean F1
    of N, S and V), ties going to the smaller offset. Weighted
    cross-entropy leaves the class priors of the training patients in the
    logits; this moves the decision thresholds to where they work for
    patients the network has not seen, using only the validation records.

    Parameters
    ----------
    model : BeatSequenceModel
        A trained network; offsets it already has are ignored.
    records : list of RecordBeats
        Validation records (DS1 for the inter-patient protocol, never DS2).
    masks : list of ndarray of bool, optional
        Beats of each record that belong to the validation set (pooled splits).
    classes : tuple of str
        Classes whose offset is searched.
    leads : tuple of int
        Lead counts averaged in the objective.
    grid : tuple of float
        Candidate offsets.
    rounds : int
        Passes of coordinate ascent.

    Returns
    -------
    tuple of float
        One offset per class of :data:`sigproc.records.AAMI_CLASSES`.

    Raises
    ------
    ValueError
        For a class name that is not an AAMI class, or an empty ``grid``.
    """
    bad = [c for c in classes if c not in AAMI_CLASSES]
    if bad or not grid:
        raise ValueError(f"`classes` must be AAMI classes and `grid` non-empty, got {classes}, {grid}")
    n_classes = model.config.n_classes
    current = torch.tensor(model.config.class_offsets or (0.0,) * n_classes)
    runs: list[tuple[Tensor, NDArray[np.int64]]] = []
    for n_leads in leads:
        if n_leads > model.config.n_leads:
            continue
        mask = torch.arange(model.config.n_leads) < n_leads
        logits, labels = [], []
        for i, rec in enumerate(records):
            out = predict_arrays(model, torch.from_numpy(rec.windows), torch.from_numpy(rec.rr), mask)
            keep = np.ones(len(rec), dtype=bool) if masks is None else masks[i]
            logits.append(out.class_logits.cpu()[torch.from_numpy(keep)] - current)
            labels.append(rec.labels[keep])
        runs.append((torch.cat(logits), np.concatenate(labels)))
    model.train()

    return _search_offsets(runs, classes, grid, rounds, n_classes)


def calibrate_checkpoint(
    path: str | Path,
    out: str | Path,
    records: list[RecordBeats] | None = None,
    *,
    masks: list[NDArray[np.bool_]] | None = None,
    data_dir: str | None = None,
) -> Checkpoint:
    """:func:`calibrate_class_offsets` on a checkpoint's validation records; writes ``out``.

    ``records`` default to the split's validation records (inter-patient:
    DS1 records, never DS2). The checkpoint's metrics gain
    ``class_offsets``, ``validation_uncalibrated`` and ``validation`` with
    the offsets, at two leads, plus ``validation_1_lead`` for one lead.
    """
    ckpt = load_checkpoint(path)
    if records is None:
        if ckpt.split.protocol != "inter-patient":
            raise ValueError("pass the validation `records` (and `masks`) for pooled splits")
        records = load_records(ckpt.split.validation, ckpt.preprocess, data_dir=data_dir)
    net = ckpt.build()
    offsets = calibrate_class_offsets(net, records, masks)
    config = replace(ckpt.model_config, class_offsets=offsets)
    calibrated = replace(ckpt, model_config=config)
    net = calibrated.build()
    metrics = dict(ckpt.metrics)
    metrics["validation_uncalibrated"] = metrics.get("validation")
    metrics["class_offsets"] = list(offsets)
    metrics["validation"] = evaluate_beats(net, records, masks, n_leads=2)
    metrics["validation_1_lead"] = evaluate_beats(net, records, masks, n_leads=1)
    calibrated.metrics = metrics
    save_checkpoint(calibrated, out)
    return calibrated


@torch.no_grad()
def evaluate_beats(
    model: BeatSequenceModel,
    records: list[RecordBeats],
    masks: list[NDArray[np.bool_]] | None = None,
    *,
    n_leads: int | None = None,
    device: torch.device | None = None,
) -> dict[str, Any]:
    """Confusion matrix and metrics of ``model`` on ``records`` (sliding-context inference).

    ``masks`` restricts scoring to some beats of each record (pooled splits);
    ``n_leads=1`` classifies from lead 0 (MLII) alone. Without ``masks``
    (whole held-out records) ``records`` holds each record's confusion.
    """
    y_true, y_pred, _ = predict_records(model, records, n_leads=n_leads, device=device)
    if masks is not None:
        y_true = [t[m] for t, m in zip(y_true, masks, strict=True)]
        y_pred = [p[m] for p, m in zip(y_pred, masks, strict=True)]
    cm = confusion_matrix(np.concatenate(y_true), np.concatenate(y_pred))
    out = {"confusion": cm.tolist(), "classes": class_metrics(cm), **summary_metrics(cm)}
    if masks is None:
        out["records"] = {
            rec.record: confusion_matrix(t, p).tolist()
            for rec, t, p in zip(records, y_true, y_pred, strict=True)
        }
    return out


@torch.no_grad()
def predict_records(
    model: BeatSequenceModel,
    records: list[RecordBeats],
    *,
    n_leads: int | None = None,
    device: torch.device | None = None,
    af_detector: AFDetector | None = None,
    svt_rule: SVTRule | None = None,
    prematurity: PrematurityGate | None = None,
) -> tuple[list[NDArray[np.int64]], list[NDArray[np.int64]], list[NDArray[np.int64]]]:
    """Reference labels, predicted classes and early-alarm classes of every beat of every record.

    Returns three lists with one array per record: labels (N,), classes
    (N,) and early-alarm classes (N, H) for the horizons of the model. With
    ``af_detector``, the S class is gated in atrial fibrillation
    (:func:`model.inference.af_gate`), and with ``svt_rule`` fast
    supraventricular runs are called S first (:func:`model.inference.svt_gate`);
    with ``prematurity``, beats neither premature nor in a fast run are not
    S (:func:`model.inference.prematurity_gate`),
    as :class:`~model.inference.BeatClassifier` does.
    """
    device = device or next(model.parameters()).device
    leads = n_leads or model.config.n_leads
    mask = (torch.arange(model.config.n_leads) < leads).to(device)
    truths, preds, early = [], [], []
    for rec in records:
        out = predict_arrays(
            model, torch.from_numpy(rec.windows).to(device), torch.from_numpy(rec.rr).to(device), mask
        )
        probs = torch.softmax(out.class_logits, -1).cpu().numpy()
        early_probs = torch.softmax(out.early_logits, -1).cpu().numpy()
        gated = rhythm_gates(
            probs,
            early_probs,
            rec.rr,
            AAMI_CLASSES,
            svt_rule=svt_rule,
            af_detector=af_detector,
            prematurity=prematurity,
        )
        preds.append(gated.class_probs.argmax(-1).astype(np.int64))
        early.append(gated.early_probs.argmax(-1).astype(np.int64))
        truths.append(rec.labels)
    model.train()
    return truths, preds, early


# Internals -------------------------------------------------------------------


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds third-party code that uses the global state
    torch.manual_seed(seed)


@torch.no_grad()
def _update_average(averaged: BeatSequenceModel, model: BeatSequenceModel, decay: float) -> None:
    """``averaged <- decay * averaged + (1 - decay) * model``, parameters and float buffers.

    Integer buffers (batch-norm step counts) are copied.
    """
    for a, p in zip(averaged.parameters(), model.parameters(), strict=True):
        a.lerp_(p, 1.0 - decay)
    for ab, b in zip(averaged.buffers(), model.buffers(), strict=True):
        if ab.is_floating_point():
            ab.lerp_(b, 1.0 - decay)
        else:
            ab.copy_(b)


def _recompute_batch_norm(
    net: BeatSequenceModel, seqs: BeatSequences, config: TrainConfig, device: torch.device
) -> None:
    """Re-estimate the batch-norm statistics of ``net`` on every training sequence.

    Averaged weights need statistics of their own: those of the networks
    averaged are not the statistics the average produces. One pass without
    gradients, batch norms in training mode with a cumulative average
    (``momentum=None``), dropout off, the training lead dropout drawn from a
    generator of its own so that the training run's random state is
    untouched. ``net`` is left in eval mode.
    """
    norms = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    net.eval()
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    rng = np.random.default_rng(config.seed)
    with torch.no_grad():
        for start in range(0, len(seqs), config.batch_size):
            idx = np.arange(start, min(start + config.batch_size, len(seqs)))
            w, r = (torch.from_numpy(a).to(device) for a in seqs.batch(idx)[:2])
            net(w, r, _lead_mask(len(idx), config, rng).to(device))
    for bn, momentum in zip(norms, momenta, strict=True):
        bn.momentum = momentum
    net.eval()


def _lead_mask(n: int, config: TrainConfig, rng: np.random.Generator) -> Tensor:
    """Leads present in ``n`` training sequences: the second lead dropped with ``lead_dropout``."""
    lead_mask = torch.ones(n, config.n_leads, dtype=torch.bool)
    if config.n_leads > 1:
        lead_mask[:, 1:] = torch.from_numpy(rng.random(n) >= config.lead_dropout)[:, None]
    return lead_mask


def _search_offsets(
    runs: list[tuple[Tensor, NDArray[np.int64]]],
    classes: tuple[str, ...],
    grid: tuple[float, ...],
    rounds: int,
    n_classes: int,
) -> tuple[float, ...]:
    """Coordinate ascent of the mean selection score of ``runs`` (logits (N, C), labels (N,))."""

    def score(offsets: list[float]) -> float:
        off = torch.tensor(offsets)
        scores = []
        for logits, labels in runs:
            pred = (logits + off).argmax(-1).numpy().astype(np.int64)
            scores.append(selection_score({"classes": class_metrics(confusion_matrix(labels, pred))}))
        return float(np.mean(scores))

    offsets = [0.0] * n_classes
    best = score(offsets)
    for _ in range(rounds):
        for c in classes:
            k = AAMI_CLASSES.index(c)
            for v in sorted(grid, key=abs):  # ties go to the smallest offset
                trial = offsets.copy()
                trial[k] = float(v)
                value = score(trial)
                if value > best + 1e-9:
                    best, offsets = value, trial
    return tuple(offsets)


def _run_metrics(
    best: tuple[float, int, dict[str, torch.Tensor], dict[str, Any]],
    history: list[dict[str, Any]],
    started: float,
    loss_cfg: LossConfig,
) -> dict[str, Any]:
    """The ``metrics`` of a checkpoint: validation at the best epoch, history, time."""
    return {
        "validation": best[3],
        "best_epoch": best[1],
        "epochs_run": len(history),
        "train_seconds": time.perf_counter() - started,
        "class_weights": list(loss_cfg.class_weights),
        "history": list(history),
    }


def _checkpoint(
    config: TrainConfig,
    model: BeatSequenceModel,
    pre: PreprocessConfig,
    split: Split,
    state: dict[str, torch.Tensor],
    metrics: dict[str, Any],
) -> Checkpoint:
    return Checkpoint(
        model_name=config.model,
        model_config=model.config,
        preprocess=pre,
        state_dict=state,
        split=split,
        metrics=metrics,
        train_config=config.to_dict(),
    )


def selection_score(val: dict[str, Any], classes: Sequence[str] = SELECTION_CLASSES) -> float:
    """The score that selects epochs and candidates: the mean F1 of ``classes`` (those with beats).

    ``val`` holds ``classes`` as :func:`model.metrics.class_metrics` gives
    them; an undefined F1 (no beat predicted) counts as 0. The default
    classes are :attr:`TrainConfig.select_on`'s.
    """
    f1 = [val["classes"][c]["f1"] for c in classes if val["classes"][c]["support"] > 0]
    return float(np.mean(np.nan_to_num(f1, nan=0.0))) if f1 else 0.0


def _train_epoch(
    model: BeatSequenceModel,
    seqs: BeatSequences,
    optimiser: torch.optim.Optimizer,
    loss_cfg: LossConfig,
    config: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
    epoch: int,
    progress: bool,
    averaged: BeatSequenceModel | None = None,
) -> dict[str, float]:
    model.train()
    order = rng.permutation(len(seqs))
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    if config.max_batches > 0:
        batches = batches[: config.max_batches]
    sums: dict[str, float] = {}
    bar = tqdm(batches, desc=f"epoch {epoch}/{config.epochs}", disable=not progress, leave=False)
    for idx in bar:
        arrays = seqs.batch(idx)
        if config.augment:
            arrays = (*augment_batch(arrays[0], arrays[1], rng), *arrays[2:])
        w, r, y, fut = (torch.from_numpy(a).to(device) for a in arrays)
        out = model(w, r, _lead_mask(len(idx), config, rng).to(device))
        loss, terms = total_loss(out, y, fut, model, loss_cfg)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if averaged is not None:
            _update_average(averaged, model, config.ema_decay)
        for k, v in {"loss": float(loss.detach()), **terms}.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    return {k: v / max(len(batches), 1) for k, v in sums.items()}


def augment_batch(
    windows: NDArray[np.float32],
    rr: NDArray[np.float32],
    rng: np.random.Generator,
    *,
    rr_scale: float = 0.25,
    max_shift: int = 3,
    noise: float = 0.05,
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """A training batch as another patient or a detector might give it.

    Parameters
    ----------
    windows : (B, T, L, W) float32
        Beat windows, each lead z-scored.
    rr : (B, T, 7) float32
        RR features, columns :data:`sigproc.beats.RR_FEATURE_NAMES`.
    rng : numpy Generator
        The run's random state.
    rr_scale : float
        The four intervals of every beat of a sequence are multiplied by one
        factor ``exp(u)``, ``u ~ U(-rr_scale, rr_scale)``: the same rhythm at
        another rate. The three ratio columns are unchanged by construction.
    max_shift : int
        Each beat window moves by a whole number of samples in
        ``[-max_shift, max_shift]`` (the edge sample repeated), as an R peak
        placed by a detector rather than by an annotator would move it.
    noise : float
        Standard deviation of white noise added to the windows, in units of
        the lead's standard deviation.

    Returns
    -------
    windows, rr : new arrays of the input shapes and dtype.
    """
    b, t, _, width = windows.shape
    factor = np.exp(rng.uniform(-rr_scale, rr_scale, size=(b, 1, 1))).astype(np.float32)
    rr = rr.copy()
    rr[..., :4] *= factor
    shift = rng.integers(-max_shift, max_shift + 1, size=(b, t, 1, 1))
    cols = np.clip(np.arange(width)[None, None, None, :] + shift, 0, width - 1)
    moved = np.take_along_axis(windows, np.broadcast_to(cols, windows.shape), axis=-1)
    moved = moved + rng.normal(0.0, noise, size=windows.shape).astype(np.float32)
    return moved.astype(np.float32, copy=False), rr


def _pooled_data(split: Split, records: list[RecordBeats], config: TrainConfig) -> TrainData:
    """Beat-sequence split of pooled records: 80:10:10 (random) or fold k (cv)."""
    seqs = BeatSequences(records, seq_len=config.seq_len, horizons=tuple(config.horizons))
    n = len(seqs)
    perm = np.random.default_rng(split.seed).permutation(n)
    part = np.empty(n, dtype=np.int64)  # 0 train, 1 validation, 2 test
    if split.protocol == "random":
        n_test, n_val = n // 10, n // 10
        part[perm[:n_test]] = 2
        part[perm[n_test : n_test + n_val]] = 1
        part[perm[n_test + n_val :]] = 0
    else:
        fold_of = np.empty(n, dtype=np.int64)
        fold_of[perm] = np.arange(n) % split.n_folds
        part[:] = 0
        part[fold_of == split.fold] = 2
        val_fold = (split.fold + 1) % split.n_folds
        # A tenth of the sequences, a random half of the next fold, serve early stopping;
        # taken in the permutation's order, not the records' (which held the first records only).
        nxt = perm[fold_of[perm] == val_fold]
        part[nxt[: max(1, n // 10)]] = 1
    beat_part = np.full(len(seqs.labels), -1, dtype=np.int64)
    for s, p in zip(seqs.starts, part, strict=True):
        beat_part[s : s + seqs.seq_len] = p
    seqs.subset_starts(part == 0)  # fixed from now on: reshuffling would cross into held-out beats
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in records])))
    val_mask = [beat_part[offsets[i] : offsets[i + 1]] == 1 for i in range(len(records))]
    test_mask = [beat_part[offsets[i] : offsets[i + 1]] == 2 for i in range(len(records))]
    return TrainData(split, seqs, records, records, val_mask, test_mask)
