"""Classification metrics from confusion matrices, the EC57 way and the paper's way.

Rates are returned as percentages. Conventions:

* ``confusion[i, j]`` counts beats of reference class ``i`` predicted as ``j``.
* Per class ``c``: sensitivity ``Se = TP / (TP + FN)``, positive
  predictivity ``+P = TP / (TP + FP)``, ``F1 = 2 Se +P / (Se + +P)``; a rate
  with a zero denominator is reported as ``nan`` (JSON ``null``), never 0.
* Gross EC57 statistics (ANSI/AAMI EC57:2012, as used by de Chazal 2004):
  beats of all test records pooled. For VEB, reference F and Q beats
  predicted as V are not false positives; for SVEB, reference Q beats
  predicted as S are not. Unclassifiable (Q) reference beats are kept in
  the confusion matrix but out of the SVEB/VEB false-positive counts.

References
----------
.. [1] ANSI/AAMI EC57:2012, Testing and reporting performance results of
   cardiac rhythm and ST segment measurement algorithms.
.. [2] de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of
   heartbeats using ECG morphology and heartbeat interval features. IEEE
   Trans Biomed Eng 51(7):1196-1206, 2004.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc.records import AAMI_CLASSES

__all__ = [
    "class_metrics",
    "confusion_matrix",
    "ec57_gross",
    "record_bootstrap",
    "summary_metrics",
]


def confusion_matrix(
    y_true: ArrayLike, y_pred: ArrayLike, n_classes: int = len(AAMI_CLASSES)
) -> NDArray[np.int64]:
    """Counts ``C[i, j]`` of reference ``i`` predicted ``j``; labels < 0 are skipped.

    Examples
    --------
    >>> confusion_matrix([0, 0, 1, -1], [0, 1, 1, 0], 2).tolist()
    [[1, 1], [0, 1]]
    """
    t = np.asarray(y_true, dtype=np.int64).ravel()
    p = np.asarray(y_pred, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"`y_true` and `y_pred` differ in length: {t.size} vs {p.size}")
    keep = t >= 0
    t, p = t[keep], p[keep]
    if t.size and (t.max() >= n_classes or p.min() < 0 or p.max() >= n_classes):
        raise ValueError(f"labels must lie in 0..{n_classes - 1}")
    return np.bincount(t * n_classes + p, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _rate(num: float, den: float) -> float:
    return float(100.0 * num / den) if den > 0 else float("nan")


def class_metrics(confusion: ArrayLike, classes: Sequence[str] = AAMI_CLASSES) -> dict[str, dict[str, float]]:
    """Se, +P and F1 (percent) of each class of a confusion matrix.

    Examples
    --------
    >>> m = class_metrics([[8, 2], [1, 9]], ("N", "V"))
    >>> round(m["V"]["se"], 1), round(m["V"]["ppv"], 1)
    (90.0, 81.8)
    """
    cm = np.asarray(confusion, dtype=np.float64)
    rates = _batch_rates(cm[None])
    return {
        name: {
            "se": float(rates["se"][0, i]),
            "ppv": float(rates["ppv"][0, i]),
            "f1": float(rates["f1"][0, i]),
            "support": int(cm[i].sum()),
        }
        for i, name in enumerate(classes)
    }


def summary_metrics(
    confusion: ArrayLike, classes: Sequence[str] = AAMI_CLASSES, *, macro_over: Sequence[str] | None = None
) -> dict[str, float]:
    """Accuracy and macro / weighted precision, recall and F1 (percent).

    Macro averages run over ``macro_over`` (default: every class with
    reference beats), restricted to classes with support > 0; weighted
    averages weight each class by its support. A class with support but no
    predictions counts with precision 0 in the averages.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    per = class_metrics(cm, classes)
    support = np.array([per[c]["support"] for c in classes], dtype=np.float64)
    present = (support > 0) & np.array([macro_over is None or c in macro_over for c in classes])

    def arr(key: str) -> NDArray[np.float64]:
        return np.nan_to_num(np.array([per[c][key] for c in classes]), nan=0.0)

    prec, rec, f1 = arr("ppv"), arr("se"), arr("f1")
    w = support / support.sum() if support.sum() > 0 else support
    return {
        "accuracy": _rate(np.trace(cm), cm.sum()),
        "macro_precision": float(prec[present].mean()) if present.any() else float("nan"),
        "macro_recall": float(rec[present].mean()) if present.any() else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "weighted_precision": float((prec * w).sum()),
        "weighted_recall": float((rec * w).sum()),
        "weighted_f1": float((f1 * w).sum()),
    }


def ec57_gross(confusion: ArrayLike, classes: Sequence[str] = AAMI_CLASSES) -> dict[str, dict[str, float]]:
    """Gross SVEB and VEB statistics with EC57 counting (percent and counts).

    Returns
    -------
    dict
        ``{"SVEB": {"tp", "fn", "fp", "se", "ppv", "fpr"}, "VEB": {...}}``;
        ``fpr`` is false positives over reference beats of the other
        counted classes.
    """
    cm = np.asarray(confusion, dtype=np.int64)
    idx = {c: i for i, c in enumerate(classes)}
    out: dict[str, dict[str, float]] = {}
    # Reference classes whose beats count as false positives when predicted as the event.
    counted = {"SVEB": ("S", ("N", "V", "F")), "VEB": ("V", ("N", "S"))}
    for event, (cls, others) in counted.items():
        k = idx[cls]
        tp = int(cm[k, k])
        fn = int(cm[k].sum() - tp)
        fp = int(sum(cm[idx[o], k] for o in others))
        negatives = int(sum(cm[idx[o]].sum() for o in others))
        out[event] = {
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "se": _rate(tp, tp + fn),
            "ppv": _rate(tp, tp + fp),
            "fpr": _rate(fp, negatives),
        }
    return out


def record_bootstrap(
    confusions: ArrayLike,
    baseline: ArrayLike | None = None,
    *,
    classes: Sequence[str] = AAMI_CLASSES,
    macro_over: Sequence[str] | None = None,
    n_resamples: int = 2000,
    level: float = 95.0,
    seed: int = 0,
) -> dict[str, Any]:
    """Percentile intervals of the pooled metrics when the test *records* are resampled.

    The beats of one record are not independent draws: an inter-patient
    test set is a sample of patients, and one patient can hold most of a
    class (record 232 holds three quarters of DS2's S beats). Resampling
    whole records with replacement and pooling their confusion matrices
    gives the spread a different set of patients would have shown.

    Parameters
    ----------
    confusions : array_like, shape (R, C, C)
        One confusion matrix per test record.
    baseline : array_like, shape (R, C, C), optional
        Another model's matrices on the same records: the intervals are then
        those of the difference ``confusions - baseline`` of each metric,
        with the same records drawn for both (a paired comparison), plus
        ``share_ahead``, the share of resamples in which ``confusions`` is
        ahead, with the keys of the intervals.
    classes : sequence of str
        Class names, in the matrices' order.
    macro_over : sequence of str, optional
        Classes of the macro F1, as in :func:`summary_metrics`.
    n_resamples : int
        Bootstrap resamples.
    level : float
        Two-sided coverage in percent.
    seed : int
        Seed of the draws; the intervals are reproducible.

    Returns
    -------
    dict
        ``{"level", "n_resamples", "n_records", "accuracy": [lo, hi],
        "macro_f1": [lo, hi], "classes": {c: {"se", "ppv", "f1": [lo, hi]}}}``
        in percent (points of difference with ``baseline``); ``null`` bounds
        where a rate is undefined in every resample.

    Raises
    ------
    ValueError
        If the matrices are not (R, C, C) with one row per class, R < 2,
        ``baseline`` has another shape, or ``level`` / ``n_resamples`` are
        out of range.

    Examples
    --------
    >>> same = [[[9, 1], [1, 9]]] * 4
    >>> record_bootstrap(same, classes=("N", "V"), n_resamples=50)["accuracy"]
    [90.0, 90.0]
    """
    cms = np.asarray(confusions, dtype=np.float64)
    k = len(classes)
    if cms.ndim != 3 or cms.shape[1:] != (k, k):
        raise ValueError(f"`confusions` must have shape (records, {k}, {k}), got {cms.shape}")
    if cms.shape[0] < 2:
        raise ValueError(f"resampling records needs at least two records, got {cms.shape[0]}")
    if not 0 < level < 100:
        raise ValueError(f"`level` must lie strictly between 0 and 100, got {level}")
    if n_resamples < 1:
        raise ValueError(f"`n_resamples` must be >= 1, got {n_resamples}")
    base = None if baseline is None else np.asarray(baseline, dtype=np.float64)
    if base is not None and base.shape != cms.shape:
        raise ValueError(f"`baseline` must have the shape of `confusions` {cms.shape}, got {base.shape}")
    n = cms.shape[0]
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_resamples, n))
    counts = np.zeros((n_resamples, n))
    np.add.at(counts, (np.arange(n_resamples)[:, None], draws), 1.0)  # how often each record is drawn
    in_macro = np.array([macro_over is None or c in macro_over for c in classes])
    stats = _batch_metrics(np.einsum("br,rij->bij", counts, cms), in_macro)
    if base is not None:
        other = _batch_metrics(np.einsum("br,rij->bij", counts, base), in_macro)
        stats = {key: stats[key] - other[key] for key in stats}
    tail = (100.0 - level) / 2

    def interval(x: NDArray[np.float64]) -> list[float | None]:
        x = x[~np.isnan(x)]
        if not x.size:
            return [None, None]
        return [float(v) for v in np.percentile(x, [tail, 100.0 - tail])]

    out: dict[str, Any] = {
        "level": level,
        "n_resamples": n_resamples,
        "n_records": n,
        "accuracy": interval(stats["accuracy"]),
        "macro_f1": interval(stats["macro_f1"]),
        "classes": {
            c: {m: interval(stats[m][:, i]) for m in ("se", "ppv", "f1")} for i, c in enumerate(classes)
        },
    }
    if base is not None:
        out["share_ahead"] = {
            "accuracy": float(np.mean(stats["accuracy"] > 0)),
            "macro_f1": float(np.mean(stats["macro_f1"] > 0)),
            "classes": {
                c: {m: float(np.mean(stats[m][:, i] > 0)) for m in ("se", "ppv", "f1")}
                for i, c in enumerate(classes)
            },
        }
    return out


def _batch_rates(cms: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Se, +P and F1 (percent) of every class of (B, C, C) matrices; ``nan`` where undefined.

    F1 is ``nan`` when Se or +P is, 0 when both are 0. The one definition
    behind :func:`class_metrics` and :func:`record_bootstrap`.
    """
    tp = np.einsum("bii->bi", cms)
    support, predicted = cms.sum(axis=2), cms.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        se = np.where(support > 0, 100.0 * tp / support, np.nan)
        ppv = np.where(predicted > 0, 100.0 * tp / predicted, np.nan)
        f1 = np.where(se + ppv > 0, 2 * se * ppv / (se + ppv), 0.0)
    f1[np.isnan(se) | np.isnan(ppv)] = np.nan
    return {"se": se, "ppv": ppv, "f1": f1, "support": support}


def _batch_metrics(cms: NDArray[np.float64], in_macro: NDArray[np.bool_]) -> dict[str, NDArray[np.float64]]:
    """Per-class rates, accuracy and macro F1 (as :func:`summary_metrics`) of (B, C, C) matrices at once."""
    rates = _batch_rates(cms)
    present = (rates["support"] > 0) & in_macro
    with np.errstate(invalid="ignore", divide="ignore"):
        macro = np.where(
            present.any(axis=1),
            (np.nan_to_num(rates["f1"]) * present).sum(axis=1) / present.sum(axis=1),
            np.nan,
        )
        accuracy = 100.0 * np.einsum("bii->b", cms) / cms.sum(axis=(1, 2))
    return {
        "accuracy": accuracy,
        "macro_f1": macro,
        "se": rates["se"],
        "ppv": rates["ppv"],
        "f1": rates["f1"],
    }
