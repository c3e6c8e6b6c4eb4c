"""Tests of sigproc.qrs_evaluation on synthetic WFDB records and real data."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pytest
import wfdb

from sigproc import qrs_evaluation
from sigproc.qrs_evaluation import (
    QRS_STAT_KEYS,
    evaluate_qrs,
    format_qrs_table,
    peer_detector,
    write_qrs_report,
)
from sigproc.records import DataNotFoundError
from sigproc.synthetic import synthetic_ecg


def _write_record(folder: Path, name: str, seed: int, *, annotate: bool = True) -> None:
    """A 60 s two-lead synthetic record with its beats annotated (one as flutter)."""
    ecg = synthetic_ecg(60.0, 360.0, n_leads=2, noise_mv=0.02, pvc_every=6, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # wfdb 4.3 writes through a pandas call that pandas 3 deprecates; not ours to fix.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        _write_wfdb(folder, name, ecg.signal, ecg.r_peaks.tolist(), ecg.labels.tolist(), annotate)


def _write_wfdb(
    folder: Path, name: str, signal: np.ndarray, samples: list[int], symbols: list[str], annotate: bool
) -> None:
    wfdb.wrsamp(
        name,
        fs=360,
        units=["mV", "mV"],
        sig_name=["MLII", "V1"],
        p_signal=signal,
        fmt=["16", "16"],
        write_dir=str(folder),
    )
    if annotate:
        # A short "flutter" episode around the 10th beat: excluded from scoring.
        samples[10:10] = [samples[9] + 20]
        symbols[10:10] = ["["]
        samples[12:12] = [samples[11] + 20]
        symbols[12:12] = ["]"]
        symbols[11] = "!"
        wfdb.wrann(name, "atr", np.asarray(samples), symbol=symbols, write_dir=str(folder))


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    _write_record(root / "mitdb", "s1", seed=1)
    _write_record(root / "mitdb", "s2", seed=2)
    _write_record(root / "mitdb", "noatr", seed=3, annotate=False)
    _write_record(root / "nstdb", "s1e00", seed=4)
    return root


def _check_stats(stats: dict[str, object]) -> None:
    assert list(stats) == list(QRS_STAT_KEYS)


class TestEvaluateQrs:
    def test_basic(self, synthetic_dir: Path) -> None:
        result = evaluate_qrs(["s1", "s2"], data_dir=synthetic_dir, skip_first_s=20.0)
        assert list(result) == ["gross", "gross_after_5min", "records", "peers"]
        assert list(result["records"]) == ["s1", "s2"]
        for stats in [result["gross"], result["gross_after_5min"], *result["records"].values()]:
            _check_stats(stats)
        assert result["peers"] == {}
        gross = result["gross"]
        assert (gross["fn"], gross["fp"]) == (0, 0)
        assert gross["se"] == gross["ppv"] == 100.0
        assert gross["der"] == 0.0
        assert gross["mean_abs_error_ms"] <= 10.0
        # The beat inside the flutter episode is not counted; nor are the first 20 s.
        n_beats = sum(len(synthetic_ecg(60.0, 360.0, n_leads=2, pvc_every=6, seed=s).r_peaks) for s in (1, 2))
        assert gross["tp"] == n_beats - 2
        assert result["gross_after_5min"]["tp"] < gross["tp"]
        json.dumps(result, allow_nan=False)

    def test_channel_and_database(self, synthetic_dir: Path) -> None:
        result = evaluate_qrs(["s1e00"], database="nstdb", data_dir=synthetic_dir, channel=1)
        assert result["records"]["s1e00"]["se"] == 100.0
        seen: list[str] = []

        def progress(names: Iterable[str]) -> list[str]:
            seen.extend(names)
            return seen

        evaluate_qrs(["s2"], data_dir=synthetic_dir, progress=progress)
        assert seen == ["s2"]

    def test_peers(self, synthetic_dir: Path) -> None:
        pytest.importorskip("neurokit2")
        result = evaluate_qrs(["s1"], data_dir=synthetic_dir, peers=True)
        assert list(result["peers"]) == ["neurokit2", "xqrs"]
        for peer in result["peers"].values():
            assert list(peer) == ["gross", "records"]
            _check_stats(peer["gross"])
            assert peer["gross"]["se"] > 50.0  # wiring, not the peers' quality
        json.dumps(result, allow_nan=False)

    def test_edge_cases(self, synthetic_dir: Path) -> None:
        result = evaluate_qrs(("s1",), data_dir=synthetic_dir, skip_first_s=3600.0)
        after = result["gross_after_5min"]
        assert after["tp"] == after["fn"] == after["fp"] == 0
        assert after["se"] is None
        assert after["mean_abs_error_ms"] is None

    @pytest.mark.parametrize(
        ("records", "kwargs", "error", "match"),
        [
            ([], {}, ValueError, "`records`"),
            (["s1"], {"channel": -1}, ValueError, "`channel`"),
            (["s1"], {"channel": 5}, ValueError, "channels"),
            (["noatr"], {}, ValueError, "no reference annotations"),
            (["missing"], {}, DataNotFoundError, "missing"),
        ],
    )
    def test_exceptions(
        self, synthetic_dir: Path, records: list[str], kwargs: dict[str, int], error: type, match: str
    ) -> None:
        with pytest.raises(error, match=match):
            evaluate_qrs(records, data_dir=synthetic_dir, **kwargs)  # type: ignore[arg-type]

    @pytest.mark.data
    def test_mitdb_and_nstdb(self, data_dir: Path, nstdb_dir: Path) -> None:
        result = evaluate_qrs(["100"], data_dir=data_dir)
        assert result["records"]["100"]["se"] >= 99.5
        assert result["records"]["100"]["ppv"] >= 99.5
        noisy = evaluate_qrs(["118e24"], database="nstdb", data_dir=nstdb_dir.parent)
        assert noisy["gross"]["se"] >= 99.0


class TestPeerDetector:
    def test_basic(self) -> None:
        ecg = synthetic_ecg(20.0, 360.0, seed=5)
        found = peer_detector("xqrs")(ecg.signal, ecg.fs)
        assert found.dtype == np.int64
        assert abs(len(found) - len(ecg.r_peaks)) <= 2

    def test_edge_cases(self) -> None:
        pytest.importorskip("neurokit2")
        ecg = synthetic_ecg(20.0, 360.0, seed=6)
        found = peer_detector("neurokit2")(ecg.signal, ecg.fs)
        assert np.abs(found[:, None] - ecg.r_peaks[None, :]).min(axis=1).max() <= 5

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="'neurokit2', 'xqrs'"):
            peer_detector("pan-tompkins")


class TestFormatQrsTable:
    def test_basic(self, synthetic_dir: Path) -> None:
        result = evaluate_qrs(["s1", "s2"], data_dir=synthetic_dir)
        table = format_qrs_table(result)
        lines = table.splitlines()
        assert lines[0].split()[:4] == ["record", "TP", "FN", "FP"]
        assert [ln.split()[0] for ln in lines[2:4]] == ["s1", "s2"]
        assert lines[-2].startswith(" " * 5 + "gross")
        assert "100.00" in lines[-2]

    def test_edge_cases(self) -> None:
        stats = dict.fromkeys(QRS_STAT_KEYS, 0) | {
            "se": None,
            "ppv": None,
            "der": None,
            "mean_abs_error_ms": None,
        }
        peer = {"gross": stats, "records": {}}
        result = {"gross": stats, "gross_after_5min": stats, "records": {"x": stats}, "peers": {"xqrs": peer}}
        table = format_qrs_table(result)
        assert "xqrs Se" in table
        assert table.splitlines()[2].split()[-1] == "-"

    def test_exceptions(self) -> None:
        with pytest.raises(KeyError, match="records"):
            format_qrs_table({})

    def test_cli_names(self) -> None:
        assert qrs_evaluation.format_table is format_qrs_table
        assert qrs_evaluation.write_report is write_qrs_report


class TestWriteQrsReport:
    def test_basic(self, synthetic_dir: Path, tmp_path: Path) -> None:
        result = evaluate_qrs(["s1", "s2"], data_dir=synthetic_dir)
        out = tmp_path / "qrs.png"
        write_qrs_report(result, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_edge_cases(self, tmp_path: Path) -> None:
        stats = dict.fromkeys(QRS_STAT_KEYS, 0) | {
            "se": None,
            "ppv": None,
            "der": None,
            "mean_abs_error_ms": None,
        }
        result = {"gross": stats, "gross_after_5min": stats, "records": {"x": stats}, "peers": {}}
        write_qrs_report(result, tmp_path / "empty.png")
        assert (tmp_path / "empty.png").stat().st_size > 0

    def test_exceptions(self, synthetic_dir: Path, tmp_path: Path) -> None:
        result = evaluate_qrs(["s1"], data_dir=synthetic_dir)
        with pytest.raises(FileNotFoundError):
            write_qrs_report(result, tmp_path / "no" / "such" / "dir.png")
