"""Atrial-fibrillation evidence from the RR intervals, robust to ectopic beats.

In atrial fibrillation the ventricles are driven by a chaotic atrial
rhythm: successive RR intervals look like independent draws, and every
short interval looks "premature". A beat classifier that judges
prematurity against the patient's recent rhythm therefore calls many AF
beats supraventricular ectopic (S), although the AAMI convention labels
them N. Plain irregularity measures (RMSSD, turning points, Lorenz-plot
dispersion) cannot tell AF from sinus rhythm with frequent ectopic beats
(bigeminy, trigeminy, couplets), which is just as irregular beat to beat.

:func:`af_irregularity` measures what sets AF apart: an RR interval of
sinus rhythm with ectopy *repeats* an interval of the last few beats (the
sinus interval in a run of sinus beats, the coupling interval in bigeminy,
lag 2, or trigeminy, lag 3), while an AF interval matches none of them.
For every interval it takes the smallest log-ratio to the ``lags`` clean
intervals before it,

    m_t = min_{k = 1..K} |log RR_t - log RR_(t-k)|,

over *clean* intervals only (neither end a ventricular or fusion beat, as
the classifier calls them: ventricular ectopy is the commonest source of
sinus irregularity and the classifier recognises it well), and reports the
median of ``m`` over the last ``window`` clean intervals. Causal: the value
at beat ``t`` uses beats up to ``t`` only, so :class:`AFMonitor` computes
it beat by beat with the same result.

``lags=3`` covers atrial bigeminy and trigeminy by design. ``window=96``
and ``threshold=0.03`` maximise Youden's J (AF sensitivity minus the share
of other beats called AF) against the rhythm annotations of the
inter-patient training records (DS1: AF in 201 and 203), with the V calls
of networks that had not seen the record (out of fold). See
``docs/model-card.md`` (seventh round) for how they were chosen and the
detection rates on DS1 and DS2.

:class:`SVTRule` covers the opposite failure: the beats of a run of
supraventricular tachycardia are on time for the run (the local RR mean
has followed it down), so a prematurity-minded classifier calls them N;
the rule flags beats whose local rhythm is both faster than 100 bpm and
much faster than the patient's long-run rhythm.

:class:`PrematurityGate` states what the S class is: AAMI's S holds
*premature* supraventricular beats (A, a, J, S; escape beats are N), so a
beat that is neither early against the local rhythm nor part of a fast
run cannot be S, whatever a network judging it against the long-run
rhythm thinks (normal conduction after a stretch of 2:1 AV block, say,
is fast only against the block's long intervals).

References
----------
.. [1] Moody GB, Mark RG. A new method for detecting atrial fibrillation
   using R-R intervals. Computers in Cardiology 10:227-230, 1983.
.. [2] Petrėnas A, Marozas V, Sörnmo L. Low-complexity detection of atrial
   fibrillation in continuous long-term monitoring. Computers in Biology
   and Medicine 65:184-191, 2015 (ectopic-beat filtering before the
   irregularity measure).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

__all__ = ["AFDetector", "AFMonitor", "PrematurityGate", "SVTRule", "af_irregularity", "clean_intervals"]


@dataclass(frozen=True)
class AFDetector:
    """Parameters of the RR-based AF evidence.

    Attributes
    ----------
    lags : int
        How many earlier clean intervals an interval may repeat (3 covers
        bigeminy and trigeminy).
    window : int
        Clean intervals whose median mismatch is reported.
    min_intervals : int
        Fewer mismatches than this give ``NaN`` (no evidence yet).
    threshold : float
        Irregularity above which the rhythm is called AF (a median log
        ratio: 0.03 is a 3 % mismatch to the closest of the last three
        intervals).
    """

    lags: int = 3
    window: int = 96
    min_intervals: int = 16
    threshold: float = 0.03

    def __post_init__(self) -> None:
        if self.lags < 1:
            raise ValueError(f"`lags` must be at least 1, got {self.lags}")
        if not 1 <= self.min_intervals <= self.window:
            raise ValueError(
                f"`min_intervals` must be 1 to `window` ({self.window}), got {self.min_intervals}"
            )
        if not self.threshold > 0:
            raise ValueError(f"`threshold` must be positive, got {self.threshold}")

    def flags(self, irregularity: NDArray[np.float64]) -> NDArray[np.bool_]:
        """AF calls: irregularity above :attr:`threshold` (``NaN`` is not AF)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(irregularity > self.threshold)


@dataclass(frozen=True)
class SVTRule:
    """A run of supraventricular tachycardia, from the local and long-run RR means.

    A beat of a run of supraventricular tachycardia is not premature against
    the local rhythm (the run has pulled the 10-beat mean down with it),
    only against the long-run one. A beat is in such a run when its local
    RR mean is shorter than ``max_local_rr`` (faster than 100 bpm, the
    clinical definition of tachycardia) and than ``max_local_to_mean`` of the
    long-run mean (an abrupt rise over the patient's usual rate). Both
    values are textbook thresholds, fixed before any evaluation; the
    inter-patient DS1 records 209 and 207 (runs of SVT their networks
    missed) motivated the rule.

    Attributes
    ----------
    max_local_rr : float
        Seconds.
    max_local_to_mean : float
        Ratio of the local to the long-run RR mean.
    """

    max_local_rr: float = 0.6
    max_local_to_mean: float = 0.8

    def __post_init__(self) -> None:
        if not self.max_local_rr > 0:
            raise ValueError(f"`max_local_rr` must be positive, got {self.max_local_rr}")
        if not 0 < self.max_local_to_mean <= 1:
            raise ValueError(f"`max_local_to_mean` must be in (0, 1], got {self.max_local_to_mean}")

    def flags(self, local_rr: ArrayLike, mean_rr: ArrayLike) -> NDArray[np.bool_]:
        """Beats in a fast run, from the ``local_rr`` and ``mean_rr`` columns of the RR features (s)."""
        local = np.asarray(local_rr, dtype=np.float64)
        mean = np.asarray(mean_rr, dtype=np.float64)
        return np.asarray((local < self.max_local_rr) & (local < self.max_local_to_mean * mean))


@dataclass(frozen=True)
class PrematurityGate:
    """No supraventricular ectopic beat without prematurity or a fast rhythm.

    A beat may be S when it comes early against the local rhythm,
    ``pre_rr < max_pre_to_local * local_rr``, or belongs to a fast run,
    ``local_rr < max_local_rr`` (a run of SVT has pulled the local mean down
    with it, so its beats are on time for the run). Otherwise its S
    probability goes to N (:func:`model.inference.prematurity_gate`). Both
    values are textbook thresholds fixed before any evaluation: 10 %
    premature, and 100 bpm for tachycardia.

    Attributes
    ----------
    max_pre_to_local : float
        Ratio of the beat's RR interval to the local (10-beat) mean below
        which the beat is premature.
    max_local_rr : float
        Local RR mean in seconds below which the rhythm is fast.
    """

    max_pre_to_local: float = 0.9
    max_local_rr: float = 0.6

    def __post_init__(self) -> None:
        if not 0 < self.max_pre_to_local <= 1:
            raise ValueError(f"`max_pre_to_local` must be in (0, 1], got {self.max_pre_to_local}")
        if not self.max_local_rr > 0:
            raise ValueError(f"`max_local_rr` must be positive, got {self.max_local_rr}")

    def allows(self, pre_rr: ArrayLike, local_rr: ArrayLike) -> NDArray[np.bool_]:
        """Beats that may be S, from the ``pre_rr`` and ``local_rr`` columns of the RR features (s)."""
        pre = np.asarray(pre_rr, dtype=np.float64)
        local = np.asarray(local_rr, dtype=np.float64)
        if pre.shape != local.shape:
            raise ValueError(f"`pre_rr` has shape {pre.shape}, `local_rr` {local.shape}")
        return np.asarray((pre < self.max_pre_to_local * local) | (local < self.max_local_rr))


def _check_rr(pre_rr: ArrayLike, clean: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    rr = np.asarray(pre_rr, dtype=np.float64)
    ok = np.asarray(clean, dtype=bool)
    if rr.ndim != 1:
        raise ValueError(f"`pre_rr` must be one-dimensional (one interval per beat), got shape {rr.shape}")
    if ok.shape != rr.shape:
        raise ValueError(f"`clean` has shape {ok.shape} for {rr.size} RR intervals")
    if not (np.isfinite(rr).all() and (rr > 0).all()):
        raise ValueError("`pre_rr` must hold finite, positive intervals in seconds")
    return rr, ok


def af_irregularity(
    pre_rr: ArrayLike, clean: ArrayLike, detector: AFDetector | None = None
) -> NDArray[np.float64]:
    """AF evidence of every beat: the median mismatch of the recent clean RR intervals.

    Parameters
    ----------
    pre_rr : array_like, shape (N,)
        The interval before each beat in seconds (``pre_rr`` of
        :func:`sigproc.beats.rr_features`).
    clean : array_like of bool, shape (N,)
        Whether the interval counts: neither the beat nor the one before it
        is ventricular or fusion (see :func:`clean_intervals`).
    detector : AFDetector, optional
        Parameters (default :class:`AFDetector()`).

    Returns
    -------
    ndarray, shape (N,)
        The irregularity at each beat, ``NaN`` until ``min_intervals``
        mismatches are available.

    Raises
    ------
    ValueError
        If the arrays differ in shape or an interval is not positive.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> sinus = np.full(100, 0.8)
    >>> sinus[::2] = 0.5  # bigeminy: irregular beat to beat, but repeating
    >>> af = rng.uniform(0.4, 1.0, 100)
    >>> ok = np.ones(100, bool)
    >>> float(af_irregularity(sinus, ok)[-1]), bool(af_irregularity(af, ok)[-1] > 0.06)
    (0.0, True)
    """
    det = detector or AFDetector()
    rr, ok = _check_rr(pre_rr, clean)
    out = np.full(rr.size, np.nan)
    idx = np.flatnonzero(ok)
    x = np.log(rr[idx])
    if x.size <= det.lags:
        return out
    mism = np.min(
        [np.abs(x[det.lags :] - x[det.lags - k : x.size - k]) for k in range(1, det.lags + 1)], axis=0
    )
    # median of the last `window` mismatches, at each clean interval that has `min_intervals` of them
    med = np.full(mism.size, np.nan)
    w = det.window
    if mism.size >= w:
        med[w - 1 :] = np.median(np.lib.stride_tricks.sliding_window_view(mism, w), axis=1)
    for j in range(det.min_intervals - 1, min(w - 1, mism.size)):
        med[j] = np.median(mism[: j + 1])
    # each beat reports the value at the last clean interval up to it
    n_clean = np.cumsum(ok)  # clean intervals up to and including beat t
    n_mism = n_clean - det.lags  # mismatches up to beat t
    has = n_mism >= 1
    out[has] = med[n_mism[has] - 1]
    return out


def clean_intervals(ectopic: ArrayLike) -> NDArray[np.bool_]:
    """Intervals that neither start nor end at an ectopic (ventricular, fusion) beat.

    ``ectopic`` (N,) bool marks the beats; the first beat's interval is
    never clean (its start is unknown).
    """
    v = np.asarray(ectopic, dtype=bool)
    if v.ndim != 1:
        raise ValueError(f"`ectopic` must be one-dimensional, got shape {v.shape}")
    prev = np.concatenate([[True], v[:-1]]) if v.size else v
    return ~v & ~prev


class AFMonitor:
    """:func:`af_irregularity` beat by beat, for a live stream.

    Examples
    --------
    >>> mon = AFMonitor()
    >>> values = [mon.push(0.8, clean=True) for _ in range(30)]
    >>> values[-1], mon.af
    (0.0, False)
    """

    def __init__(self, detector: AFDetector | None = None) -> None:
        self.detector = detector or AFDetector()
        self._logs: deque[float] = deque(maxlen=self.detector.lags)
        self._mism: deque[float] = deque(maxlen=self.detector.window)
        self.irregularity = float("nan")
        self._prev_ectopic = True

    def copy(self) -> AFMonitor:
        """An independent monitor in the same state (cheap: two short deques)."""
        twin = AFMonitor(self.detector)
        twin._logs.extend(self._logs)
        twin._mism.extend(self._mism)
        twin.irregularity = self.irregularity
        twin._prev_ectopic = self._prev_ectopic
        return twin

    def reset(self) -> None:
        """Forget the history (a gap in the signal, a new recording)."""
        self._logs.clear()
        self._mism.clear()
        self.irregularity = float("nan")
        self._prev_ectopic = True

    @property
    def af(self) -> bool:
        """Whether the current irregularity says AF."""
        return bool(self.irregularity > self.detector.threshold)

    def push(self, pre_rr: float, *, clean: bool) -> float:
        """Add the next beat's interval; returns the irregularity at this beat."""
        if not (np.isfinite(pre_rr) and pre_rr > 0):
            raise ValueError(f"`pre_rr` must be a finite, positive interval in seconds, got {pre_rr!r}")
        if clean:
            x = float(np.log(pre_rr))
            if len(self._logs) == self.detector.lags:
                self._mism.append(min(abs(x - y) for y in self._logs))
                if len(self._mism) >= self.detector.min_intervals:
                    self.irregularity = float(np.median(np.fromiter(self._mism, float)))
            self._logs.append(x)
        return self.irregularity

    def push_beat(self, pre_rr: float, *, ectopic: bool) -> float:
        """Add the next beat given whether it is ectopic (tracks the previous beat itself)."""
        clean = not ectopic and not self._prev_ectopic
        self._prev_ectopic = ectopic
        return self.push(pre_rr, clean=clean)
