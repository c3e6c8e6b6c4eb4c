"""Signal processing for ECG: records, filters, normalisation, R peaks, beats.

Depends on numpy, scipy, wfdb, PyWavelets and PyEMD only; no framework is
imported here (matplotlib only lazily, inside report functions).
"""

from sigproc._checks import SignalWarning
from sigproc.beats import RR_FEATURE_NAMES, BeatWindows, StreamingRRFeatures, beat_windows, rr_features
from sigproc.filters import FilterSpec, StreamingFilter, bandpass, design_sos, notch, remove_baseline
from sigproc.normalize import NORMALIZE_METHODS, normalize
from sigproc.peaks import StreamingPeakDetector, detect_r_peaks
from sigproc.qrs_evaluation import (
    QRS_PEERS,
    QRS_STAT_KEYS,
    evaluate_qrs,
    format_qrs_table,
    peer_detector,
    write_qrs_report,
)
from sigproc.records import (
    AAMI_CLASSES,
    AAMI_MAP,
    BEAT_SYMBOLS,
    DATA_ENV_VAR,
    DS1,
    DS2,
    MITDB_RECORDS,
    NSTDB_TEST_RECORDS,
    PACED_RECORDS,
    Annotations,
    DataNotFoundError,
    Record,
    aami_class,
    cache_dir,
    candidate_data_dirs,
    fetch_database,
    load_annotations,
    load_record,
    resolve_database_dir,
)
from sigproc.scoring import (
    EC57_SKIP_S,
    EC57_WINDOW_S,
    MatchResult,
    flutter_intervals,
    gross_statistics,
    match_beats,
)
from sigproc.synthetic import SyntheticECG, synthetic_ecg

__all__ = [
    "AAMI_CLASSES",
    "AAMI_MAP",
    "BEAT_SYMBOLS",
    "DATA_ENV_VAR",
    "DS1",
    "DS2",
    "EC57_SKIP_S",
    "EC57_WINDOW_S",
    "MITDB_RECORDS",
    "NORMALIZE_METHODS",
    "NSTDB_TEST_RECORDS",
    "PACED_RECORDS",
    "QRS_PEERS",
    "QRS_STAT_KEYS",
    "RR_FEATURE_NAMES",
    "Annotations",
    "BeatWindows",
    "DataNotFoundError",
    "FilterSpec",
    "MatchResult",
    "Record",
    "SignalWarning",
    "StreamingFilter",
    "StreamingPeakDetector",
    "StreamingRRFeatures",
    "SyntheticECG",
    "aami_class",
    "bandpass",
    "beat_windows",
    "cache_dir",
    "candidate_data_dirs",
    "design_sos",
    "detect_r_peaks",
    "evaluate_qrs",
    "fetch_database",
    "flutter_intervals",
    "format_qrs_table",
    "gross_statistics",
    "load_annotations",
    "load_record",
    "match_beats",
    "normalize",
    "notch",
    "peer_detector",
    "remove_baseline",
    "resolve_database_dir",
    "rr_features",
    "synthetic_ecg",
    "write_qrs_report",
]
