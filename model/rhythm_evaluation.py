"""How well the AF gate finds atrial fibrillation, against the MIT-BIH rhythm annotations.

:func:`evaluate_af` runs a beat classifier over records (beats at the
reference annotations), computes the RR evidence of atrial fibrillation
(:func:`sigproc.rhythm.af_irregularity`, leaving out the intervals at the
beats the classifier calls V, F or Q, as :func:`model.inference.af_gate`
does) and scores the AF call of every beat against the rhythm in force at
it: atrial fibrillation or flutter (``(AFIB``, ``(AFL``) or another rhythm.

Each record is classified by the first of the given checkpoints that was
not trained on it, so the four fold networks of a leave-records-out split
give every DS1 record a classifier that never saw it (out of fold), and the
shipped weights score DS2. With ``grid=True`` the detector's parameters are
searched for the best Youden's J (AF sensitivity minus the share of other
beats called AF) over the pooled beats: how the defaults of
:class:`sigproc.rhythm.AFDetector` were chosen, on DS1 only.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from model.checkpoint import Checkpoint, load_checkpoint, out_of_fold
from model.cnn_lstm import BeatSequenceModel
from model.data import load_record_beats
from model.inference import ECTOPIC_CLASSES, predict_arrays, rhythm_gates
from sigproc.records import AAMI_CLASSES, load_annotations
from sigproc.rhythm import AFDetector, af_irregularity, clean_intervals

__all__ = ["AF_GRID", "AF_RHYTHMS", "evaluate_af"]

#: Rhythm notes counted as atrial fibrillation: fibrillation and flutter (whose
#: variable conduction the gate should also catch).
AF_RHYTHMS: tuple[str, ...] = ("(AFIB", "(AFL")

#: The detector parameters :func:`evaluate_af` searches with ``grid=True``.
AF_GRID: dict[str, tuple[float, ...]] = {
    "lags": (2, 3, 4, 5),
    "window": (32, 64, 96),
    "threshold": tuple(round(0.02 + 0.005 * i, 3) for i in range(10)),
}


def evaluate_af(
    checkpoints: Sequence[str | os.PathLike[str]],
    records: Sequence[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    leads: int = 1,
    detector: AFDetector | None = None,
    grid: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the AF call of every beat of ``records`` against the rhythm annotations.

    Parameters
    ----------
    checkpoints : sequence of path
        Beat classifiers; each record is classified by the first one whose
        training split does not hold it.
    records : sequence of str
        MIT-BIH records.
    data_dir : path, optional
        Folder holding ``mitdb/``.
    leads : int
        Leads the classifier reads (1: MLII, the wearable's case).
    detector : AFDetector, optional
        The detector scored (default: the first checkpoint's, else
        :class:`AFDetector()`).
    grid : bool
        Also search :data:`AF_GRID` for the best Youden's J.

    Returns
    -------
    dict
        ``detector``, ``records`` (per record: ``checkpoint``, ``af_beats``,
        ``af_called``, ``other_beats``, ``other_called``, ``s_beats_called``:
        S beats the gate would take away, ``se``, ``fpr``), ``pooled`` (the
        same over all beats, with ``j``), and with ``grid`` the ``grid``
        rows sorted by J.

    Raises
    ------
    ValueError
        If no checkpoint was left without a record, or ``leads`` is out of range.
    """
    assigned = out_of_fold(checkpoints, records, leads=leads)
    if detector is None:  # the first checkpoint's, read again only if it classified no record
        first = next((c for _, p, c, _ in assigned if p == Path(checkpoints[0])), None)
        detector = (first or load_checkpoint(checkpoints[0])).af_detector
    det = detector or AFDetector()
    beats: dict[str, dict[str, Any]] = {}
    for name, path, ckpt, model in assigned:
        if progress:
            print(f"record {name}: {path.name}", flush=True)
        beats[name] = {"checkpoint": path.name, **_record_beats(model, ckpt, name, data_dir, leads)}
    result: dict[str, Any] = {
        "detector": asdict(det),
        "leads": leads,
        "af_rhythms": list(AF_RHYTHMS),
        "checkpoints": [str(p) for p in checkpoints],
    }
    result.update(_score(beats, det))
    if grid:
        result["grid"] = _grid(beats, det)
    return result


def _record_beats(
    model: BeatSequenceModel,
    ckpt: Checkpoint,
    name: str,
    data_dir: str | os.PathLike[str] | None,
    leads: int,
) -> dict[str, NDArray[Any]]:
    rec = load_record_beats(name, ckpt.preprocess, data_dir=data_dir)
    mask = torch.arange(ckpt.model_config.n_leads) < leads
    with torch.no_grad():
        out = predict_arrays(model, torch.from_numpy(rec.windows), torch.from_numpy(rec.rr), mask)
    gated = rhythm_gates(  # the calls the AF gate sees in inference: after the SVT rule and prematurity gate
        torch.softmax(out.class_logits, -1).numpy(),
        torch.softmax(out.early_logits, -1).numpy(),
        rec.rr,
        tuple(ckpt.label_map),
        svt_rule=ckpt.svt_rule,
        prematurity=ckpt.prematurity_gate,
    )
    called = gated.class_probs.argmax(-1)
    ectopic = np.isin(called, [ckpt.label_map.index(c) for c in ECTOPIC_CLASSES])
    rhythm = load_annotations(name, data_dir=data_dir).rhythms(rec.r_peaks)
    return {
        "pre_rr": rec.rr[:, 0].astype(np.float64),
        "clean": clean_intervals(ectopic),
        "af": np.isin(rhythm, AF_RHYTHMS),
        "s": rec.labels == AAMI_CLASSES.index("S"),
    }


def _counts(af: NDArray[np.bool_], called: NDArray[np.bool_], s: NDArray[np.bool_]) -> dict[str, Any]:
    n_af, n_other = int(af.sum()), int((~af).sum())
    c_af, c_other = int((called & af).sum()), int((called & ~af).sum())
    se = 100.0 * c_af / n_af if n_af else None
    fpr = 100.0 * c_other / n_other if n_other else None
    return {
        "af_beats": n_af,
        "af_called": c_af,
        "other_beats": n_other,
        "other_called": c_other,
        "s_beats_called": int((called & s).sum()),
        "se": se,
        "fpr": fpr,
    }


def _score(beats: dict[str, dict[str, Any]], det: AFDetector) -> dict[str, Any]:
    per: dict[str, Any] = {}
    pooled = []
    for name, b in beats.items():
        called = det.flags(af_irregularity(b["pre_rr"], b["clean"], det))
        per[name] = {"checkpoint": b["checkpoint"], **_counts(b["af"], called, b["s"])}
        pooled.append((b["af"], called, b["s"]))
    af, called, s = (np.concatenate(x) for x in zip(*pooled, strict=True))
    total = _counts(af, called, s)
    total["j"] = _youden(total)
    return {"records": per, "pooled": total}


def _youden(counts: dict[str, Any]) -> float | None:
    if counts["se"] is None or counts["fpr"] is None:
        return None
    return float((counts["se"] - counts["fpr"]) / 100.0)


def _grid(beats: dict[str, dict[str, Any]], base: AFDetector) -> list[dict[str, Any]]:
    af = np.concatenate([b["af"] for b in beats.values()])
    s = np.concatenate([b["s"] for b in beats.values()])
    rows = []
    for lags, window in itertools.product(AF_GRID["lags"], AF_GRID["window"]):
        det = replace(base, lags=int(lags), window=int(window))
        irregularity = np.concatenate([af_irregularity(b["pre_rr"], b["clean"], det) for b in beats.values()])
        for threshold in AF_GRID["threshold"]:
            counts = _counts(af, replace(det, threshold=float(threshold)).flags(irregularity), s)
            rows.append({"lags": int(lags), "window": int(window), "threshold": float(threshold), **counts})
            rows[-1]["j"] = _youden(counts)
    return sorted(rows, key=lambda r: -(r["j"] if r["j"] is not None else -1.0))
