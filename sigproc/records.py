"""ECG records and reference annotations, read through ``wfdb``.

This module is the one place that knows where the data lives, how the
MIT-BIH Arrhythmia Database is split for inter-patient evaluation, and how
its beat labels map onto the AAMI classes of ANSI/AAMI EC57.

The data directory is resolved in this order:

1. an explicit ``data_dir`` argument (the CLI's ``--data-dir``);
2. the ``ECG_DATA_DIR`` environment variable;
3. ``../shared/data`` next to the checkout;
4. the user cache (``$XDG_CACHE_HOME/cardiac-monitor/data``, by default
   ``~/.cache/cardiac-monitor/data``), which ``cardiac-monitor data fetch
   mitdb`` fills from PhysioNet.

Each database is a folder of that directory (``mitdb/``, ``nstdb/``).

References
----------
.. [1] Moody GB, Mark RG. The impact of the MIT-BIH Arrhythmia Database.
   IEEE Eng Med Biol 20(3):45-50, 2001.
.. [2] ANSI/AAMI EC57:2012, Testing and reporting performance results of
   cardiac rhythm and ST segment measurement algorithms.
.. [3] de Chazal P, O'Dwyer M, Reilly RB. Automatic classification of
   heartbeats using ECG morphology and heartbeat interval features.
   IEEE Trans Biomed Eng 51(7):1196-1206, 2004.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import wfdb
from numpy.typing import ArrayLike, NDArray

__all__ = [
    "AAMI_CLASSES",
    "AAMI_MAP",
    "BEAT_SYMBOLS",
    "DATA_ENV_VAR",
    "DS1",
    "DS2",
    "MITDB_RECORDS",
    "NSTDB_TEST_RECORDS",
    "PACED_RECORDS",
    "Annotations",
    "DataNotFoundError",
    "Record",
    "aami_class",
    "cache_dir",
    "candidate_data_dirs",
    "fetch_database",
    "load_annotations",
    "load_record",
    "resolve_database_dir",
]

#: Environment variable that points at the folder holding ``mitdb/`` etc.
DATA_ENV_VAR = "ECG_DATA_DIR"

#: The 48 records of the MIT-BIH Arrhythmia Database.
MITDB_RECORDS: tuple[str, ...] = (
    "100", "101", "102", "103", "104", "105", "106", "107", "108", "109",
    "111", "112", "113", "114", "115", "116", "117", "118", "119", "121",
    "122", "123", "124", "200", "201", "202", "203", "205", "207", "208",
    "209", "210", "212", "213", "214", "215", "217", "219", "220", "221",
    "222", "223", "228", "230", "231", "232", "233", "234",
)  # fmt: skip

#: Paced records, left out of classification results (EC57).
PACED_RECORDS: tuple[str, ...] = ("102", "104", "107", "217")

#: Inter-patient training set of de Chazal et al. 2004 [3].
DS1: tuple[str, ...] = (
    "101", "106", "108", "109", "112", "114", "115", "116", "118", "119", "122",
    "124", "201", "203", "205", "207", "208", "209", "215", "220", "223", "230",
)  # fmt: skip

#: Inter-patient test set of de Chazal et al. 2004 [3].
DS2: tuple[str, ...] = (
    "100", "103", "105", "111", "113", "117", "121", "123", "200", "202", "210",
    "212", "213", "214", "219", "221", "222", "228", "231", "232", "233", "234",
)  # fmt: skip

#: Noise-stress test records of the NSTDB present in the shared data.
NSTDB_TEST_RECORDS: tuple[str, ...] = ("118e24", "118e12", "118e00", "118e_6")

#: The five AAMI heartbeat classes, in label-index order.
AAMI_CLASSES: tuple[str, ...] = ("N", "S", "V", "F", "Q")

#: MIT-BIH beat symbol -> AAMI class (EC57 table).
AAMI_MAP: dict[str, str] = {
    **dict.fromkeys(("N", "L", "R", "e", "j"), "N"),
    **dict.fromkeys(("A", "a", "J", "S"), "S"),
    **dict.fromkeys(("V", "E"), "V"),
    "F": "F",
    **dict.fromkeys(("/", "f", "Q"), "Q"),
}

#: Annotation symbols that label a beat (QRS complex), as opposed to rhythm,
#: noise or comment annotations. ``!`` marks ventricular flutter waves and
#: ``?``/``B``/``n``/``r`` are rare beat labels; all are QRS reference events
#: for detection scoring even where they have no AAMI class.
BEAT_SYMBOLS: frozenset[str] = frozenset(
    ("N", "L", "R", "B", "A", "a", "J", "S", "V", "r", "F", "e", "j", "n", "E", "/", "f", "Q", "?", "!")
)


class DataNotFoundError(FileNotFoundError):
    """A record or database is not in any of the data directories searched."""


def aami_class(symbol: str) -> str | None:
    """Return the AAMI class (N, S, V, F, Q) of a MIT-BIH beat symbol.

    Parameters
    ----------
    symbol : str
        A WFDB annotation symbol such as ``"N"`` or ``"V"``.

    Returns
    -------
    str or None
        The AAMI class, or ``None`` when the symbol is not a classified beat
        (rhythm changes, noise markers, flutter waves ``!``).

    Examples
    --------
    >>> aami_class("L"), aami_class("A"), aami_class("+")
    ('N', 'S', None)
    """
    return AAMI_MAP.get(symbol)


@dataclass(frozen=True)
class Annotations:
    """Reference annotations of a record.

    Attributes
    ----------
    sample : ndarray of int64
        Sample index of each annotation.
    symbol : ndarray of str
        WFDB symbol of each annotation.
    aux : tuple of str
        Auxiliary note of each annotation (rhythm names such as ``"(AFIB"``).
    fs : float
        Sampling rate in Hz the sample indices refer to.
    """

    sample: NDArray[np.int64]
    symbol: NDArray[np.str_]
    aux: tuple[str, ...]
    fs: float

    def beats(self) -> Annotations:
        """Only the annotations that label a QRS complex (:data:`BEAT_SYMBOLS`)."""
        keep = np.isin(self.symbol, sorted(BEAT_SYMBOLS))
        return Annotations(
            self.sample[keep],
            self.symbol[keep],
            tuple(a for a, k in zip(self.aux, keep, strict=True) if k),
            self.fs,
        )

    def rhythms(self, samples: ArrayLike) -> NDArray[np.str_]:
        """The rhythm in force at each of ``samples``: the last rhythm note (``"(AFIB"``) before it.

        MIT-BIH marks a rhythm change with an auxiliary note starting ``(``
        on the first beat of the new rhythm; ``""`` before the first note.

        Examples
        --------
        >>> ann = Annotations(np.array([10, 20, 30]), np.array(["+", "N", "+"]), ("(N", "", "(AFIB"), 360.0)
        >>> ann.rhythms([5, 10, 25, 30, 99]).tolist()
        ['', '(N', '(N', '(AFIB', '(AFIB']
        """
        marks = [i for i, a in enumerate(self.aux) if a.startswith("(")]
        names = np.array(["", *(self.aux[i] for i in marks)])
        at = np.searchsorted(self.sample[marks], np.asarray(samples), side="right")
        return names[at]

    def aami(self) -> NDArray[np.str_]:
        """AAMI class of every annotation; ``""`` where it has none."""
        return np.array([AAMI_MAP.get(str(s), "") for s in self.symbol], dtype="<U1")

    def __len__(self) -> int:
        return int(self.sample.size)


@dataclass(frozen=True)
class Record:
    """An ECG record in physical units.

    Attributes
    ----------
    name : str
        Record name, e.g. ``"100"``.
    fs : float
        Sampling rate in Hz.
    signal : ndarray, shape (n_samples, n_leads)
        Samples in ``units`` (mV for MIT-BIH).
    leads : tuple of str
        Lead name of each column (``"MLII"``, ``"V1"``...).
    units : tuple of str
        Physical unit of each column.
    annotations : Annotations or None
        Reference annotations when the database provides them.
    comments : tuple of str
        Header comment lines (age, sex, medications).
    """

    name: str
    fs: float
    signal: NDArray[np.float64]
    leads: tuple[str, ...]
    units: tuple[str, ...]
    annotations: Annotations | None = None
    comments: tuple[str, ...] = field(default=())

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[0])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def lead(self, name: str) -> NDArray[np.float64]:
        """The samples of lead ``name``; raises ``ValueError`` if absent."""
        if name not in self.leads:
            raise ValueError(f"record {self.name} has no lead {name!r}; it has {list(self.leads)}")
        return self.signal[:, self.leads.index(name)]


def cache_dir() -> Path:
    """The user cache folder that ``cardiac-monitor data fetch`` fills."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cardiac-monitor" / "data"


def candidate_data_dirs(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The data directories searched, in order of precedence."""
    dirs: list[Path] = []
    if data_dir is not None:
        dirs.append(Path(data_dir))
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        dirs.append(Path(env))
    checkout = Path(__file__).resolve().parents[1]
    dirs.append(checkout.parent / "shared" / "data")
    dirs.append(cache_dir())
    return dirs


def resolve_database_dir(
    database: str = "mitdb",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    record: str | None = None,
) -> Path:
    """Find the folder of ``database`` (holding ``record`` when given).

    An explicit ``data_dir`` is authoritative: if it lacks the database the
    search stops there rather than silently reading data from elsewhere.

    Raises
    ------
    DataNotFoundError
        With a message naming the folders searched, ``ECG_DATA_DIR`` and the
        fetch command.
    """
    dirs = [Path(data_dir)] if data_dir is not None else candidate_data_dirs()
    for base in dirs:
        folder = base / database
        probe = folder / f"{record}.hea" if record is not None else folder
        if probe.exists():
            return folder
    what = f"record {record!r} of {database}" if record else f"database {database!r}"
    searched = ", ".join(str(d / database) for d in dirs)
    raise DataNotFoundError(
        f"{what} not found (searched: {searched}). Point {DATA_ENV_VAR} at the folder "
        f"that holds {database}/, pass --data-dir, or run "
        f"`cardiac-monitor data fetch {database}` on a machine that is online."
    )


def load_annotations(
    name: str,
    database: str = "mitdb",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    extension: str = "atr",
) -> Annotations:
    """Read the reference annotations of a record with :func:`wfdb.rdann`.

    Raises
    ------
    DataNotFoundError
        If the record or its annotation file cannot be found.
    """
    _check_record_name(name)
    folder = resolve_database_dir(database, data_dir, record=name)
    path = folder / f"{name}.{extension}"
    if not path.exists():
        raise DataNotFoundError(f"record {name!r} has no annotation file {path}")
    ann = wfdb.rdann(str(folder / name), extension)
    aux = tuple((a or "").rstrip("\x00") for a in (ann.aux_note or [""] * len(ann.sample)))
    return Annotations(
        sample=np.asarray(ann.sample, dtype=np.int64),
        symbol=np.asarray(ann.symbol, dtype=np.str_),
        aux=aux,
        fs=float(ann.fs) if ann.fs else float(wfdb.rdheader(str(folder / name)).fs),
    )


def load_record(
    name: str,
    database: str = "mitdb",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    channels: Sequence[int] | None = None,
    sampfrom: int = 0,
    sampto: int | None = None,
    annotations: bool = True,
) -> Record:
    """Read a WFDB record in physical units with :func:`wfdb.rdrecord`.

    Parameters
    ----------
    name : str
        Record name, e.g. ``"100"`` or ``"118e12"``.
    database : str
        Database folder under the data directory (``"mitdb"``, ``"nstdb"``).
    data_dir : path, optional
        Folder holding the database folders; see the module docstring for the
        search order when omitted.
    channels : sequence of int, optional
        Columns to read (default: all).
    sampfrom, sampto : int
        Sample range to read; annotations are restricted and shifted to it.
    annotations : bool
        Also read the ``atr`` reference annotations when present.

    Returns
    -------
    Record

    Raises
    ------
    ValueError
        For an empty name, a negative or inverted sample range, or a channel
        index the record does not have.
    DataNotFoundError
        If no data directory holds the record.

    Examples
    --------
    >>> rec = load_record("100", channels=[0], sampto=3600)  # doctest: +SKIP
    >>> rec.fs, rec.leads, rec.signal.shape  # doctest: +SKIP
    (360.0, ('MLII',), (3600, 1))
    """
    _check_record_name(name)
    if sampfrom < 0:
        raise ValueError(f"`sampfrom` must be >= 0, got {sampfrom}")
    if sampto is not None and sampto <= sampfrom:
        raise ValueError(f"`sampto` must be greater than `sampfrom` ({sampfrom}), got {sampto}")
    folder = resolve_database_dir(database, data_dir, record=name)
    header = wfdb.rdheader(str(folder / name))
    n_sig = int(header.n_sig)
    if channels is not None:
        bad = [c for c in channels if not 0 <= int(c) < n_sig]
        if bad:
            raise ValueError(f"record {name} has channels 0..{n_sig - 1}; `channels` asks for {bad}")
    sig_len = int(header.sig_len)
    if sampto is not None and sampto > sig_len:
        raise ValueError(f"`sampto` {sampto} is past the end of record {name} ({sig_len} samples)")
    rec = wfdb.rdrecord(
        str(folder / name),
        sampfrom=sampfrom,
        sampto=sampto,
        channels=list(channels) if channels is not None else None,
        physical=True,
    )
    signal = np.asarray(rec.p_signal, dtype=np.float64)
    ann: Annotations | None = None
    if annotations and (folder / f"{name}.atr").exists():
        full = load_annotations(name, database, folder.parent)
        stop = sampto if sampto is not None else sig_len
        keep = (full.sample >= sampfrom) & (full.sample < stop)
        ann = Annotations(
            full.sample[keep] - sampfrom,
            full.symbol[keep],
            tuple(a for a, k in zip(full.aux, keep, strict=True) if k),
            full.fs,
        )
    return Record(
        name=name,
        fs=float(rec.fs),
        signal=signal,
        leads=tuple(rec.sig_name),
        units=tuple(rec.units),
        annotations=ann,
        comments=tuple(rec.comments or ()),
    )


def fetch_database(
    database: str,
    dest: str | os.PathLike[str] | None = None,
    *,
    records: Iterable[str] | None = None,
    progress: Callable[[Iterable[str]], Iterable[str]] | None = None,
) -> Path:
    """Download a PhysioNet database with wfdb into ``dest`` (the user cache).

    Parameters
    ----------
    database : str
        PhysioNet database slug (``"mitdb"``, ``"nstdb"``).
    dest : path, optional
        Folder that will hold ``<database>/``; default :func:`cache_dir`.
    records : iterable of str, optional
        Records to fetch (default: the database's full record list).
    progress : callable, optional
        Wraps the record iterable, e.g. ``tqdm.tqdm``, to show progress.

    Returns
    -------
    Path
        The database folder.

    Raises
    ------
    ConnectionError
        When PhysioNet cannot be reached, with the offline alternative.
    """
    target = Path(dest) if dest is not None else cache_dir()
    folder = target / database
    try:
        names = list(records) if records is not None else list(wfdb.get_record_list(database))
    except Exception as exc:  # requests raises many types; report them as one
        raise ConnectionError(
            f"could not reach PhysioNet to list {database!r} ({exc}). Offline, copy the "
            f"database into a folder and set {DATA_ENV_VAR} to it."
        ) from exc
    folder.mkdir(parents=True, exist_ok=True)
    iterator: Iterable[str] = progress(names) if progress is not None else names
    for rec in iterator:
        try:
            wfdb.dl_database(database, str(folder), records=[rec], keep_subdirs=False)
        except Exception as exc:
            raise ConnectionError(f"download of {database}/{rec} failed: {exc}") from exc
    return folder


def _check_record_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"`name` must be a non-empty record name, got {name!r}")
    if "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"`name` must be a bare record name, not a path, got {name!r}")
