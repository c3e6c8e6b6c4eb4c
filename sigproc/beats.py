"""Beat segmentation and RR-interval features.

A beat is the window ``x_t = X[:, r_t - W/2 : r_t + W/2]`` of all leads
around its R peak ``r_t`` (eq. 10 of Ronihal et al. 2025). Its rhythm
context is summarised by RR features (eq. 14): the intervals to the previous
and next beats and their ratios to a local and a long-run mean, the features
that separate premature supraventricular beats from normal ones in the
inter-patient setting [1]_ [2]_.

All RR features except ``post_rr`` are causal: they use only beats up to and
including the current one, so a live stream can compute them as each beat
arrives. ``post_rr`` needs the next beat, one beat of delay; a model decides
whether to use it.

References
----------
.. [1] de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of
   heartbeats using ECG morphology and heartbeat interval features. IEEE
   Trans Biomed Eng 51(7):1196-1206, 2004.
.. [2] Mondéjar-Guerra V et al. Heartbeat classification fusing temporal and
   morphological information of ECGs via ensemble of classifiers. Biomed
   Signal Process Control 47:41-48, 2019.
.. [3] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc._checks import as_signal, check_fs, check_positive

__all__ = [
    "RR_FEATURE_NAMES",
    "BeatWindows",
    "StreamingRRFeatures",
    "beat_windows",
    "rr_features",
]

#: Columns of the array :func:`rr_features` returns, in order. Intervals are
#: in seconds; ratios are dimensionless.
RR_FEATURE_NAMES: tuple[str, ...] = (
    "pre_rr",
    "post_rr",
    "local_rr",
    "mean_rr",
    "pre_local_ratio",
    "pre_mean_ratio",
    "post_pre_ratio",
)

#: RR interval assumed for a beat that has no predecessor yet (75 bpm).
DEFAULT_RR_S = 0.8


@dataclass(frozen=True)
class BeatWindows:
    """Windows of all leads around each R peak.

    Attributes
    ----------
    windows : ndarray, shape (n_beats, n_leads, n_window)
        Samples of each beat; parts that fall outside the signal repeat the
        edge sample.
    complete : ndarray of bool, shape (n_beats,)
        True where the whole window lies inside the signal.
    start : ndarray of int64, shape (n_beats,)
        Sample index of each window's first sample.
    """

    windows: NDArray[np.float64]
    complete: NDArray[np.bool_]
    start: NDArray[np.int64]


def beat_windows(
    x: ArrayLike,
    r_peaks: ArrayLike,
    fs: float,
    *,
    window_s: float = 0.72,
    pre_fraction: float = 0.5,
) -> BeatWindows:
    """Cut a window of every lead around each R peak (eq. 10).

    Parameters
    ----------
    x : array_like, shape (n_samples,) or (n_samples, n_leads)
        ECG.
    r_peaks : array_like of int
        Sample index of each R peak.
    fs : float
        Sampling rate in Hz.
    window_s : float
        Window length in seconds; ``round(window_s * fs)`` samples.
    pre_fraction : float
        Share of the window before the R peak; 0.5 centres it as in eq. 10.

    Returns
    -------
    BeatWindows

    Raises
    ------
    ValueError
        If an R peak lies outside the signal or the window is shorter than
        three samples.

    Examples
    --------
    >>> import numpy as np
    >>> bw = beat_windows(np.arange(1000.0), [100, 500], 360.0, window_s=0.1)
    >>> bw.windows.shape, float(bw.windows[0, 0, 18])
    ((2, 1, 36), 100.0)
    """
    fs = check_fs(fs)
    window_s = check_positive(window_s, "window_s")
    if not 0.0 <= pre_fraction <= 1.0:
        raise ValueError(f"`pre_fraction` must be between 0 and 1, got {pre_fraction}")
    sig = as_signal(x, allow_nan=True, ndim=(1, 2))
    sig2 = sig.reshape(len(sig), -1)
    peaks = _as_indices(r_peaks)
    if peaks.size and (peaks.min() < 0 or peaks.max() >= len(sig2)):
        raise ValueError(f"`r_peaks` must lie in [0, {len(sig2) - 1}], got {peaks.min()}..{peaks.max()}")
    width = round(window_s * fs)
    if width < 3:
        raise ValueError(f"`window_s` gives {width} sample(s) at {fs:g} Hz; need at least 3")
    pre = round(width * pre_fraction)
    start = peaks - pre
    idx = start[:, None] + np.arange(width)[None, :]  # (B, W)
    complete = (start >= 0) & (start + width <= len(sig2))
    windows = sig2[np.clip(idx, 0, len(sig2) - 1)]  # (B, W, L)
    return BeatWindows(np.ascontiguousarray(windows.transpose(0, 2, 1)), complete, start)


def rr_features(
    r_peaks: ArrayLike,
    fs: float,
    *,
    local_beats: int = 10,
    mean_beats: int = 300,
) -> NDArray[np.float64]:
    """RR-interval features of each beat, columns :data:`RR_FEATURE_NAMES`.

    Parameters
    ----------
    r_peaks : array_like of int
        Sorted R-peak sample indices of one record or stream.
    fs : float
        Sampling rate in Hz.
    local_beats : int
        Number of most recent RR intervals averaged into ``local_rr``.
    mean_beats : int
        Number of most recent RR intervals averaged into ``mean_rr``, the
        long-run reference (300 beats is about five minutes). A running
        mean rather than the whole-record mean keeps the feature causal and
        identical offline and live.

    Returns
    -------
    ndarray, shape (n_beats, 7)
        ``pre_rr`` is the interval from the previous beat (the long-run mean,
        or 0.8 s for the very first beat); ``post_rr`` the interval to the
        next beat (``pre_rr`` for the last beat, which has none yet).

    Raises
    ------
    ValueError
        If ``r_peaks`` is not strictly increasing or the window sizes are not
        positive.
    """
    fs = check_fs(fs)
    peaks = _as_indices(r_peaks)
    if peaks.size > 1 and np.any(np.diff(peaks) <= 0):
        raise ValueError("`r_peaks` must be strictly increasing")
    stream = StreamingRRFeatures(fs, local_beats=local_beats, mean_beats=mean_beats)
    causal = np.array([stream.push(int(p)) for p in peaks]).reshape(-1, 4)
    pre, local, mean = causal[:, 0], causal[:, 1], causal[:, 2]
    post = np.empty_like(pre)
    post[:-1] = pre[1:]
    post[-1:] = pre[-1:]
    return np.column_stack([pre, post, local, mean, pre / local, pre / mean, post / pre])


class StreamingRRFeatures:
    """Causal RR features of a live stream, one beat at a time.

    :meth:`push` gives the causal columns of a beat as soon as it is
    detected; :meth:`complete` adds ``post_rr`` once the next beat is known.
    On the same R peaks the result equals :func:`rr_features`.

    Parameters
    ----------
    fs : float
        Sampling rate in Hz.
    local_beats, mean_beats : int
        See :func:`rr_features`.
    """

    def __init__(self, fs: float, *, local_beats: int = 10, mean_beats: int = 300) -> None:
        self.fs = check_fs(fs)
        for name, value in (("local_beats", local_beats), ("mean_beats", mean_beats)):
            if int(value) < 1:
                raise ValueError(f"`{name}` must be >= 1, got {value}")
        self._local: deque[float] = deque(maxlen=int(local_beats))
        self._long: deque[float] = deque(maxlen=int(mean_beats))
        self._long_sum = 0.0
        self._last_peak: int | None = None

    def reset(self) -> None:
        """Forget the history, e.g. after a long signal gap."""
        self._local.clear()
        self._long.clear()
        self._long_sum = 0.0
        self._last_peak = None

    def push(self, r_peak: int) -> tuple[float, float, float, float]:
        """Add a beat; returns ``(pre_rr, local_rr, mean_rr, pre/local)``."""
        if self._last_peak is not None and r_peak <= self._last_peak:
            raise ValueError(f"`r_peak` must increase: {r_peak} after {self._last_peak}")
        if self._last_peak is None:
            pre = float(np.mean(self._long)) if self._long else DEFAULT_RR_S
        else:
            pre = (r_peak - self._last_peak) / self.fs
            self._local.append(pre)
            if len(self._long) == self._long.maxlen:
                self._long_sum -= self._long[0]
            self._long.append(pre)
            self._long_sum += pre
        self._last_peak = r_peak
        local = float(np.mean(self._local)) if self._local else pre
        mean = self._long_sum / len(self._long) if self._long else pre
        return pre, local, mean, pre / local

    @staticmethod
    def complete(causal: tuple[float, float, float, float], post_rr: float) -> NDArray[np.float64]:
        """Full feature row of a beat from its :meth:`push` result and the next RR."""
        pre, local, mean, _ = causal
        return np.array([pre, post_rr, local, mean, pre / local, pre / mean, post_rr / pre])


# Internals -------------------------------------------------------------------


def _as_indices(r_peaks: ArrayLike) -> NDArray[np.int64]:
    arr = np.asarray(r_peaks)
    if arr.ndim != 1:
        raise ValueError(f"`r_peaks` must be 1-D, got shape {arr.shape}")
    if (
        arr.size
        and not np.issubdtype(arr.dtype, np.integer)
        and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)))
    ):
        raise ValueError("`r_peaks` must hold integer sample indices")
    return arr.astype(np.int64)
