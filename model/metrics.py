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

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc.records import AAMI_CLASSES

__all__ = [
    "class_metrics",
    "confusion_matrix",
    "ec57_gross",
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


def _f1(se: float, ppv: float) -> float:
    if np.isnan(se) or np.isnan(ppv):
        return float("nan")
    return float(2 * se * ppv / (se + ppv)) if se + ppv > 0 else 0.0


def class_metrics(confusion: ArrayLike, classes: Sequence[str] = AAMI_CLASSES) -> dict[str, dict[str, float]]:
    """Se, +P and F1 (percent) of each class of a confusion matrix.

    Examples
    --------
    >>> m = class_metrics([[8, 2], [1, 9]], ("N", "V"))
    >>> round(m["V"]["se"], 1), round(m["V"]["ppv"], 1)
    (90.0, 81.8)
    """
    cm = np.asarray(confusion, dtype=np.float64)
    out: dict[str, dict[str, float]] = {}
    for i, name in enumerate(classes):
        tp = cm[i, i]
        se = _rate(tp, cm[i].sum())
        ppv = _rate(tp, cm[:, i].sum())
        out[name] = {"se": se, "ppv": ppv, "f1": _f1(se, ppv), "support": int(cm[i].sum())}
    return out


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
