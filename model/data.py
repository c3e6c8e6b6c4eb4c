"""Beat datasets and evaluation splits of the MIT-BIH Arrhythmia Database.

Every record is preprocessed the way the live pipeline sees a stream: the
whole record goes through the *causal* band-pass
(:class:`sigproc.filters.StreamingFilter`, 0.5-40 Hz Butterworth from the
first sample), a window of every lead is cut around each reference R peak
(eq. 10 of the paper), the windows are resampled to the model's rate and
each lead of each window is z-scored on its own. RR features come from
:func:`sigproc.beats.rr_features` on the same R peaks. Labels are the AAMI
classes of the reference annotations; beats without an AAMI class (``!``,
``?``, ``B``...) keep their place in the sequence with label ``-1`` and are
neither trained on nor scored.

Lead order is fixed: lead 0 is MLII (record 114 has its leads swapped and is
put right), lead 1 is the record's other lead (usually V1). A single-lead
device is lead 0 with lead 1 masked.

Splits
------
* ``inter-patient``: train DS1, test DS2 (de Chazal et al. 2004 [2]_); the
  validation records for early stopping come out of DS1, never DS2.
* ``random``: the paper's protocol, 80:10:10 of beat sequences pooled over
  all non-paced records, so a patient's beats sit in train and test [1]_.
* ``cv``: k folds of beat sequences pooled the same way.

The paced records 102, 104, 107 and 217 are left out everywhere (EC57).

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
.. [2] de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of
   heartbeats using ECG morphology and heartbeat interval features. IEEE
   Trans Biomed Eng 51(7):1196-1206, 2004.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
import scipy.signal
from numpy.typing import NDArray

from sigproc.beats import RR_FEATURE_NAMES, beat_windows, rr_features
from sigproc.filters import FilterSpec, StreamingFilter
from sigproc.noise import NOISE_TYPES, nstdb_noise
from sigproc.peaks import detect_r_peaks
from sigproc.records import (
    AAMI_CLASSES,
    AAMI_MAP,
    DS1,
    DS2,
    MITDB_RECORDS,
    PACED_RECORDS,
    cache_dir,
    load_record,
)
from sigproc.scoring import match_beats

__all__ = [
    "CAUSAL_RR_COLUMNS",
    "DEFAULT_VALIDATION_RECORDS",
    "DS1_FOLDS",
    "FALSE_DETECTION",
    "NON_PACED_RECORDS",
    "PEAK_SOURCES",
    "BeatSequences",
    "PreprocessConfig",
    "RecordBeats",
    "Split",
    "beats_cache_dir",
    "inter_patient_split",
    "kfold_splits",
    "load_record_beats",
    "load_records",
    "normalise_windows",
    "random_split",
    "resample_windows",
    "rr_columns",
]

#: The 44 records that are not paced.
NON_PACED_RECORDS: tuple[str, ...] = tuple(r for r in MITDB_RECORDS if r not in PACED_RECORDS)

#: DS1 records held out for early stopping of the inter-patient model. They
#: hold about 280 S and 1,200 V beats of DS1 without taking record 209, the
#: richest source of S beats, away from training.
DEFAULT_VALIDATION_RECORDS: tuple[str, ...] = ("101", "106", "118", "207", "223")

#: The four leave-records-out folds over DS1 that score inter-patient candidates
#: (``train --validation-records <fold>``, then ``evaluate folds``): each holds
#: one or two of the S-rich records, and every DS1 record is held out once.
DS1_FOLDS: tuple[tuple[str, ...], ...] = (
    ("209", "119", "101", "112", "115"),
    ("207", "118", "106", "122", "230"),
    ("220", "223", "208", "114", "116"),
    ("201", "124", "203", "205", "215", "108", "109"),
)

#: Columns of :data:`sigproc.beats.RR_FEATURE_NAMES` that need no look-ahead.
CAUSAL_RR_COLUMNS: tuple[int, ...] = tuple(
    i for i, name in enumerate(RR_FEATURE_NAMES) if name not in ("post_rr", "post_pre_ratio")
)

#: Bump when the preprocessing changes, to invalidate cached beat arrays.
_CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """How a stream becomes beat windows and RR features; stored in checkpoints.

    Attributes
    ----------
    fs : float
        The model's sampling rate in Hz; windows at any other rate are
        resampled to it (:func:`resample_windows`).
    window_s : float
        Beat window length in seconds (eq. 10).
    pre_fraction : float
        Share of the window before the R peak; 0.4 puts 0.29 s before and
        0.43 s after it, which holds the P wave and the T wave at normal rates.
    filter_kind, filter_low_hz, filter_high_hz : str, float, float
        The causal Butterworth filter applied to the stream from its start.
    filter_order : int
        Its order.
    rr_local_beats, rr_mean_beats : int
        Averaging lengths of :func:`sigproc.beats.rr_features`.
    n_leads : int
        Leads the model takes: lead 0 MLII, lead 1 the second lead.
    """

    fs: float = 180.0
    window_s: float = 0.72
    pre_fraction: float = 0.4
    filter_kind: str = "bandpass"
    filter_low_hz: float = 0.5
    filter_high_hz: float = 40.0
    filter_order: int = 2
    rr_local_beats: int = 10
    rr_mean_beats: int = 300
    n_leads: int = 2

    @property
    def n_window(self) -> int:
        """Window length in samples at the model's rate."""
        return round(self.window_s * self.fs)

    def filter_spec(self) -> FilterSpec:
        """The causal filter as a :class:`sigproc.filters.FilterSpec`."""
        return FilterSpec(
            kind=self.filter_kind,  # type: ignore[arg-type]
            low_hz=self.filter_low_hz,
            high_hz=self.filter_high_hz,
            order=self.filter_order,
        )

    def key(self) -> str:
        """Short hash naming the cache folder of this preprocessing."""
        text = json.dumps({**asdict(self), "version": _CACHE_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


#: Where beats can be located: the reference annotations or the project's detector.
PEAK_SOURCES: tuple[str, ...] = ("reference", "detector")

#: Label of a detected beat that matches no reference beat (a false detection).
FALSE_DETECTION = -2


@dataclass(frozen=True)
class RecordBeats:
    """Every reference beat of one record, preprocessed.

    Attributes
    ----------
    record : str
        Record name.
    windows : ndarray of float32, shape (N, L, W)
        Normalised beat windows at the model's rate.
    rr : ndarray of float32, shape (N, 7)
        RR features, columns :data:`sigproc.beats.RR_FEATURE_NAMES`.
    labels : ndarray of int64, shape (N,)
        Index into :data:`sigproc.records.AAMI_CLASSES`, -1 for beats
        without an AAMI class.
    r_peaks : ndarray of int64, shape (N,)
        R-peak sample indices at the record's own rate.
    missed : ndarray of int64, shape (5,)
        Beats located by the detector (``peaks="detector"``): reference
        beats of each AAMI class that no detection matched. Detections that
        match no reference beat have the label :data:`FALSE_DETECTION`.
        All zero for beats at the reference annotations.
    """

    record: str
    windows: NDArray[np.float32]
    rr: NDArray[np.float32]
    labels: NDArray[np.int64]
    r_peaks: NDArray[np.int64]
    missed: NDArray[np.int64] = field(default_factory=lambda: np.zeros(len(AAMI_CLASSES), dtype=np.int64))

    def __len__(self) -> int:
        return int(self.labels.size)


@dataclass(frozen=True)
class Split:
    """A train / validation / test partition, stored in checkpoints and results.

    Records are listed for record-wise splits; for beat-sequence splits
    (``random``, ``cv``) ``seed``, ``fold`` and ``n_folds`` regenerate the
    exact partition with :func:`random_split` or :func:`kfold_splits`.
    """

    protocol: str
    train: tuple[str, ...]
    validation: tuple[str, ...]
    test: tuple[str, ...]
    seed: int = 0
    fold: int = -1
    n_folds: int = 0

    def to_dict(self) -> dict[str, object]:
        """Plain-type form for checkpoints and JSON."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> Split:
        """Inverse of :meth:`to_dict`."""

        def strs(key: str) -> tuple[str, ...]:
            value = d[key]
            if not isinstance(value, list | tuple):
                raise ValueError(f"split field {key!r} must be a list of record names, got {value!r}")
            return tuple(str(v) for v in value)

        def num(key: str, default: int) -> int:
            value = d.get(key, default)
            return int(value) if isinstance(value, int | float | str) else default

        return cls(
            protocol=str(d["protocol"]),
            train=strs("train"),
            validation=strs("validation"),
            test=strs("test"),
            seed=num("seed", 0),
            fold=num("fold", -1),
            n_folds=num("n_folds", 0),
        )


def inter_patient_split(validation: Sequence[str] = DEFAULT_VALIDATION_RECORDS) -> Split:
    """DS1 (less the validation records) -> DS2, paced records excluded.

    Raises
    ------
    ValueError
        If a validation record is not a DS1 record: the inter-patient
        validation set is never taken from DS2.
    """
    bad = [r for r in validation if r not in DS1]
    if bad:
        raise ValueError(f"`validation` records must come from DS1, got {bad}")
    train = tuple(r for r in DS1 if r not in validation and r not in PACED_RECORDS)
    test = tuple(r for r in DS2 if r not in PACED_RECORDS)
    return Split("inter-patient", train, tuple(validation), test)


def random_split(*, seed: int = 0, records: Sequence[str] = NON_PACED_RECORDS) -> Split:
    """The paper's 80:10:10 split of beat sequences pooled over ``records``."""
    recs = tuple(records)
    return Split("random", recs, recs, recs, seed=seed)


def kfold_splits(
    n_folds: int = 5, *, seed: int = 0, records: Sequence[str] = NON_PACED_RECORDS
) -> list[Split]:
    """``n_folds`` folds of beat sequences pooled over ``records``."""
    if n_folds < 2:
        raise ValueError(f"`n_folds` must be >= 2, got {n_folds}")
    recs = tuple(records)
    return [Split("cv", recs, recs, recs, seed=seed, fold=k, n_folds=n_folds) for k in range(n_folds)]


def beats_cache_dir() -> Path:
    """Folder of cached beat arrays (``~/.cache/cardiac-monitor/beats``)."""
    return cache_dir().parent / "beats"


def resample_windows(
    windows: NDArray[np.floating], fs_in: float, fs_out: float, n_out: int
) -> NDArray[np.float32]:
    """Resample beat windows along their last axis and fit them to ``n_out`` samples.

    Parameters
    ----------
    windows : ndarray, shape (..., W_in)
        Windows at ``fs_in`` Hz.
    fs_in, fs_out : float
        Rates in Hz.
    n_out : int
        Window length wanted at ``fs_out``; the resampled window is cut or
        edge-padded at its end to this length.

    Returns
    -------
    ndarray of float32, shape (..., n_out)
    """
    if fs_in <= 0 or fs_out <= 0:
        raise ValueError(f"sampling rates must be positive, got fs_in={fs_in}, fs_out={fs_out}")
    arr = np.asarray(windows, dtype=np.float64)
    if fs_in != fs_out:
        ratio = Fraction(fs_out / fs_in).limit_denominator(1000)
        arr = scipy.signal.resample_poly(arr, ratio.numerator, ratio.denominator, axis=-1, padtype="line")
    if arr.shape[-1] < n_out:
        pad = [(0, 0)] * (arr.ndim - 1) + [(0, n_out - arr.shape[-1])]
        arr = np.pad(arr, pad, mode="edge")
    return np.ascontiguousarray(arr[..., :n_out], dtype=np.float32)


def normalise_windows(windows: NDArray[np.floating]) -> NDArray[np.float32]:
    """Z-score each lead of each window over its samples.

    Per-beat normalisation removes the gain differences between patients and
    electrodes, which matter more than absolute amplitude across patients;
    the shape of the beat, its width and the RR context carry the class.
    A flat window (standard deviation below 1 µV) is only centred.
    """
    arr = np.asarray(windows, dtype=np.float64)
    centred = arr - arr.mean(axis=-1, keepdims=True)
    std = centred.std(axis=-1, keepdims=True)
    return (centred / np.where(std < 1e-3, 1.0, std)).astype(np.float32)


def rr_columns(*, use_post_rr: bool) -> tuple[int, ...]:
    """RR feature columns a model reads: all seven, or the causal five."""
    return tuple(range(len(RR_FEATURE_NAMES))) if use_post_rr else CAUSAL_RR_COLUMNS


def load_record_beats(
    record: str,
    config: PreprocessConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    device_fs: float | None = None,
    peaks: str = "reference",
    noise: str | None = None,
    snr_db: float | None = None,
) -> RecordBeats:
    """Preprocess one MIT-BIH record into beats (cached under :func:`beats_cache_dir`).

    Parameters
    ----------
    record : str
        Record name.
    config : PreprocessConfig, optional
        Preprocessing; defaults to :class:`PreprocessConfig()`.
    data_dir : path, optional
        Folder holding ``mitdb/``.
    use_cache : bool
        Read and write the ``.npz`` cache.
    device_fs : float, optional
        Simulate a device at this rate (e.g. 250 or 500 Hz): the record is
        resampled to it first, then filtered and cut at that rate, and the
        windows resampled to the model's rate as the inference API does.
    peaks : {"reference", "detector"}
        Where the beats are: at the reference annotations (the usual
        practice of the inter-patient literature), or where the project's
        R-peak detector (:func:`sigproc.peaks.detect_r_peaks` on the
        leads of ``config``, as the live pipeline runs it) puts them. Detected beats take the class
        of the reference beat they match within 150 ms (EC57); the rest get
        :data:`FALSE_DETECTION`, and unmatched reference beats are counted
        per class in ``missed``. RR features come from the detections.
    noise, snr_db : optional
        Mix NSTDB noise (one of :data:`sigproc.noise.NOISE_TYPES`) into the
        record at ``snr_db`` dB before anything else, as a noisier wearable
        would record it: the mixture a replay of the whole record with the
        same noise streams (:func:`sigproc.noise.nstdb_noise`, the NSTDB's
        definition of the SNR).

    Returns
    -------
    RecordBeats
        ``r_peaks`` are at the record's own rate (or ``device_fs``).

    Raises
    ------
    ValueError
        For an unknown ``peaks`` or ``noise``, ``noise`` without ``snr_db``
        (or the reverse), or a record without reference annotations.
    """
    if peaks not in PEAK_SOURCES:
        raise ValueError(f"`peaks` must be one of {PEAK_SOURCES}, got {peaks!r}")
    if noise is not None and noise not in NOISE_TYPES:
        raise ValueError(f"`noise` must be one of {', '.join(NOISE_TYPES)}, got {noise!r}")
    if (noise is None) != (snr_db is None):
        raise ValueError(f"`noise` and `snr_db` go together, got noise={noise!r}, snr_db={snr_db!r}")
    cfg = config or PreprocessConfig()
    suffix = (
        ("" if device_fs is None else f"@{device_fs:g}Hz")
        + ("" if peaks == "reference" else "+detector")
        + ("" if noise is None else f"+{noise}{snr_db:g}dB")
    )
    path = beats_cache_dir() / cfg.key() / f"{record}{suffix}.npz"
    if use_cache and path.exists():
        with np.load(path) as z:
            missed = z["missed"] if "missed" in z.files else np.zeros(len(AAMI_CLASSES), dtype=np.int64)
            return RecordBeats(record, z["windows"], z["rr"], z["labels"], z["r_peaks"], missed)
    rec = load_record(record, data_dir=data_dir)
    if rec.annotations is None:
        raise ValueError(f"record {record} has no reference annotations")
    signal = _lead_order(rec.signal, rec.leads)[:, : cfg.n_leads]  # (n, L)
    ann = rec.annotations.beats()
    if noise is not None and snr_db is not None:
        signal = signal + nstdb_noise(noise, signal, ann.sample, rec.fs, snr_db, data_dir)
    at, fs = ann.sample, rec.fs
    if device_fs is not None and device_fs != rec.fs:
        ratio = Fraction(device_fs / rec.fs).limit_denominator(1000)
        signal = scipy.signal.resample_poly(signal, ratio.numerator, ratio.denominator, axis=0)
        at = np.minimum(np.round(at * device_fs / rec.fs).astype(np.int64), len(signal) - 1)
        fs = float(device_fs)
    filtered = StreamingFilter.from_spec(cfg.filter_spec(), fs, n_leads=signal.shape[1]).process(signal)
    labels = np.array(
        [AAMI_CLASSES.index(AAMI_MAP[str(s)]) if str(s) in AAMI_MAP else -1 for s in ann.symbol],
        dtype=np.int64,
    )
    missed = np.zeros(len(AAMI_CLASSES), dtype=np.int64)
    if peaks == "detector":
        detected = detect_r_peaks(signal, fs)  # the leads given, as the live pipeline does
        match = match_beats(at, detected, fs)
        det_labels = np.full(detected.size, FALSE_DETECTION, dtype=np.int64)
        det_labels[match.pairs[:, 1]] = labels[match.pairs[:, 0]]
        unmatched = np.ones(at.size, dtype=bool)
        unmatched[match.pairs[:, 0]] = False
        lost = labels[unmatched]
        missed = np.bincount(lost[lost >= 0], minlength=len(AAMI_CLASSES)).astype(np.int64)
        at, labels = detected, det_labels
    bw = beat_windows(filtered, at, fs, window_s=cfg.window_s, pre_fraction=cfg.pre_fraction)
    windows = normalise_windows(resample_windows(bw.windows, fs, cfg.fs, cfg.n_window))  # (N, L, W)
    rr = rr_features(at, fs, local_beats=cfg.rr_local_beats, mean_beats=cfg.rr_mean_beats)
    out = RecordBeats(record, windows, rr.astype(np.float32), labels, at.astype(np.int64), missed)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a name of this process's own: parallel runs (folds, grid jobs) may build the same record at once
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
        try:
            np.savez(
                tmp, windows=out.windows, rr=out.rr, labels=out.labels, r_peaks=out.r_peaks, missed=missed
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    return out


def load_records(
    records: Iterable[str],
    config: PreprocessConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device_fs: float | None = None,
    peaks: str = "reference",
    noise: str | None = None,
    snr_db: float | None = None,
) -> list[RecordBeats]:
    """:func:`load_record_beats` for several records, in order."""
    return [
        load_record_beats(
            r, config, data_dir=data_dir, device_fs=device_fs, peaks=peaks, noise=noise, snr_db=snr_db
        )
        for r in records
    ]


class BeatSequences:
    """Fixed-length sequences of consecutive beats, for training.

    Each item is ``T`` consecutive beats of one record with the labels of
    beats ``t + h`` for the early-alarm heads. Sequence starts are spaced by
    ``stride`` from a ``phase`` that :meth:`reshuffle` moves each epoch, so
    that every beat takes every position of a sequence over the epochs.

    Parameters
    ----------
    records : list of RecordBeats
        The records.
    seq_len : int
        ``T``, beats per sequence.
    horizons : tuple of int
        Early-alarm horizons ``h`` in beats.
    stride : int, optional
        Beats between sequence starts (default ``seq_len``).
    """

    def __init__(
        self,
        records: Sequence[RecordBeats],
        *,
        seq_len: int,
        horizons: tuple[int, ...],
        stride: int | None = None,
    ) -> None:
        if seq_len < 1:
            raise ValueError(f"`seq_len` must be >= 1, got {seq_len}")
        if not records:
            raise ValueError("`records` is empty")
        self.records = list(records)
        self.seq_len = int(seq_len)
        self.horizons = tuple(int(h) for h in horizons)
        self.stride = int(stride or seq_len)
        self.windows = np.concatenate([r.windows for r in records])  # (N, L, W)
        self.rr = np.concatenate([r.rr for r in records])  # (N, 7)
        self.labels = np.concatenate([r.labels for r in records])  # (N,)
        lengths = np.array([len(r) for r in records])
        self._offsets = np.concatenate(([0], np.cumsum(lengths)))
        self._frozen = False
        self.reshuffle(0)

    def reshuffle(self, phase: int) -> None:
        """Place sequence starts at ``phase + k * stride`` in every record.

        A no-op once :meth:`subset_starts` has fixed the sequences.
        """
        if self._frozen:
            return
        starts: list[NDArray[np.int64]] = []
        for i in range(len(self.records)):
            lo, hi = int(self._offsets[i]), int(self._offsets[i + 1])
            if hi - lo < self.seq_len:
                continue
            s = np.arange(lo + phase % self.stride, hi - self.seq_len + 1, self.stride)
            if s.size == 0 or s[0] != lo:
                s = np.concatenate(([lo], s))  # the record start, with no history
            starts.append(s.astype(np.int64))
        self.starts = np.concatenate(starts) if starts else np.zeros(0, dtype=np.int64)
        # Record end of each start, for the early-alarm targets.
        rec_idx = np.searchsorted(self._offsets, self.starts, side="right") - 1
        self._ends = self._offsets[rec_idx + 1]

    def __len__(self) -> int:
        return int(self.starts.size)

    def subset_starts(self, keep: NDArray[np.bool_]) -> None:
        """Keep only the sequences where ``keep`` is true and fix them (pooled splits)."""
        self._frozen = True
        self.starts = self.starts[keep]
        self._ends = self._ends[keep]

    def batch(
        self, idx: NDArray[np.int64]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.int64], NDArray[np.int64]]:
        """Arrays of the sequences ``idx``.

        Returns
        -------
        windows : (B, T, L, W) float32
        rr : (B, T, 7) float32
        labels : (B, T) int64
        future : (B, T, H) int64
            Label of beat ``t + h`` (-1 past the record end).
        """
        starts = self.starts[idx]
        pos = starts[:, None] + np.arange(self.seq_len)[None, :]  # (B, T)
        future = pos[:, :, None] + np.array(self.horizons)[None, None, :]  # (B, T, H)
        inside = future < self._ends[idx][:, None, None]
        fut_labels = np.where(inside, self.labels[np.minimum(future, len(self.labels) - 1)], -1)
        return self.windows[pos], self.rr[pos], self.labels[pos], fut_labels


# Internals -------------------------------------------------------------------


def _lead_order(signal: NDArray[np.float64], leads: tuple[str, ...]) -> NDArray[np.float64]:
    """Columns reordered so that MLII comes first (record 114 has it second)."""
    if "MLII" in leads and leads.index("MLII") != 0:
        i = leads.index("MLII")
        order = [i] + [j for j in range(len(leads)) if j != i]
        return signal[:, order]
    return signal
