"""Beat-by-beat scoring of QRS detectors, after ANSI/AAMI EC57.

A detection *matches* a reference beat when the two lie within a matching
window of each other (150 ms in EC57 [1]_ and its reference comparator
``bxb`` [2]_). Each reference beat matches at most one detection and each
detection at most one reference beat; among competing pairs the closest are
matched first. Unmatched reference beats are false negatives (FN), unmatched
detections false positives (FP).

The gross statistics pool the counts of all records before dividing, as EC57
asks (record-averaged figures weight short and long records alike):

* sensitivity ``Se = TP / (TP + FN)``,
* positive predictivity ``+P = TP / (TP + FP)``,
* detection error rate ``DER = (FP + FN) / TP``,

all in percent, and the mean absolute localisation error of the matched
pairs in milliseconds.

Ventricular flutter and fibrillation
------------------------------------
EC57 leaves episodes of ventricular fibrillation or flutter out of the QRS
detection statistics [1]_ (a QRS detector is not expected to count flutter
waves; VF detection is scored on its own), and published MIT-BIH QRS results
commonly do the same. In the MIT-BIH Arrhythmia Database these episodes lie
between the ``[`` (onset) and ``]`` (end) annotations, which occur only in
record 207 (six episodes, 472 flutter waves labelled ``!``, about 2.8 of its
30 minutes). :func:`flutter_intervals` finds them, and :func:`match_beats`
leaves reference beats *and* detections inside the intervals passed as
``exclude`` out of every count. ``!`` waves outside such an episode (there
are none in MIT-BIH) are scored like any other beat. Callers that want the
flutter waves scored pass ``exclude=None``; for our detector on record 207
that turns Se 100% / +P 99.79% into 93.2% / 99.3%.

References
----------
.. [1] ANSI/AAMI EC57:2012, Testing and reporting performance results of
   cardiac rhythm and ST segment measurement algorithms. Association for the
   Advancement of Medical Instrumentation, 2012.
.. [2] Moody GB. WFDB Applications Guide, ``bxb`` (the reference
   implementation of the EC57 beat-by-beat comparison; its default start
   is 5 minutes into the record). PhysioNet,
   https://physionet.org/physiotools/wag/bxb-1.htm.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc._checks import check_fs, check_positive
from sigproc.records import Annotations

__all__ = [
    "EC57_SKIP_S",
    "EC57_WINDOW_S",
    "MatchResult",
    "flutter_intervals",
    "gross_statistics",
    "match_beats",
]

#: Matching window of EC57, in seconds.
EC57_WINDOW_S = 0.15

#: EC57 leaves the first five minutes of each record out (learning period).
EC57_SKIP_S = 300.0


@dataclass(frozen=True)
class MatchResult:
    """Outcome of matching detections against reference beats.

    Attributes
    ----------
    tp, fn, fp : int
        Counts of true positives, false negatives and false positives, after
        the exclusions asked for.
    pairs : ndarray of int64, shape (tp, 2)
        Indices ``(i_reference, i_detected)`` into the input arrays of every
        counted match.
    errors : ndarray of int64, shape (tp,)
        Localisation error ``detected - reference`` of each pair, in samples.
    missed : ndarray of int64
        Sample indices of the counted false negatives.
    false : ndarray of int64
        Sample indices of the counted false positives.
    fs : float
        Sampling rate in Hz.
    """

    tp: int
    fn: int
    fp: int
    pairs: NDArray[np.int64]
    errors: NDArray[np.int64]
    missed: NDArray[np.int64]
    false: NDArray[np.int64]
    fs: float

    def stats(self) -> dict[str, float | int]:
        """Se, +P, DER (%) and mean absolute error (ms) of this result alone."""
        return gross_statistics([self])


def match_beats(
    reference: ArrayLike,
    detected: ArrayLike,
    fs: float,
    *,
    window_s: float = EC57_WINDOW_S,
    skip_first_s: float = 0.0,
    exclude: ArrayLike | None = None,
) -> MatchResult:
    """Match detected beats to reference beats one-to-one (EC57).

    Parameters
    ----------
    reference : array_like of int
        Sample indices of the reference beats (e.g.
        ``Annotations.beats().sample``).
    detected : array_like of int
        Sample indices of the detections.
    fs : float
        Sampling rate in Hz.
    window_s : float
        Largest distance in seconds at which a detection matches a reference
        beat (inclusive); 0.15 s in EC57.
    skip_first_s : float
        Beats and detections before this time are matched (so that a pair
        straddling the boundary is not split) but not counted. EC57 skips the
        first 300 s (``bxb``'s default start [2]_).
    exclude : array_like, shape (k, 2), optional
        Half-open sample intervals ``[start, stop)`` whose reference beats and
        detections are not counted, e.g. :func:`flutter_intervals`.

    Returns
    -------
    MatchResult

    Raises
    ------
    ValueError
        If an input is not 1-D, ``fs`` or ``window_s`` is not positive,
        ``skip_first_s`` is negative, or ``exclude`` is not ``(k, 2)``.

    Examples
    --------
    >>> r = match_beats([100, 400, 700], [102, 420, 550], fs=360.0)
    >>> r.tp, r.fn, r.fp, r.errors.tolist()
    (2, 1, 1, [2, 20])
    """
    fs = check_fs(fs)
    window = int(np.floor(check_positive(window_s, "window_s") * fs + 1e-9))
    skip_first_s = float(skip_first_s)
    if not np.isfinite(skip_first_s) or skip_first_s < 0:
        raise ValueError(f"`skip_first_s` must be >= 0, got {skip_first_s!r}")
    ref_in = _as_indices(reference, "reference")
    det_in = _as_indices(detected, "detected")
    ref_order = np.argsort(ref_in, kind="stable")
    det_order = np.argsort(det_in, kind="stable")
    ref, det = ref_in[ref_order], det_in[det_order]
    pairs = _pair_closest(ref, det, window)

    start = round(skip_first_s * fs)
    spans = _as_intervals(exclude)
    counted_ref = (ref >= start) & ~_inside(ref, spans)
    counted_det = (det >= start) & ~_inside(det, spans)
    matched_ref = np.zeros(ref.size, dtype=bool)
    matched_det = np.zeros(det.size, dtype=bool)
    matched_ref[pairs[:, 0]] = True
    matched_det[pairs[:, 1]] = True
    # A pair counts when its reference beat counts; its detection then cannot
    # also be a false positive.
    keep = counted_ref[pairs[:, 0]]
    kept = pairs[keep]
    missed = ref[counted_ref & ~matched_ref]
    false = det[counted_det & ~matched_det]
    original = np.stack([ref_order[kept[:, 0]], det_order[kept[:, 1]]], axis=1).astype(np.int64)
    return MatchResult(
        tp=int(kept.shape[0]),
        fn=int(missed.size),
        fp=int(false.size),
        pairs=original.reshape(-1, 2),
        errors=(det[kept[:, 1]] - ref[kept[:, 0]]).astype(np.int64),
        missed=missed,
        false=false,
        fs=fs,
    )


def gross_statistics(results: Iterable[MatchResult]) -> dict[str, Any]:
    """Pool match results into gross Se, +P, DER and mean absolute error.

    Parameters
    ----------
    results : iterable of MatchResult
        One per record (or one in all).

    Returns
    -------
    dict
        ``{"tp", "fn", "fp", "se", "ppv", "der", "mean_abs_error_ms"}``;
        ``se``, ``ppv`` and ``der`` in percent. A ratio whose denominator is
        zero is ``nan`` (an empty record has no sensitivity).

    Examples
    --------
    >>> r = match_beats([100, 400, 700], [102, 420, 550], fs=360.0)
    >>> s = gross_statistics([r])
    >>> round(s["se"], 2), round(s["ppv"], 2), s["der"]
    (66.67, 66.67, 100.0)
    """
    tp = fn = fp = 0
    abs_error_ms = 0.0
    for r in results:
        tp += r.tp
        fn += r.fn
        fp += r.fp
        abs_error_ms += float(np.abs(r.errors).sum()) * 1000.0 / r.fs
    return {
        "tp": tp,
        "fn": fn,
        "fp": fp,
        "se": _percent(tp, tp + fn),
        "ppv": _percent(tp, tp + fp),
        "der": _percent(fp + fn, tp),
        "mean_abs_error_ms": abs_error_ms / tp if tp else float("nan"),
    }


def flutter_intervals(annotations: Annotations) -> NDArray[np.int64]:
    """Sample intervals of ventricular flutter/fibrillation episodes.

    Parameters
    ----------
    annotations : Annotations
        All annotations of a record (not only the beats): the episodes are
        delimited by ``[`` (onset) and ``]`` (end).

    Returns
    -------
    ndarray of int64, shape (k, 2)
        Half-open intervals ``[onset, end + 1)``. An onset without an end runs
        to the last annotation; an end without an onset starts at sample 0.

    Examples
    --------
    >>> from sigproc.records import Annotations
    >>> a = Annotations(np.array([5, 10, 20, 30]), np.array(["N", "[", "!", "]"]), ("",) * 4, 360.0)
    >>> flutter_intervals(a).tolist()
    [[10, 31]]
    """
    spans: list[tuple[int, int]] = []
    onset: int | None = None
    for sample, symbol in zip(annotations.sample.tolist(), annotations.symbol.tolist(), strict=True):
        if symbol == "[" and onset is None:
            onset = int(sample)
        elif symbol == "]":
            spans.append((0 if onset is None else onset, int(sample) + 1))
            onset = None
    if onset is not None:
        last = int(annotations.sample[-1]) if len(annotations) else onset
        spans.append((onset, last + 1))
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)


# Internals -------------------------------------------------------------------


def _percent(num: int, den: int) -> float:
    return 100.0 * num / den if den else float("nan")


def _as_indices(x: ArrayLike, name: str) -> NDArray[np.int64]:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}")
    fractional = arr.size and not np.issubdtype(arr.dtype, np.integer)
    if fractional and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise ValueError(f"`{name}` must hold integer sample indices")
    return arr.astype(np.int64)


def _as_intervals(exclude: ArrayLike | None) -> NDArray[np.int64]:
    if exclude is None:
        return np.empty((0, 2), dtype=np.int64)
    arr = np.asarray(exclude, dtype=np.int64)
    if arr.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"`exclude` must have shape (k, 2), got {arr.shape}")
    return arr


def _inside(samples: NDArray[np.int64], spans: NDArray[np.int64]) -> NDArray[np.bool_]:
    mask = np.zeros(samples.size, dtype=bool)
    for start, stop in spans:
        mask |= (samples >= start) & (samples < stop)
    return mask


def _pair_closest(ref: NDArray[np.int64], det: NDArray[np.int64], window: int) -> NDArray[np.int64]:
    """One-to-one pairs within ``window`` samples, closest first."""
    if ref.size == 0 or det.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    lo = np.searchsorted(det, ref - window, side="left")
    hi = np.searchsorted(det, ref + window, side="right")
    counts = hi - lo
    ref_idx = np.repeat(np.arange(ref.size), counts)
    det_idx = (
        np.concatenate([np.arange(a, b) for a, b in zip(lo, hi, strict=True)]) if ref_idx.size else ref_idx
    )
    if ref_idx.size == 0:
        return np.empty((0, 2), dtype=np.int64)
    dist = np.abs(det[det_idx] - ref[ref_idx])
    order = np.lexsort((det_idx, ref_idx, dist))  # closest first; ties by time
    used_ref = np.zeros(ref.size, dtype=bool)
    used_det = np.zeros(det.size, dtype=bool)
    out: list[tuple[int, int]] = []
    for i, j in zip(ref_idx[order].tolist(), det_idx[order].tolist(), strict=True):
        if not used_ref[i] and not used_det[j]:
            used_ref[i] = used_det[j] = True
            out.append((i, j))
    out.sort()
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)
