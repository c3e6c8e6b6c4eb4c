"""Evaluation protocols: inter-patient (DS2), the paper's random split, cross-validation.

``cardiac-monitor evaluate MODEL --protocol inter-patient|random|cv --json
PATH`` calls :func:`evaluate_model`; the side-by-side comparison of the
paper's Tables 3 and 4 (CNN+LSTM against the CNN-only and LSTM-only
baselines, with paired t-tests over folds) is :func:`compare_models`, which
trains the three networks on the pooled split first.

Every result has one JSON shape::

    {"protocol", "accuracy", "macro_f1",
     "classes": {"N": {"se", "ppv", "f1", "support"}, "S": ..., "V": ..., "F": ..., "Q": ...},
     "confusion": [[...]], "early_alarm": {...}, ...}

with rates in percent (``null`` where a denominator is zero). Beats are
classified with the reference R peaks of the annotations (the usual
practice of the inter-patient literature), every beat with the sliding
context of :mod:`model.inference`. ``macro_f1`` and the other macro averages
run over N, S, V and F (Q has a handful of beats in any test set and no
meaningful F1); ``accuracy`` counts every
beat with an AAMI class.

Early alarm: for each horizon ``h`` the early head's class for beat ``t + h``
(from beats up to ``t``) is scored per class against two baselines,
*persistence* (beat ``t + h`` has the class of beat ``t``; both with the
reference class of beat ``t``, an oracle, and with the model's own class
of beat ``t``) and a first-order *Markov chain* over classes fitted on the
training records, predicting ``argmax_j (P^h)[c_t, j]`` from the reference
class ``c_t``.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
.. [2] de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of
   heartbeats using ECG morphology and heartbeat interval features. IEEE
   Trans Biomed Eng 51(7):1196-1206, 2004.
.. [3] ANSI/AAMI EC57:2012.
"""

from __future__ import annotations

import concurrent.futures
import json
import math
import multiprocessing
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch
from numpy.typing import NDArray
from torch import Tensor
from tqdm import tqdm

from model.checkpoint import Checkpoint, load_checkpoint, out_of_fold
from model.cnn_lstm import CNNLSTM, ModelConfig
from model.data import (
    DS1_FOLDS,
    FALSE_DETECTION,
    PEAK_SOURCES,
    PreprocessConfig,
    RecordBeats,
    inter_patient_split,
    load_records,
)
from model.inference import SHIPPED_WEIGHTS, context_states
from model.losses import class_weights_from_counts
from model.metrics import class_metrics, confusion_matrix, ec57_gross, record_bootstrap, summary_metrics
from model.registry import list_models
from model.training import SELECTION_CLASSES, TrainConfig, make_data, predict_records, selection_score, train
from sigproc.records import AAMI_CLASSES
from sigproc.rhythm import AFDetector

__all__ = [
    "COMPARISON_SETTINGS",
    "EVAL_PROTOCOLS",
    "check_candidates",
    "compare_models",
    "compare_results",
    "early_alarm_report",
    "evaluate_model",
    "evaluate_out_of_fold",
    "finished_run",
    "markov_transitions",
    "paired_t_tests",
    "paper_protocol",
    "plot_confusion",
    "pooled_folds",
    "record_intervals",
    "result_from_confusion",
    "summarise_runs",
    "terms_baseline",
]

#: Training settings that :func:`compare_models` and :func:`paper_protocol` set for each run themselves.
COMPARISON_SETTINGS: tuple[str, ...] = ("model", "protocol", "fold", "epochs", "threads")

#: Protocols :func:`evaluate_model` accepts.
EVAL_PROTOCOLS: tuple[str, ...] = ("inter-patient", "random", "cv")

#: Classes averaged into ``macro_f1`` for the inter-patient protocol.
SCORED_CLASSES: tuple[str, ...] = ("N", "S", "V", "F")
#: The classes of the selection score (:func:`model.training.selection_score`) on DS1 folds.
FOLD_CLASSES: tuple[str, ...] = SELECTION_CLASSES


def result_from_confusion(
    protocol: str, confusion: NDArray[np.int64], *, macro_over: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The common JSON shape from a 5x5 confusion matrix (no early alarm yet).

    ``macro_over`` lists the classes averaged into ``macro_f1`` (default:
    those with reference beats).
    """
    per = class_metrics(confusion)
    if macro_over is None:
        macro_over = tuple(c for c in AAMI_CLASSES if per[c]["support"] > 0)
    summary = summary_metrics(confusion, macro_over=macro_over)
    macro = float(np.mean([np.nan_to_num(per[c]["f1"], nan=0.0) for c in macro_over]))
    return {
        "protocol": protocol,
        "accuracy": summary["accuracy"],
        "macro_f1": macro,
        "macro_f1_classes": list(macro_over),
        "classes": per,
        "confusion": np.asarray(confusion).tolist(),
        "class_order": list(AAMI_CLASSES),
        "summary": summary,
        "gross": ec57_gross(confusion),
        "early_alarm": {},
    }


def markov_transitions(records: list[RecordBeats], n_classes: int = len(AAMI_CLASSES)) -> NDArray[np.float64]:
    """Row-stochastic first-order transition matrix of consecutive labelled beats.

    Rows of classes never seen get a uniform distribution; one pseudo-count
    per cell keeps every transition possible.
    """
    counts = np.ones((n_classes, n_classes))
    for rec in records:
        a, b = rec.labels[:-1], rec.labels[1:]
        ok = (a >= 0) & (b >= 0)
        np.add.at(counts, (a[ok], b[ok]), 1)
    return counts / counts.sum(axis=1, keepdims=True)


def early_alarm_report(
    truths: list[NDArray[np.int64]],
    early_preds: list[NDArray[np.int64]],
    beat_preds: list[NDArray[np.int64]],
    horizons: tuple[int, ...],
    transitions: NDArray[np.float64],
) -> dict[str, Any]:
    """Per-class Se / +P / F1 of predicting beat ``t + h`` for the model and the baselines.

    Parameters
    ----------
    truths : list of (N,) int arrays
        Reference class per beat, per record (-1: no class).
    early_preds : list of (N, H) int arrays
        Early-head class for beat ``t + h`` emitted at beat ``t``.
    beat_preds : list of (N,) int arrays
        The model's class of beat ``t`` (for model-based persistence).
    horizons : tuple of int
        The ``h`` of each column of ``early_preds``.
    transitions : (C, C) array
        :func:`markov_transitions` of the training records.
    """
    out: dict[str, Any] = {}
    for k, h in enumerate(horizons):
        step = np.linalg.matrix_power(transitions, h)
        markov_next = step.argmax(axis=1)  # (C,)
        cols: dict[str, list[NDArray[np.int64]]] = {
            "target": [],
            "model": [],
            "persistence": [],
            "persistence_model": [],
            "markov": [],
        }
        for y, e, p in zip(truths, early_preds, beat_preds, strict=True):
            if len(y) <= h:
                continue
            now, later = y[:-h], y[h:]
            ok = (now >= 0) & (later >= 0)
            cols["target"].append(later[ok])
            cols["model"].append(e[:-h, k][ok])
            cols["persistence"].append(now[ok])
            cols["persistence_model"].append(p[:-h][ok])
            cols["markov"].append(markov_next[now[ok]])
        target = np.concatenate(cols["target"]) if cols["target"] else np.zeros(0, dtype=np.int64)
        entry: dict[str, Any] = {"n": int(target.size)}
        for name in ("model", "persistence", "persistence_model", "markov"):
            pred = np.concatenate(cols[name]) if cols[name] else np.zeros(0, dtype=np.int64)
            cm = confusion_matrix(target, pred)
            entry[name] = {c: {k2: v for k2, v in m.items()} for c, m in class_metrics(cm).items()}
        out[f"h{h}"] = entry
    return out


def plot_confusion(
    confusion: NDArray[np.int64] | list[list[int]], path: str | os.PathLike[str], *, title: str
) -> Path:
    """Save the confusion matrix as a PNG: counts, with row-normalised shading."""
    from matplotlib.figure import Figure

    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig = Figure(figsize=(5.2, 4.4), dpi=120)
    ax = fig.subplots()
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    n = cm.shape[0]
    labels = [*AAMI_CLASSES, "none"][:n]  # "none": false detections (row), missed beats (column)
    ax.set_xticks(range(n), labels)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title, fontsize=9)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{int(cm[i, j])}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if share[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, label="share of reference row")
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def evaluate_model(
    checkpoint: Path | None,
    *,
    protocol: str,
    data_dir: str | os.PathLike[str] | None = None,
    leads: int | None = None,
    json_path: str | os.PathLike[str] | None = None,
    figure_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    device_fs: float | None = None,
    peaks: str = "reference",
    af_gate: bool | None = None,
    noise: str | None = None,
    snr_db: float | None = None,
) -> dict[str, Any]:
    """Evaluate a checkpoint on the test set of ``protocol``.

    What ``cardiac-monitor evaluate`` calls.

    Parameters
    ----------
    checkpoint : Path or None
        Checkpoint file; ``None`` evaluates the shipped inter-patient weights.
    protocol : {"inter-patient", "random", "cv"}
        ``inter-patient`` scores DS2 (paced records excluded). ``random`` and
        ``cv`` score the held-out beats of the pooled split recorded in the
        checkpoint, which must have been trained for that protocol (see
        :func:`compare_models` for the three-model tables).
    data_dir : path, optional
        Folder holding ``mitdb/``.
    leads : int, optional
        1 (MLII only) or 2. Default: the model's lead count for the top-level
        numbers, with both lead counts under ``by_leads``.
    json_path, figure_path : path, optional
        Where to write the JSON result and the confusion-matrix PNG.
    progress : bool
        Print one line per stage.
    device_fs : float, optional
        Inter-patient only: simulate a device at this rate (250 or 500 Hz);
        the test records are resampled to it, filtered and cut there, and
        the windows resampled to the model's rate. The result says so
        (``device_fs``, ``notes``).
    peaks : {"reference", "detector"}
        Inter-patient only: classify beats at the reference annotations, or
        end to end at the R peaks the project's detector finds, as the live
        pipeline does (:func:`model.data.load_record_beats`). Then
        ``confusion`` is 6x6: a last row of false detections (by predicted
        class) and a last column of reference beats no detection matched,
        so Se counts missed beats and +P counts false detections; the EC57
        gross FP leave false detections out, and ``detection`` has the
        detector's own counts.
    af_gate : bool, optional
        Gate the S class in atrial fibrillation found from the RR intervals
        (:func:`model.inference.af_gate`): ``None`` as the checkpoint says
        (its ``af_detector``), ``True`` with the checkpoint's parameters or
        else the default :class:`sigproc.rhythm.AFDetector`, ``False`` never.
        Inter-patient only. The result's ``af_gate`` holds the parameters
        used (``None`` without).
    noise, snr_db : optional
        Inter-patient only: mix NSTDB noise (``ma``, ``bw`` or ``em``) into
        every test record at ``snr_db`` dB before preprocessing
        (:func:`model.data.load_record_beats`); the result's ``noise`` says
        so. The training records stay clean.

    Returns
    -------
    dict
        The JSON shape of the module docstring, plus ``leads``, ``by_leads``,
        ``gross`` (EC57), ``split``, ``checkpoint`` and ``notes``.

    Raises
    ------
    ValueError
        For an unknown protocol, a lead count the model cannot take, or a
        checkpoint trained for another protocol.
    """
    if protocol not in EVAL_PROTOCOLS:
        raise ValueError(f"`protocol` must be one of {EVAL_PROTOCOLS}, got {protocol!r}")
    if af_gate and protocol != "inter-patient":
        raise ValueError("`af_gate` is only supported for the inter-patient protocol")
    if noise is not None and protocol != "inter-patient":
        raise ValueError("`noise` is only supported for the inter-patient protocol")
    path = Path(checkpoint) if checkpoint is not None else SHIPPED_WEIGHTS
    ckpt = load_checkpoint(path)
    n_model = ckpt.model_config.n_leads
    if leads is not None and not 1 <= leads <= n_model:
        raise ValueError(f"`leads` must be 1 to {n_model} for this model, got {leads}")
    if protocol != "inter-patient" and ckpt.split.protocol != protocol:
        raise ValueError(
            f"checkpoint {path.name} was trained for the {ckpt.split.protocol!r} protocol; "
            f"{protocol!r} needs a model trained on its own split (see compare_models)"
        )
    model = ckpt.build()
    if device_fs is not None and protocol != "inter-patient":
        raise ValueError("`device_fs` is only supported for the inter-patient protocol")
    if peaks not in PEAK_SOURCES:
        raise ValueError(f"`peaks` must be one of {PEAK_SOURCES}, got {peaks!r}")
    if peaks != "reference" and protocol != "inter-patient":
        raise ValueError("`peaks='detector'` is only supported for the inter-patient protocol")
    detector = _gate_of(ckpt, af_gate) if protocol == "inter-patient" else None
    test, masks, train_recs = _test_data(
        ckpt, protocol, data_dir, device_fs, peaks, noise=noise, snr_db=snr_db
    )
    lead_counts = [leads] if leads is not None else sorted({n_model, 1}, reverse=True)
    by_leads: dict[str, Any] = {}
    for n in lead_counts:
        if progress:
            print(f"evaluating {path.name} on {protocol} with {n} lead(s)...", flush=True)
        truths, preds, early = predict_records(
            model,
            test,
            n_leads=n,
            af_detector=detector,
            svt_rule=ckpt.svt_rule,
            prematurity=ckpt.prematurity_gate,
        )
        if masks is not None:
            truths = [t[m] for t, m in zip(truths, masks, strict=True)]
            preds = [p[m] for p, m in zip(preds, masks, strict=True)]
        cm = confusion_matrix(np.concatenate(truths), np.concatenate(preds))
        detection: dict[str, Any] | None = None
        if peaks == "detector":
            cm, detection = _with_detection_errors(cm, test, truths, preds)
        res = result_from_confusion(protocol, cm, macro_over=SCORED_CLASSES)
        if detection is not None:
            res["detection"] = detection
        if protocol == "inter-patient":
            res.update(record_intervals(test, truths, preds, detector=peaks == "detector"))
        if masks is None:  # early alarm needs whole beat sequences: inter-patient only
            res["early_alarm"] = early_alarm_report(
                [t.copy() for t in truths],
                early,
                preds,
                ckpt.model_config.horizons,
                markov_transitions(train_recs),
            )
        by_leads[str(n)] = res
    result = dict(by_leads[str(lead_counts[0])])
    result.update(
        {
            "leads": lead_counts[0],
            "by_leads": {
                k: {
                    kk: v[kk]
                    for kk in (
                        "accuracy",
                        "macro_f1",
                        "classes",
                        "gross",
                        "confusion",
                        "early_alarm",
                        "detection",
                        "records",
                        "intervals",
                    )
                    if kk in v
                }
                for k, v in by_leads.items()
            },
            "checkpoint": str(path),
            "model": ckpt.model_name,
            "split": ckpt.split.to_dict(),
            "test_records": [r.record for r in test],
            "n_beats": int(np.asarray(result["confusion"]).sum()),
            "preprocess": asdict(ckpt.preprocess),
            "device_fs": device_fs,
            "peaks": peaks,
            "noise": None if noise is None else {"source": noise, "snr_db": snr_db},
            **_rules_in_force(ckpt, detector),
            "notes": _notes(protocol, ckpt.preprocess.fs, device_fs, peaks, noise, snr_db),
        }
    )
    if figure_path is not None:
        plot_confusion(
            result["confusion"],
            figure_path,
            title=f"{ckpt.model_name} {protocol}, {lead_counts[0]} lead(s), beats at {peaks} peaks"
            + (", AF gate" if detector is not None else "")
            + ("" if noise is None else f", {noise} noise {snr_db:g} dB"),
        )
        result["figure"] = str(figure_path)
    if json_path is not None:
        _write_json(result, json_path)
    return result


def evaluate_out_of_fold(
    checkpoints: Sequence[str | os.PathLike[str]],
    records: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    leads: int = 1,
    af_gate: bool | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Each of ``records`` classified by the first of ``checkpoints`` not trained on it.

    With the four fold networks of ``DS1_FOLDS`` (each trained on DS1
    without one fold, ``train --records``), every DS1 record is scored by a
    network that never saw its patient: an estimate on DS1 that spends no
    DS2. Beats at the reference annotations; ``af_gate`` as in
    :func:`evaluate_model` (``None``: as each checkpoint says). The result
    has :func:`evaluate_model`'s layout for one lead count (``by_leads``,
    per-record ``records``, ``intervals``), so ``cardiac-monitor evaluate
    compare`` pairs two candidates by record.

    Raises
    ------
    ValueError
        If a record was in every checkpoint's training split, or ``leads``
        is out of range for a network.
    """
    assigned = out_of_fold(checkpoints, records, leads=leads)
    recs, truths, preds, owners = [], [], [], {}
    for name, path, ckpt, model in assigned:
        detector = _gate_of(ckpt, af_gate)
        if progress:
            print(f"record {name}: {path.name}", flush=True)
        rec = load_records([name], ckpt.preprocess, data_dir=data_dir)[0]
        t, p, _ = predict_records(
            model,
            [rec],
            n_leads=leads,
            af_detector=detector,
            svt_rule=ckpt.svt_rule,
            prematurity=ckpt.prematurity_gate,
        )
        recs.append(rec)
        truths.append(t[0])
        preds.append(p[0])
        owners[name] = {
            "checkpoint": path.name,
            **_rules_in_force(ckpt, detector),
        }
    res = result_from_confusion(
        "inter-patient",
        confusion_matrix(np.concatenate(truths), np.concatenate(preds)),
        macro_over=SCORED_CLASSES,
    )
    if len(recs) > 1:
        res.update(record_intervals(recs, truths, preds))
    else:  # nothing to resample
        res["records"] = {recs[0].record: confusion_matrix(truths[0], preds[0]).tolist()}
    return {
        **res,
        "protocol": "out-of-fold",
        "leads": leads,
        "by_leads": {str(leads): dict(res)},
        "checkpoints": [str(p) for p in checkpoints],
        "owners": owners,
        "test_records": list(records),
        "n_beats": int(np.asarray(res["confusion"]).sum()),
    }


def compare_models(
    config: TrainConfig,
    *,
    protocol: str,
    out_dir: Path,
    max_epochs: int,
    models: tuple[str, ...] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Train and score CNN+LSTM and the baselines side by side (Tables 3 and 4).

    ``protocol="random"``: one 80:10:10 split, accuracy / precision / recall
    / F1 (macro and weighted) per model. ``protocol="cv"``: the same per
    fold over ``config.n_folds`` folds, and paired t-tests of CNN+LSTM
    against each baseline per metric (:func:`paired_t_tests`). Epochs are
    capped at ``max_epochs`` (the cap is in the result).

    Each run writes ``out_dir/{model}_{protocol}_fold{k}.pt``. A checkpoint
    already there whose training *finished* (:func:`finished_run`) with the
    same settings is scored again instead of retrained, so an interrupted
    comparison resumes where it stopped. ``jobs > 1`` trains that many runs
    at once in separate processes of one thread each (the runs are seeded
    and single-threaded, so the result does not depend on ``jobs``).
    """
    if protocol not in ("random", "cv"):
        raise ValueError(f"`protocol` must be 'random' or 'cv', got {protocol!r}")
    if jobs < 1:
        raise ValueError(f"`jobs` must be >= 1, got {jobs}")
    names = models or tuple(list_models())
    folds = range(config.n_folds) if protocol == "cv" else range(1)
    base = replace(config, threads=1) if jobs > 1 else config
    checkpoints: dict[str, list[Path]] = {m: [] for m in names}
    todo: list[tuple[TrainConfig, Path]] = []
    for fold in folds:
        for name in names:
            cfg = replace(
                base, model=name, protocol=protocol, fold=fold, epochs=min(config.epochs, max_epochs)
            )
            ckpt_path = out_dir / f"{name}_{protocol}_fold{fold}.pt"
            checkpoints[name].append(ckpt_path)
            todo.append((cfg, ckpt_path))
    out_dir.mkdir(parents=True, exist_ok=True)
    _train_runs(todo, jobs=jobs, progress=progress, desc=f"{protocol} runs")
    result = summarise_runs(
        checkpoints, protocol=protocol, data_dir=config.data_dir or None, progress=progress, jobs=jobs
    )
    result["max_epochs"] = max_epochs
    if json_path is not None:
        _write_json(result, json_path)
    return result


def paper_protocol(
    config: TrainConfig,
    candidates: Mapping[str, Mapping[str, Any]],
    *,
    out_dir: Path,
    max_epochs: int,
    models: tuple[str, ...] | None = None,
    json_path: str | os.PathLike[str] | None = None,
    progress: bool = True,
    jobs: int = 1,
) -> dict[str, Any]:
    """Tables 3 and 4 of the paper with each model's settings chosen on validation beats only.

    1. Every candidate (``{name: {setting: value}}``, settings of
       :class:`~model.training.TrainConfig` over ``config``) is trained for
       every model on the random 80:10:10 split, with early stopping on the
       validation tenth.
    2. Each model takes the candidate with the best validation
       :func:`~model.training.selection_score` over ``config.select_on``,
       the score every run also stopped early on (ties: the earlier
       candidate). The baselines choose for themselves, as the CNN+LSTM
       does, so that no model is compared at settings tuned for another.
    3. Table 3: the chosen runs scored on the test tenth, which the choice
       never saw (:func:`summarise_runs`).
    4. Table 4: ``config.n_folds``-fold cross-validation with each model's
       chosen settings, and the paired t-tests of CNN+LSTM against each
       baseline.

    Runs go to ``out_dir/select/{model}_{candidate}.pt`` and
    ``out_dir/cv/{model}_{candidate}_fold{k}.pt``; finished ones are reused
    (:func:`finished_run`), so an interrupted comparison resumes.
    ``jobs`` runs train at once, each in its own process (one thread; on
    the GPU when one is present and ``config.device`` is ``auto``).

    Returns
    -------
    dict
        ``protocol`` ("paper"), ``candidates``, ``selection`` (per model
        and candidate: validation ``score``, ``accuracy``, ``best_epoch``,
        ``epochs_run``), ``chosen`` (per model), ``select_on`` (the
        classes of the score), ``random`` (Table 3) and
        ``cv`` (Table 4, with ``t_tests``) as :func:`summarise_runs` gives
        them, and ``max_epochs``.

    Raises
    ------
    ValueError
        With no candidates, a candidate name that is not a plain word, a
        setting the comparison sets itself, a candidate's own
        ``select_on``, or settings the network rejects.
    """
    if jobs < 1:
        raise ValueError(f"`jobs` must be >= 1, got {jobs}")
    check_candidates(config, candidates)
    names = models or tuple(list_models())
    base = replace(config, threads=1) if jobs > 1 else config
    epochs = min(config.epochs, max_epochs)

    def run_config(name: str, cand: str, protocol: str, fold: int) -> TrainConfig:
        return replace(base, **candidates[cand], model=name, protocol=protocol, fold=fold, epochs=epochs)

    select = {(m, c): out_dir / "select" / f"{m}_{c}.pt" for m in names for c in candidates}
    todo = [(run_config(m, c, "random", 0), path) for (m, c), path in select.items()]
    for sub in ("select", "cv"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    _train_runs(todo, jobs=jobs, progress=progress, desc="selection")
    selection: dict[str, dict[str, dict[str, float]]] = {m: {} for m in names}
    for (m, c), path in select.items():
        meta = load_checkpoint(path).metrics
        selection[m][c] = {
            "score": selection_score(meta["validation"], base.select_on),
            "accuracy": float(meta["validation"]["accuracy"]),
            "best_epoch": int(meta["best_epoch"]),
            "epochs_run": int(meta["epochs_run"]),
        }
    # ties go to the earlier candidate: max keeps the first of equal scores
    chosen = {m: max(selection[m].items(), key=lambda item: item[1]["score"])[0] for m in names}
    cv = {m: [out_dir / "cv" / f"{m}_{chosen[m]}_fold{k}.pt" for k in range(config.n_folds)] for m in names}
    todo = [
        (run_config(m, chosen[m], "cv", k), path) for m, paths in cv.items() for k, path in enumerate(paths)
    ]
    _train_runs(todo, jobs=jobs, progress=progress, desc="cv")
    table3 = summarise_runs(
        {m: [select[m, chosen[m]]] for m in names},
        protocol="random",
        data_dir=config.data_dir or None,
        jobs=jobs,
    )
    table4 = summarise_runs(cv, protocol="cv", data_dir=config.data_dir or None, jobs=jobs)
    result = {
        "protocol": "paper",
        "candidates": {c: dict(s) for c, s in candidates.items()},
        "selection": selection,
        "chosen": chosen,
        "select_on": list(base.select_on),
        "random": table3,
        "cv": table4,
        "max_epochs": max_epochs,
    }
    if json_path is not None:
        _write_json(result, json_path)
    return result


def check_candidates(config: TrainConfig, candidates: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ValueError unless every candidate of :func:`paper_protocol` can be trained.

    Names must be plain words (they name checkpoint files), settings must
    be :class:`~model.training.TrainConfig` fields that the comparison does
    not set itself (:data:`COMPARISON_SETTINGS`), and the network must
    accept the settings (a candidate's own value wins over ``config``'s).
    """
    if not candidates:
        raise ValueError("`candidates` is empty: give at least one {name: settings}")
    for cand, settings in candidates.items():
        if not cand or not all(ch.isalnum() or ch in "-_" for ch in cand):
            raise ValueError(f"candidate name {cand!r}: use letters, digits, '-' and '_'")
        if fixed := sorted(set(settings) & set(COMPARISON_SETTINGS)):
            raise ValueError(f"candidate {cand!r} sets {fixed}, which the comparison sets itself")
        if "select_on" in settings:  # candidates are ranked on one score, so they share it
            raise ValueError(f"candidate {cand!r} sets select_on, which all candidates share: set it for all")
        try:
            cfg = replace(config, **settings)
        except TypeError as exc:  # an unknown field
            raise ValueError(f"candidate {cand!r}: {exc}") from None
        cfg.model_config(PreprocessConfig(n_leads=cfg.n_leads))  # the network's own checks


def _train_runs(todo: Sequence[tuple[TrainConfig, Path]], *, jobs: int, progress: bool, desc: str) -> None:
    """Train every ``(config, checkpoint path)`` not yet finished (:func:`finished_run`).

    ``jobs > 1``: that many at once, in spawned processes.
    """
    todo = [(cfg, path) for cfg, path in todo if not finished_run(path, cfg)]
    if jobs == 1 or not todo:
        for cfg, path in todo:
            train(cfg, out=path, progress=progress)
        return
    with _process_pool(jobs) as pool:
        running = [pool.submit(train, cfg, out=path, progress=False) for cfg, path in todo]
        for done in tqdm(
            concurrent.futures.as_completed(running), total=len(running), desc=desc, disable=not progress
        ):
            done.result()


#: Settings that change how a run executes, not what it learns.
_EXECUTION_SETTINGS: tuple[str, ...] = ("threads", "device", "data_dir")


def finished_run(path: Path, config: TrainConfig) -> bool:
    """Whether ``path`` holds a run of ``config`` that ran to its end.

    The end is early stopping (``patience`` epochs without improvement) or
    the last epoch; :func:`model.training.train` also writes the checkpoint
    at every improvement, and such an interrupted run is not finished.
    Settings that do not change what is learnt (threads, device, data
    folder) are not compared.
    """
    if not path.is_file():
        return False
    ckpt = load_checkpoint(path)
    wanted = {k: v for k, v in config.to_dict().items() if k not in _EXECUTION_SETTINGS}
    stored = {k: v for k, v in ckpt.train_config.items() if k not in _EXECUTION_SETTINGS}
    if stored != wanted:
        return False
    run = ckpt.metrics
    return bool(
        run.get("epochs_run", 0) >= config.epochs
        or run.get("epochs_run", 0) - run.get("best_epoch", 0) >= config.patience
    )


def pooled_folds(
    checkpoints: Sequence[str | os.PathLike[str]], *, raw: bool = False, from_epoch: int = 10
) -> dict[str, Any]:
    """Leave-records-out selection score of a candidate: its folds' validation summed per epoch.

    Each checkpoint is one fold's run (``train`` with that fold's records as
    ``validation_records``); its history holds the validation confusion of
    every epoch. Summing the folds' confusions per epoch scores every held-out
    record once, by a network that never saw its patient. The score is the
    training's selection score, the mean F1 of N, S and V.

    Parameters
    ----------
    checkpoints : sequence of path
        One run per fold, each with the same number of epochs.
    raw : bool
        Score the raw network of a weight-averaged run (``swa_start``) rather
        than the averaged one.
    from_epoch : int
        First epoch of the summary mean and standard deviation (the early
        epochs are still learning).

    Returns
    -------
    dict
        ``epochs`` (per epoch: ``epoch``, ``score``, ``accuracy`` and the
        Se / +P / F1 of N, S, V), ``mean``, ``sd`` (over epochs from
        ``from_epoch``), ``best_epoch``, ``best_score``, ``folds``. Runs
        that kept each record's validation confusion (``val_records``)
        add ``records`` (each held-out record's matrices summed over the
        epochs from ``from_epoch``) and their record-bootstrap
        ``intervals``, whose ``macro_f1`` is the score (the mean F1 of N, S
        and V); :func:`compare_results` pairs two candidates by record.

    Raises
    ------
    ValueError
        If no checkpoint is given, one has no validation history (a refit),
        or the runs differ in their number of epochs.
    """
    if not checkpoints:
        raise ValueError("`checkpoints` is empty: give one run per fold")
    key = "val_confusion_raw" if raw else "val_confusion"
    histories = []
    for path in checkpoints:
        history = load_checkpoint(path).metrics.get("history", [])
        if not history or any("val_confusion" not in h for h in history):
            raise ValueError(f"{path}: no validation confusion per epoch (a refit without validation?)")
        histories.append(history)
    lengths = {len(h) for h in histories}
    if len(lengths) > 1:
        raise ValueError(f"the runs differ in length ({sorted(lengths)} epochs); pool runs of one candidate")
    epochs = []
    for e in range(lengths.pop()):
        cm = sum(np.asarray(h[e].get(key, h[e]["val_confusion"]), dtype=np.int64) for h in histories)
        per = class_metrics(cm)
        row: dict[str, Any] = {
            "epoch": e + 1,
            "score": selection_score({"classes": per}),
            "accuracy": summary_metrics(cm)["accuracy"],
        }
        row.update({c: {k: per[c][k] for k in ("se", "ppv", "f1")} for c in ("N", "S", "V")})
        epochs.append(row)
    late = np.array([r["score"] for r in epochs[from_epoch - 1 :]])  # empty: a run shorter than that
    best = max(epochs, key=lambda r: r["score"])
    by_record: dict[str, Any] = {}
    if not raw and late.size and all("val_records" in h for hist in histories for h in hist):
        summed: dict[str, NDArray[np.int64]] = {}
        for hist in histories:
            for h in hist[from_epoch - 1 :]:
                for rec, m in h["val_records"].items():
                    summed[rec] = summed.get(rec, 0) + np.asarray(m, dtype=np.int64)
        if len(summed) >= 2:
            by_record["records"] = {rec: m.tolist() for rec, m in summed.items()}
            by_record["intervals"] = record_bootstrap(
                np.stack(list(summed.values())), macro_over=FOLD_CLASSES
            )
    return {
        **by_record,
        "folds": [str(p) for p in checkpoints],
        "raw": raw,
        "from_epoch": from_epoch,
        "epochs": epochs,
        "mean": float(late.mean()) if late.size else float("nan"),
        "sd": float(np.std(late, ddof=1)) if late.size > 1 else float("nan"),
        "best_epoch": best["epoch"],
        "best_score": best["score"],
    }


def _head_terms(records: Sequence[RecordBeats], config: ModelConfig) -> list[Tensor]:
    """The hand-measured head terms of every beat (MLII only), each over its sliding context."""
    net = CNNLSTM(config).eval()  # untrained: only the RR and shape terms of its heads are read
    out = []
    with torch.no_grad():
        for rb in records:
            w, rr = torch.from_numpy(rb.windows)[:, None], torch.from_numpy(rb.rr)[:, None]  # (N, 1, L, W)
            mask = torch.zeros(w.shape[0], w.shape[2], dtype=torch.bool)
            mask[:, 0] = True  # MLII, the wearable's lead
            features = net.encode(w, rr, mask)[:, 0]  # (N, D)
            out.append(context_states(net, features)[:, config.hidden :])  # (N, terms)
    return out


def _fit_softmax(x: Tensor, y: Tensor, weights: Tensor, l2: float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Class-weighted multinomial logistic regression by L-BFGS on standardised ``x``."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-9)
    xs = (x - mu) / sd
    w = torch.zeros(x.shape[1], weights.numel(), dtype=x.dtype, requires_grad=True)
    b = torch.zeros(weights.numel(), dtype=x.dtype, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xs @ w + b, y, weight=weights) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return mu, sd, w.detach(), b.detach()


def terms_baseline(
    folds: Sequence[Sequence[str]] = DS1_FOLDS,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    class_weight_power: float = 1.0,
    class_weight_cap: float = 20.0,
    l2: float = 1e-3,
    test: Sequence[str] = (),
) -> dict[str, Any]:
    """Leave-records-out score of the hand-measured head terms alone, by a logistic regression.

    The reference for what the networks add on unseen patients: the terms
    that ``rr_skip``, ``rr_irregularity`` and ``shape_skip`` hand to the
    heads (five log RR ratios, the rhythm's irregularity, two QRS widths and
    the likeness to the median of the previous beats, with their products
    and squares; :meth:`model.cnn_lstm.BeatSequenceModel.temporal`), each
    beat over its sliding context of 16 beats on MLII, fed to a
    class-weighted multinomial logistic regression (no learnt morphology, no
    memory). Each fold is predicted by a regression fitted on the other
    folds' records; the held-out confusions are summed and scored like
    :func:`pooled_folds` (the mean F1 of N, S and V).

    Parameters
    ----------
    folds : sequence of sequence of str
        Records held out together (default :data:`model.data.DS1_FOLDS`).
    data_dir : path, optional
        MIT-BIH folder.
    class_weight_power, class_weight_cap : float
        Class weights of :func:`model.losses.class_weights_from_counts`
        from the training records' counts.
    l2 : float
        Ridge penalty on the standardised weights.
    test : sequence of str
        Records of an outside test set (DS2, say): a regression fitted on
        every fold's records scores them once, under ``test``.

    Returns
    -------
    dict
        :func:`result_from_confusion`'s shape (``protocol`` ``"terms"``) plus
        ``score``, ``folds`` and ``settings``; with ``test`` also ``test``:
        the test records' result in the same shape, macro F1 over N, S, V,
        F as :func:`evaluate_model`, with :func:`record_intervals`.

    Raises
    ------
    ValueError
        If fewer than two folds are given, a record is in two folds, or a
        test record is also in a fold.
    """
    names = [str(r) for fold in folds for r in fold]
    if len(folds) < 2:
        raise ValueError(f"`folds` needs at least two folds, got {len(folds)}")
    if len(set(names)) != len(names):
        raise ValueError(f"a record is in two folds: {sorted({r for r in names if names.count(r) > 1})}")
    test = [str(r) for r in test]
    if overlap := sorted(set(test) & set(names)):
        raise ValueError(f"test records are also in the folds: {overlap}")
    pre = PreprocessConfig()
    config = ModelConfig(
        fs=pre.fs,
        n_window=pre.n_window,
        r_position=pre.pre_fraction,
        rr_mode="relative",
        rr_skip=True,
        rr_irregularity=True,
        shape_skip=True,
    )
    records = load_records([*names, *test], pre, data_dir=data_dir)
    terms = dict(zip([*names, *test], _head_terms(records, config), strict=True))
    labels = {rb.record: torch.from_numpy(rb.labels) for rb in records}

    def fit_and_predict(train_names: Sequence[str], held_out: Sequence[str]) -> list[NDArray[np.int64]]:
        x = torch.cat([terms[r] for r in train_names]).double()
        y = torch.cat([labels[r] for r in train_names])
        keep = y >= 0
        counts = torch.bincount(y[keep], minlength=len(AAMI_CLASSES))
        weights = torch.tensor(
            class_weights_from_counts(counts, power=class_weight_power, cap=class_weight_cap), dtype=x.dtype
        )
        mu, sd, w, b = _fit_softmax(x[keep], y[keep], weights, l2)
        return [((terms[r].double() - mu) / sd @ w + b).argmax(-1).numpy() for r in held_out]

    cm = np.zeros((len(AAMI_CLASSES), len(AAMI_CLASSES)), dtype=np.int64)
    for fold in folds:
        for r, pred in zip(fold, fit_and_predict([r for r in names if r not in fold], fold), strict=True):
            cm += confusion_matrix(labels[r].numpy(), pred)
    result = result_from_confusion("terms", cm)
    result["score"] = selection_score(result)
    result["folds"] = [list(f) for f in folds]
    result["settings"] = {
        "class_weight_power": class_weight_power,
        "class_weight_cap": class_weight_cap,
        "l2": l2,
    }
    if test:
        test_records = records[len(names) :]
        truths = [rb.labels for rb in test_records]
        preds = fit_and_predict(names, test)
        pooled = confusion_matrix(np.concatenate(truths), np.concatenate(preds))
        out = result_from_confusion("terms", pooled, macro_over=SCORED_CLASSES)
        out.update(record_intervals(test_records, truths, preds))
        result["test"] = out
    return result


def summarise_runs(
    checkpoints: dict[str, list[Path]],
    *,
    protocol: str,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Score trained checkpoints (per model, one per fold) into Table 3 / Table 4 form.

    ``jobs > 1`` scores that many checkpoints at once, one thread each.

    Returns ``{"protocol", "table": {model: mean metrics}, "runs": {model:
    [per-fold metrics]}, "t_tests"}``; ``t_tests`` (CNN+LSTM against each
    other model) only with two or more folds. Each run has the summary
    metrics, ``macro_f1``, the F1 of each scored class (``f1_N``...),
    ``epochs_run`` and ``train_seconds``.
    """
    flat = [(name, path) for name, paths in checkpoints.items() for path in paths]
    if jobs > 1:
        with _process_pool(jobs) as pool:
            futures = [pool.submit(_score_run, path, protocol, data_dir, threads=1) for _, path in flat]
            scored = [f.result() for f in futures]
    else:
        scored = [_score_run(path, protocol, data_dir, progress=progress) for _, path in flat]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in checkpoints}
    for (name, _), row in zip(flat, scored, strict=True):
        runs[name].append(row)
    table = {m: {k: float(np.mean([r[k] for r in rs])) for k in rs[0]} for m, rs in runs.items() if rs}
    result: dict[str, Any] = {"protocol": protocol, "table": table, "runs": runs}
    if "cnn_lstm" in runs and len(runs["cnn_lstm"]) >= 2:
        result["t_tests"] = {
            base: paired_t_tests(runs["cnn_lstm"], runs[base]) for base in runs if base != "cnn_lstm"
        }
    return result


def _score_run(
    path: Path,
    protocol: str,
    data_dir: str | os.PathLike[str] | None,
    *,
    progress: bool = False,
    threads: int = 0,
) -> dict[str, Any]:
    """One row of :func:`summarise_runs`."""
    if threads > 0:
        torch.set_num_threads(threads)
    res = evaluate_model(path, protocol=protocol, data_dir=data_dir, leads=None, progress=progress)
    meta = load_checkpoint(path).metrics
    return {
        **res["summary"],
        "macro_f1": res["macro_f1"],
        **{f"f1_{c}": float(np.nan_to_num(res["classes"][c]["f1"])) for c in SCORED_CLASSES},
        "epochs_run": meta["epochs_run"],
        "train_seconds": meta["train_seconds"],
    }


def paired_t_tests(
    ours: list[dict[str, float]],
    baseline: list[dict[str, float]],
    metrics: tuple[str, ...] = ("accuracy", "macro_precision", "macro_recall", "macro_f1"),
) -> dict[str, dict[str, float]]:
    """Paired t-test per metric over folds (:func:`scipy.stats.ttest_rel`).

    Returns ``{metric: {"mean_diff", "t", "p"}}``; ``p`` is two-sided.
    """
    out: dict[str, dict[str, float]] = {}
    for m in metrics:
        a = np.array([r[m] for r in ours])
        b = np.array([r[m] for r in baseline])
        diff = a - b
        if diff.size < 2 or np.allclose(diff, diff[0]):
            t, p = float("nan"), float("nan")
        else:
            res = scipy.stats.ttest_rel(a, b)
            t, p = float(res.statistic), float(res.pvalue)
        out[m] = {"mean_diff": float(diff.mean()), "t": t, "p": p}
    return out


# Internals -------------------------------------------------------------------


def _notes(
    protocol: str,
    model_fs: float,
    device_fs: float | None,
    peaks: str = "reference",
    noise: str | None = None,
    snr_db: float | None = None,
) -> list[str]:
    source = (
        f"{device_fs:g} Hz (records resampled from 360 Hz to simulate the device)" if device_fs else "360 Hz"
    )
    notes = [
        f"Beat windows were cut at {source} and resampled to the model's {model_fs:g} Hz.",
        "Beats are located by the reference annotations (R peaks), not by the detector."
        if peaks == "reference"
        else "Beats are located by the project's R-peak detector and matched to the reference within "
        "150 ms; missed beats and false detections count against Se and +P.",
        "Paced records 102, 104, 107, 217 are excluded.",
        "Rates are percentages; null means an empty denominator.",
    ]
    if protocol != "inter-patient":
        notes.append("Pooled split: beats of one patient are in training and test (the paper's protocol).")
    if noise is not None and snr_db is not None:
        notes.append(
            f"NSTDB {noise} noise mixed into every test record at {snr_db:g} dB (the NSTDB's SNR, "
            "against the QRS amplitude); the model was trained on clean records."
        )
    return notes


def _rules_in_force(ckpt: Checkpoint, detector: AFDetector | None) -> dict[str, dict[str, Any] | None]:
    """The rhythm rules a result was scored with, as their parameters (None: off)."""
    rules = {"af_gate": detector, "svt_rule": ckpt.svt_rule, "prematurity_gate": ckpt.prematurity_gate}
    return {name: None if rule is None else asdict(rule) for name, rule in rules.items()}


def _process_pool(jobs: int) -> concurrent.futures.ProcessPoolExecutor:
    """``jobs`` worker processes, spawned so that no torch state is forked into them."""
    return concurrent.futures.ProcessPoolExecutor(
        max_workers=jobs, mp_context=multiprocessing.get_context("spawn")
    )


def record_intervals(
    records: Sequence[RecordBeats],
    truths: Sequence[NDArray[np.int64]],
    preds: Sequence[NDArray[np.int64]],
    *,
    detector: bool = False,
    n_resamples: int = 2000,
) -> dict[str, Any]:
    """Per-record confusion matrices and record-bootstrap intervals (:func:`model.metrics.record_bootstrap`).

    Returns ``{"records": {name: confusion}, "intervals": {...}}``; the
    matrices add up to the pooled one. With ``detector`` each matrix has the
    false-detection row and the missed-beat column of
    :func:`evaluate_model`'s ``peaks="detector"`` matrix.
    """
    matrices = []
    for rec, t, p in zip(records, truths, preds, strict=True):
        m = confusion_matrix(t, p)
        matrices.append(_with_detection_errors(m, [rec], [t], [p])[0] if detector else m)
    classes = (*AAMI_CLASSES, "none") if detector else AAMI_CLASSES
    intervals = record_bootstrap(
        np.stack(matrices), classes=classes, macro_over=SCORED_CLASSES, n_resamples=n_resamples
    )
    intervals["classes"].pop("none", None)
    return {
        "records": {rec.record: m.tolist() for rec, m in zip(records, matrices, strict=True)},
        "intervals": intervals,
    }


def compare_results(
    candidate: dict[str, Any], baseline: dict[str, Any], *, leads: int = 1, n_resamples: int = 2000
) -> dict[str, Any]:
    """Paired record-bootstrap comparison of two inter-patient results on the same test records.

    ``candidate`` and ``baseline`` are :func:`evaluate_model` results (their
    ``by_leads`` entry for ``leads``) or :func:`terms_baseline` results with
    a ``test`` set (MLII only); or two :func:`pooled_folds` results (DS1
    records; ``macro_f1`` is then the fold score, the mean F1 of N, S, V). The records are resampled together
    (:func:`model.metrics.record_bootstrap` with ``baseline``), so the
    interval of a difference is the spread another sample of patients would
    have shown, and ``share_ahead`` how often the candidate came out ahead.

    Returns
    -------
    dict
        ``{"leads", "records", "candidate", "baseline", "difference"}``; the
        first two metric blocks hold the pooled ``accuracy``, ``macro_f1``
        and ``classes``.

    Raises
    ------
    ValueError
        If a result has no per-record matrices for ``leads`` or the two were
        not scored on the same records with the same kind of peaks.
    """
    a = _result_records(candidate, leads, "candidate")
    b = _result_records(baseline, leads, "baseline")
    if list(a) != list(b):
        raise ValueError(f"the results cover different records: {sorted(a)} vs {sorted(b)}")
    ca, cb = np.array(list(a.values())), np.array(list(b.values()))
    if ca.shape != cb.shape:
        raise ValueError(
            "one result is at the reference peaks and the other at the detector's "
            f"(matrices {ca.shape[1:]} vs {cb.shape[1:]})"
        )
    classes = AAMI_CLASSES if ca.shape[1] == len(AAMI_CLASSES) else (*AAMI_CLASSES, "none")
    macro = FOLD_CLASSES if "epochs" in candidate and "epochs" in baseline else SCORED_CLASSES
    diff = record_bootstrap(ca, cb, classes=classes, macro_over=macro, n_resamples=n_resamples)
    diff["classes"].pop("none", None)

    def pooled(cms: NDArray[np.int64]) -> dict[str, Any]:
        res = result_from_confusion("inter-patient", cms.sum(axis=0), macro_over=macro)
        return {k: res[k] for k in ("accuracy", "macro_f1", "classes")}

    return {
        "macro_f1_classes": list(macro),
        "leads": leads,
        "records": list(a),
        "candidate": pooled(ca),
        "baseline": pooled(cb),
        "difference": diff,
    }


def _result_records(result: dict[str, Any], leads: int, name: str) -> dict[str, Any]:
    """The per-record matrices of an evaluation or terms result for ``leads``."""
    if "by_leads" in result:
        entry = result["by_leads"].get(str(leads))
        if entry is None:
            have = sorted(result["by_leads"])
            raise ValueError(f"the {name} was not evaluated with {leads} lead(s), only with {have}")
    elif "epochs" in result:  # pooled DS1 folds: one matrix per held-out record
        entry = result
    elif "test" in result:
        if leads != 1:
            raise ValueError(f"the {name} is a terms baseline, scored on MLII only (leads 1), not {leads}")
        entry = result["test"]
    else:
        raise ValueError(f"the {name} is not an inter-patient evaluation or pooled folds")
    records: dict[str, Any] | None = entry.get("records")
    if not records:
        raise ValueError(f"the {name} has no per-record confusion matrices; evaluate it again with this code")
    return records


def _with_detection_errors(
    cm: NDArray[np.int64],
    test: list[RecordBeats],
    truths: list[NDArray[np.int64]],
    preds: list[NDArray[np.int64]],
) -> tuple[NDArray[np.int64], dict[str, Any]]:
    """The 5x5 matrix of matched beats grown by a false-detection row and a missed-beat column."""
    k = len(AAMI_CLASSES)
    t, p = np.concatenate(truths), np.concatenate(preds)
    false = np.bincount(p[t == FALSE_DETECTION], minlength=k)
    missed = np.sum([r.missed for r in test], axis=0).astype(np.int64)
    out = np.zeros((k + 1, k + 1), dtype=np.int64)
    out[:k, :k], out[k, :k], out[:k, k] = cm, false, missed
    n_ref, n_det = int(cm.sum() + missed.sum()), int(cm.sum() + false.sum())
    tp = int(cm.sum())
    detection = {
        "matched": tp,
        "missed": int(missed.sum()),
        "false": int(false.sum()),
        "se": 100.0 * tp / n_ref if n_ref else float("nan"),
        "ppv": 100.0 * tp / n_det if n_det else float("nan"),
        "labels": [*AAMI_CLASSES, "none"],
    }
    return out, detection


def _test_data(
    ckpt: Checkpoint,
    protocol: str,
    data_dir: str | os.PathLike[str] | None,
    device_fs: float | None = None,
    peaks: str = "reference",
    *,
    noise: str | None = None,
    snr_db: float | None = None,
) -> tuple[list[RecordBeats], list[NDArray[np.bool_]] | None, list[RecordBeats]]:
    pre = ckpt.preprocess
    if protocol == "inter-patient":
        records = ckpt.split.test if ckpt.split.protocol == "inter-patient" else inter_patient_split().test
        test = load_records(
            records, pre, data_dir=data_dir, device_fs=device_fs, peaks=peaks, noise=noise, snr_db=snr_db
        )
        train_recs = load_records(ckpt.split.train, pre, data_dir=data_dir)
        return test, None, train_recs
    cfg = TrainConfig(**{**_train_config_kwargs(ckpt), "data_dir": str(data_dir or "")})
    data = make_data(cfg, pre)
    return data.test, data.test_mask, data.test


def _gate_of(ckpt: Checkpoint, af_gate: bool | None) -> AFDetector | None:
    """The AF gate to evaluate with: the checkpoint's (``None``), its or the default (``True``), none."""
    if af_gate is None:
        return ckpt.af_detector
    return (ckpt.af_detector or AFDetector()) if af_gate else None


def _train_config_kwargs(ckpt: Checkpoint) -> dict[str, Any]:
    known = TrainConfig.__dataclass_fields__
    return {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt.train_config.items() if k in known}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return None if math.isnan(float(obj)) else float(obj)
    return obj


def _write_json(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out.parent, delete=False, suffix=".tmp") as fh:
        json.dump(_jsonable(result), fh, indent=1)
    os.replace(fh.name, out)
