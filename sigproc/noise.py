"""NSTDB noise mixed into ECG at a signal-to-noise ratio defined as the NSTDB's own.

The MIT-BIH Noise Stress Test Database [1]_ holds three noise records
recorded from active volunteers with electrodes placed where no ECG is
seen: ``ma`` (muscle artefact), ``bw`` (baseline wander) and ``em``
(electrode motion). Its ``nst`` program defines the SNR of a mixture with
the signal power taken from the QRS peak-to-peak amplitude ``pp`` of the
annotated beats (``pp**2 / 8``, the power of a sine of that amplitude) and
the noise power as the mean square of the noise after removing its mean
(:func:`scale_noise`). Replay devices (:mod:`ingest.replay`) and the
classifier's noise evaluation (:func:`model.data.load_record_beats`) mix
noise with :func:`nstdb_noise`, so the two mean the same by "6 dB".

References
----------
.. [1] Moody GB, Muldrow WE, Mark RG. A noise stress test for arrhythmia
   detectors. Computers in Cardiology 11:381-384, 1984.
"""

from __future__ import annotations

import functools
import os

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sigproc.records import Record, load_record

__all__ = ["NOISE_TYPES", "nstdb_noise", "scale_noise"]

#: NSTDB noise records: muscle artefact, baseline wander, electrode motion.
NOISE_TYPES: tuple[str, ...] = ("ma", "bw", "em")

_QRS_HALF_WINDOW_S = 0.05  # +-50 ms around an annotated beat holds its QRS


def scale_noise(
    signal: ArrayLike,
    noise: ArrayLike,
    snr_db: float,
    *,
    beats: ArrayLike = (),
    fs: float = 360.0,
) -> NDArray[np.float64]:
    """Scale ``noise`` so that ``signal + noise`` has the given SNR (NSTDB definition).

    Parameters
    ----------
    signal, noise : array_like, shape (n,)
        One lead of ECG and of noise, same length and units.
    snr_db : float
        Wanted SNR in dB.
    beats : array_like of int
        Annotated beat positions. With beats, the signal power is
        ``pp**2 / 8`` with ``pp`` the median QRS peak-to-peak amplitude in
        +-50 ms around each beat (as NSTDB's ``nst``); without, it falls back
        to the signal's variance (RMS-based SNR).
    fs : float
        Sampling rate in Hz (for the QRS window).

    Returns
    -------
    ndarray
        The scaled noise, mean removed.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x, n = np.sin(np.arange(3600) / 20), rng.standard_normal(3600)
    >>> y = scale_noise(x, n, 6.0)
    >>> round(10 * np.log10(x.var() / y.var()), 6)
    6.0
    """
    x = np.asarray(signal, dtype=np.float64)
    n = np.asarray(noise, dtype=np.float64)
    if x.shape != n.shape or x.ndim != 1:
        raise ValueError(f"`signal` and `noise` must be 1-D of one length, got {x.shape} and {n.shape}")
    n = n - n.mean()
    noise_power = float(np.mean(n**2))
    if noise_power == 0:
        raise ValueError("`noise` is constant; it cannot be scaled to an SNR")
    half = max(1, round(_QRS_HALF_WINDOW_S * fs))
    positions = [int(b) for b in np.asarray(beats, dtype=np.int64) if half <= b < x.size - half]
    if positions:
        pp = np.median([np.ptp(x[b - half : b + half + 1]) for b in positions])
        signal_power = float(pp) ** 2 / 8.0
    else:
        signal_power = float(np.var(x))
    return np.asarray(n * np.sqrt(signal_power / noise_power / 10 ** (snr_db / 10.0)), dtype=np.float64)


@functools.lru_cache(maxsize=2)
def _noise_record(kind: str, data_dir: str | os.PathLike[str] | None) -> Record:
    """An NSTDB noise record, kept in memory while several devices mix it in."""
    return load_record(kind, "nstdb", data_dir, annotations=False)


def nstdb_noise(
    kind: str,
    signal: NDArray[np.float64],
    beats: ArrayLike,
    fs: float,
    snr_db: float,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    offset: int = 0,
) -> NDArray[np.float64]:
    """NSTDB noise for every lead of ``signal`` (n, L), each scaled by :func:`scale_noise`.

    Lead ``i`` takes noise channel ``i % 2``, all from the same time
    ``offset`` (samples), looped if the noise record is shorter.

    Parameters
    ----------
    kind : str
        NSTDB noise record, one of :data:`NOISE_TYPES`.
    signal : ndarray, shape (n, L)
        The ECG, in mV.
    beats : array_like of int
        Annotated beat positions in ``signal`` (the QRS amplitude of the SNR).
    fs : float
        Sampling rate of ``signal``; the noise record must have it.
    snr_db : float
        Wanted SNR in dB.
    data_dir : path, optional
        Folder holding ``nstdb/``.
    offset : int
        Where in the noise record the noise starts.

    Returns
    -------
    ndarray, shape (n, L)
        The noise to add.

    Raises
    ------
    ValueError
        For an unknown ``kind`` or a noise record at another rate.
    """
    if kind not in NOISE_TYPES:
        raise ValueError(f"`noise` must be one of {', '.join(NOISE_TYPES)}, got {kind!r}")
    rec = _noise_record(kind, None if data_dir is None else os.fspath(data_dir))
    if rec.fs != fs:
        raise ValueError(f"NSTDB {kind} is sampled at {rec.fs:g} Hz, the record at {fs:g} Hz")
    index = (offset + np.arange(signal.shape[0])) % rec.n_samples
    out = np.empty_like(signal)
    for lead in range(signal.shape[1]):
        raw = np.nan_to_num(rec.signal[index, lead % rec.signal.shape[1]])
        out[:, lead] = scale_noise(signal[:, lead], raw, snr_db, beats=beats, fs=fs)
    return out
