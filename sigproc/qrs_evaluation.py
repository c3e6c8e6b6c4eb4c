"""Evaluate R-peak detection on PhysioNet records, after ANSI/AAMI EC57.

:func:`evaluate_qrs` runs :func:`sigproc.peaks.detect_r_peaks` (and, on
request, two published detectors for comparison) over records of the MIT-BIH
Arrhythmia Database or the Noise Stress Test Database, scores every record
beat by beat with :func:`sigproc.scoring.match_beats` and pools the counts
into gross statistics. :func:`format_qrs_table` prints the result and
:func:`write_qrs_report` draws it. The CLI command ``cardiac-monitor evaluate
qrs`` is a thin wrapper around these three functions.

Protocol
--------
* Reference: the beat annotations of the ``atr`` file
  (:meth:`sigproc.records.Annotations.beats`), one channel of the record.
* Matching window 150 ms; episodes of ventricular flutter/fibrillation
  (``[`` ... ``]``, record 207 only) are left out of all counts, as in EC57
  and ``bxb`` (see :mod:`sigproc.scoring`).
* ``gross`` counts every beat; ``gross_after_5min`` leaves out the first
  ``skip_first_s`` seconds (300 s in EC57) of every record, which is the
  figure EC57 asks for.
* Peers run on the same channel with their defaults: NeuroKit2's
  ``ecg_peaks(ecg_clean(x))`` [2]_ and WFDB's ``xqrs_detect`` [3]_. They are
  scored like ours, so the comparison is like for like.

References
----------
.. [1] ANSI/AAMI EC57:2012, Testing and reporting performance results of
   cardiac rhythm and ST segment measurement algorithms.
.. [2] Makowski D et al. NeuroKit2: A Python toolbox for neurophysiological
   signal processing. Behav Res Methods 53:1689-1696, 2021.
.. [3] Xie C, McCullum L, Johnson A, Pollard T, Gow B, Moody B. Waveform
   Database Software Package (WFDB) for Python, version 4. PhysioNet, 2023.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sigproc.peaks import detect_r_peaks
from sigproc.records import MITDB_RECORDS, load_record
from sigproc.scoring import EC57_SKIP_S, MatchResult, flutter_intervals, gross_statistics, match_beats

__all__ = [
    "QRS_PEERS",
    "QRS_STAT_KEYS",
    "evaluate_qrs",
    "format_qrs_table",
    "peer_detector",
    "write_qrs_report",
]

#: Keys of every statistics block of the result, in display order.
QRS_STAT_KEYS: tuple[str, ...] = ("tp", "fn", "fp", "se", "ppv", "der", "mean_abs_error_ms")

#: Names of the peer detectors, in display order.
QRS_PEERS: tuple[str, ...] = ("neurokit2", "xqrs")

Detector = Callable[[NDArray[np.float64], float], NDArray[np.int64]]


def evaluate_qrs(
    records: Sequence[str] = MITDB_RECORDS,
    *,
    database: str = "mitdb",
    data_dir: str | os.PathLike[str] | None = None,
    channel: int = 0,
    peers: bool = False,
    skip_first_s: float = EC57_SKIP_S,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> dict[str, Any]:
    """Score our R-peak detector (and optionally its peers) on records.

    Parameters
    ----------
    records : sequence of str
        Record names, e.g. :data:`~sigproc.records.MITDB_RECORDS` or
        ``("118e24", "118e12", "118e00", "118e_6")``.
    database : str
        Database folder of the records (``"mitdb"`` or ``"nstdb"``).
    data_dir : path, optional
        Folder that holds the database folder; see :mod:`sigproc.records`.
    channel : int
        Signal column to analyse (0 is MLII in most MIT-BIH records).
    peers : bool
        Also score NeuroKit2's default pipeline and WFDB's XQRS. NeuroKit2 is
        a development dependency, imported only here.
    skip_first_s : float
        Learning period left out of ``gross_after_5min`` (EC57: 300 s).
    progress : callable, optional
        Wraps the record iterable, e.g. ``tqdm.tqdm``.

    Returns
    -------
    dict
        JSON-able, shaped ``{"gross": S, "gross_after_5min": S, "records":
        {name: S}, "peers": {"neurokit2": {"gross": S, "records": {...}},
        "xqrs": {...}}}`` where every ``S`` has the keys :data:`QRS_STAT_KEYS`
        (percentages for ``se``, ``ppv``, ``der``; ``mean_abs_error_ms`` in
        ms; ``None`` where a ratio is undefined). ``peers`` is empty unless
        asked for.

    Raises
    ------
    ValueError
        If ``records`` is empty, ``channel`` is not a column of a record, or
        a record has no reference annotations.
    sigproc.records.DataNotFoundError
        If a record cannot be found.
    ImportError
        If ``peers`` is true and NeuroKit2 is not installed.

    Examples
    --------
    >>> result = evaluate_qrs(["100"])  # doctest: +SKIP
    >>> result["records"]["100"]["se"]  # doctest: +SKIP
    100.0
    """
    names = [str(r) for r in records]
    if not names:
        raise ValueError("`records` must name at least one record")
    if isinstance(channel, bool) or not isinstance(channel, int | np.integer) or channel < 0:
        raise ValueError(f"`channel` must be a non-negative integer, got {channel!r}")
    detectors: dict[str, Detector] = {"ours": detect_r_peaks}
    if peers:
        detectors.update({name: peer_detector(name) for name in QRS_PEERS})
    full: dict[str, list[MatchResult]] = {name: [] for name in detectors}
    late: list[MatchResult] = []
    per_record: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in detectors}
    iterator: Iterable[str] = progress(names) if progress is not None else names
    for rec_name in iterator:
        rec = load_record(rec_name, database, data_dir, channels=[int(channel)])
        if rec.annotations is None:
            raise ValueError(f"record {rec_name!r} of {database} has no reference annotations")
        reference = rec.annotations.beats().sample
        exclude = flutter_intervals(rec.annotations)
        x = rec.signal[:, 0]
        for name, detect in detectors.items():
            found = detect(x, rec.fs)
            result = match_beats(reference, found, rec.fs, exclude=exclude)
            full[name].append(result)
            per_record[name][rec_name] = _jsonable(result.stats())
            if name == "ours":
                late.append(match_beats(reference, found, rec.fs, exclude=exclude, skip_first_s=skip_first_s))
    return {
        "gross": _jsonable(gross_statistics(full["ours"])),
        "gross_after_5min": _jsonable(gross_statistics(late)),
        "records": per_record["ours"],
        "peers": {
            name: {"gross": _jsonable(gross_statistics(full[name])), "records": per_record[name]}
            for name in detectors
            if name != "ours"
        },
    }


def format_qrs_table(result: dict[str, Any]) -> str:
    """Render an :func:`evaluate_qrs` result as a plain-text table.

    One row per record with our TP, FN, FP, Se, +P, DER and mean absolute
    error, followed by the peers' Se and +P when present, then the gross rows.

    Parameters
    ----------
    result : dict
        The value returned by :func:`evaluate_qrs`.

    Returns
    -------
    str
        The table, lines separated by ``\\n``, without a trailing newline.
    """
    peers = [p for p in QRS_PEERS if p in result.get("peers", {})]
    head = f"{'record':>10} {'TP':>7} {'FN':>5} {'FP':>5} {'Se%':>7} {'+P%':>7} {'DER%':>6} {'MAE ms':>6}"
    head += "".join(f" {p[:9] + ' Se':>12} {p[:9] + ' +P':>12}" for p in peers)
    lines = [head, "-" * len(head)]

    def row(label: str, ours: dict[str, Any], others: list[dict[str, Any] | None]) -> str:
        text = (
            f"{label:>10} {ours['tp']:>7} {ours['fn']:>5} {ours['fp']:>5} {_num(ours['se'], 7)} "
            f"{_num(ours['ppv'], 7)} {_num(ours['der'], 6)} {_num(ours['mean_abs_error_ms'], 6, 1)}"
        )
        for other in others:
            se = other["se"] if other else None
            ppv = other["ppv"] if other else None
            text += f" {_num(se, 12)} {_num(ppv, 12)}"
        return text

    for name, stats in result["records"].items():
        lines.append(row(name, stats, [result["peers"][p]["records"].get(name) for p in peers]))
    lines.append("-" * len(head))
    lines.append(row("gross", result["gross"], [result["peers"][p]["gross"] for p in peers]))
    lines.append(row("after 5min", result["gross_after_5min"], [None for _ in peers]))
    return "\n".join(lines)


def write_qrs_report(result: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Draw per-record Se and +P of ours and the peers into a PNG file.

    Parameters
    ----------
    result : dict
        The value returned by :func:`evaluate_qrs`.
    path : path
        Output file; its folder must exist.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = list(result["records"])
    series = {"ours": result["records"]}
    series.update({p: result["peers"][p]["records"] for p in QRS_PEERS if p in result.get("peers", {})})
    fig = Figure(figsize=(min(16.0, max(8.0, 0.12 * len(names) * len(series))), 6.0), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 1, sharex=True)
    positions = np.arange(len(names))
    width = 0.8 / len(series)
    for ax, key, label in zip(axes, ("se", "ppv"), ("Se (%)", "+P (%)"), strict=True):
        for k, (who, stats) in enumerate(series.items()):
            values = [_or_nan(stats.get(n, {}).get(key)) for n in names]
            gross = result["gross"] if who == "ours" else result["peers"][who]["gross"]
            ax.bar(
                positions + (k - (len(series) - 1) / 2) * width,
                values,
                width,
                label=f"{who} (gross {_num(gross[key], 0)})",
            )
        ax.set_ylabel(label)
        ax.set_ylim(90.0, 100.5)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(loc="lower left", fontsize="small")
    axes[0].set_title("QRS detection per record (EC57 beat-by-beat, 150 ms window)")
    axes[1].set_xticks(positions, names, rotation=90, fontsize="small")
    fig.savefig(os.fspath(path), dpi=100)


def peer_detector(name: str) -> Detector:
    """A published R-peak detector, run with its defaults, by name.

    Parameters
    ----------
    name : {"neurokit2", "xqrs"}
        ``"neurokit2"``: ``nk.ecg_peaks(nk.ecg_clean(x, sampling_rate=fs),
        sampling_rate=fs)`` [2]_, imported lazily (a development
        dependency). ``"xqrs"``: ``wfdb.processing.xqrs_detect`` [3]_.

    Returns
    -------
    callable
        ``detect(x, fs) -> ndarray of int64`` for a 1-D signal in mV.

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    ImportError
        If NeuroKit2 is asked for and not installed.
    """
    if name == "neurokit2":
        import neurokit2 as nk

        def neurokit2(x: NDArray[np.float64], fs: float) -> NDArray[np.int64]:
            cleaned = nk.ecg_clean(x, sampling_rate=fs)
            _, info = nk.ecg_peaks(cleaned, sampling_rate=fs)
            return np.asarray(info["ECG_R_Peaks"], dtype=np.int64)

        return neurokit2
    if name == "xqrs":
        import wfdb.processing

        def xqrs(x: NDArray[np.float64], fs: float) -> NDArray[np.int64]:
            return np.asarray(wfdb.processing.xqrs_detect(x, fs, verbose=False), dtype=np.int64)

        return xqrs
    raise ValueError(f"`name` must be one of {', '.join(repr(p) for p in QRS_PEERS)}, got {name!r}")


#: The names the ``evaluate qrs`` CLI was specified with. They stay out of
#: ``__all__`` because :mod:`sigproc.denoise_evaluation` exports a
#: ``format_table`` of its own and the package re-exports both modules.
format_table = format_qrs_table
write_report = write_qrs_report


# Internals -------------------------------------------------------------------


def _jsonable(stats: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in QRS_STAT_KEYS:
        value = stats[key]
        if isinstance(value, float):
            out[key] = None if math.isnan(value) else round(value, 4)
        else:
            out[key] = int(value)
    return out


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def _num(value: float | None, width: int, digits: int = 2) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}.{digits}f}"
