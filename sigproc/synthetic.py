"""Synthetic ECG with known R-peak positions, for tests, demos and benchmarks.

Each beat is a sum of Gaussian waves for P, Q, R, S and T, the model of
McSharry et al. [1]_ reduced to its morphology: the waves are placed at
fixed offsets (in seconds) from the R peak and their widths scale mildly with
the RR interval. Beats of class ``"V"`` get a wide, tall, P-less complex with
an inverted T wave, the textbook premature ventricular contraction.

References
----------
.. [1] McSharry PE, Clifford GD, Tarassenko L, Smith LA. A dynamical model for
   generating synthetic electrocardiogram signals. IEEE Trans Biomed Eng
   50(3):289-294, 2003.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sigproc._checks import check_fs, check_positive

__all__ = ["SyntheticECG", "synthetic_ecg"]

# (offset from R in s, width in s, amplitude in mV) per wave.
_NORMAL_WAVES = (
    (-0.20, 0.025, 0.15),  # P
    (-0.03, 0.010, -0.12),  # Q
    (0.00, 0.012, 1.20),  # R
    (0.03, 0.010, -0.25),  # S
    (0.28, 0.050, 0.30),  # T
)
_VENTRICULAR_WAVES = (
    (-0.02, 0.020, -0.30),
    (0.00, 0.035, 1.70),
    (0.06, 0.030, -0.60),
    (0.30, 0.070, -0.45),
)


@dataclass(frozen=True)
class SyntheticECG:
    """A synthetic recording.

    Attributes
    ----------
    signal : ndarray, shape (n_samples,) or (n_samples, n_leads)
        ECG in mV.
    r_peaks : ndarray of int64
        Sample index of every R peak.
    labels : ndarray of str
        Beat class (``"N"`` or ``"V"``) of every R peak.
    fs : float
        Sampling rate in Hz.
    """

    signal: NDArray[np.float64]
    r_peaks: NDArray[np.int64]
    labels: NDArray[np.str_]
    fs: float


def synthetic_ecg(
    duration_s: float = 10.0,
    fs: float = 360.0,
    *,
    heart_rate_bpm: float = 70.0,
    hrv: float = 0.05,
    noise_mv: float = 0.0,
    baseline_mv: float = 0.0,
    pvc_every: int = 0,
    n_leads: int = 1,
    lead_gains: Sequence[float] | None = None,
    seed: int = 0,
) -> SyntheticECG:
    """Generate an ECG strip with known R peaks.

    Parameters
    ----------
    duration_s : float
        Length in seconds.
    fs : float
        Sampling rate in Hz.
    heart_rate_bpm : float
        Mean heart rate.
    hrv : float
        Relative standard deviation of the RR intervals.
    noise_mv : float
        Standard deviation of added white noise in mV.
    baseline_mv : float
        Amplitude of a 0.25 Hz baseline wander in mV.
    pvc_every : int
        Make every ``pvc_every``-th beat a premature ventricular beat
        (0: none). PVCs come 30% early and are followed by a compensatory
        pause.
    n_leads : int
        Number of leads; lead ``k`` is the signal scaled by ``lead_gains[k]``
        with independent noise.
    lead_gains : sequence of float, optional
        Per-lead gain (default 1.0, 0.6, -0.4, ...).
    seed : int
        Seed of the random generator; equal seeds give equal signals.

    Returns
    -------
    SyntheticECG

    Examples
    --------
    >>> ecg = synthetic_ecg(10.0, 360.0, heart_rate_bpm=60, hrv=0.0)
    >>> ecg.signal.shape, len(ecg.r_peaks)
    ((3600,), 10)
    """
    fs = check_fs(fs)
    duration_s = check_positive(duration_s, "duration_s")
    heart_rate_bpm = check_positive(heart_rate_bpm, "heart_rate_bpm")
    if not 20 <= heart_rate_bpm <= 300:
        raise ValueError(f"`heart_rate_bpm` must be between 20 and 300, got {heart_rate_bpm:g}")
    if n_leads < 1:
        raise ValueError(f"`n_leads` must be >= 1, got {n_leads}")
    rng = np.random.default_rng(seed)
    n = round(duration_s * fs)
    t = np.arange(n) / fs
    rr_mean = 60.0 / heart_rate_bpm

    peaks: list[float] = []
    labels: list[str] = []
    pos = rr_mean / 2
    k = 0
    while pos < duration_s - 0.4:
        k += 1
        is_pvc = pvc_every > 0 and k % pvc_every == 0
        if is_pvc:
            pos -= 0.3 * rr_mean
        peaks.append(pos)
        labels.append("V" if is_pvc else "N")
        rr = rr_mean * (1 + hrv * rng.standard_normal())
        pos += max(rr, 0.25) + (0.3 * rr_mean if is_pvc else 0.0)

    x = np.zeros(n)
    for r, label in zip(peaks, labels, strict=True):
        waves = _VENTRICULAR_WAVES if label == "V" else _NORMAL_WAVES
        stretch = np.sqrt(rr_mean)  # QT and widths lengthen at slow rates
        for offset, width, amp in waves:
            centre = r + offset * (stretch if abs(offset) > 0.1 else 1.0)
            lo, hi = np.searchsorted(t, [centre - 5 * width, centre + 5 * width])
            x[lo:hi] += amp * np.exp(-0.5 * ((t[lo:hi] - centre) / width) ** 2)
    if baseline_mv:
        x += baseline_mv * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 2 * np.pi))

    gains = list(lead_gains) if lead_gains is not None else [1.0, 0.6, -0.4, 0.8, -0.7][:n_leads]
    gains += [1.0] * (n_leads - len(gains))
    leads = [g * x + noise_mv * rng.standard_normal(n) for g in gains[:n_leads]]
    signal = leads[0] if n_leads == 1 else np.stack(leads, axis=1)
    # R peak at the nearest sample to its true time, clipped into the strip.
    r_idx = np.clip(np.round(np.asarray(peaks) * fs).astype(np.int64), 0, n - 1)
    return SyntheticECG(signal, r_idx, np.asarray(labels, dtype="<U1"), fs)
