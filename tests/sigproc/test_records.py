"""Records, annotations, the AAMI mapping and data-directory resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sigproc.records import (
    AAMI_MAP,
    DS1,
    DS2,
    MITDB_RECORDS,
    PACED_RECORDS,
    DataNotFoundError,
    aami_class,
    candidate_data_dirs,
    load_annotations,
    load_record,
    resolve_database_dir,
)


class TestConstants:
    def test_basic(self) -> None:
        assert len(MITDB_RECORDS) == 48
        assert len(DS1) == len(DS2) == 22
        assert not set(DS1) & set(DS2)
        assert set(DS1) | set(DS2) | set(PACED_RECORDS) == set(MITDB_RECORDS)

    def test_aami_mapping(self) -> None:
        expected = {"N": "NLRej", "S": "AaJS", "V": "VE", "F": "F", "Q": "/fQ"}
        for cls, symbols in expected.items():
            for s in symbols:
                assert aami_class(s) == cls
        assert len(AAMI_MAP) == sum(len(v) for v in expected.values())

    def test_edge_cases(self) -> None:
        for non_beat in ("+", "~", '"', "!", "|", "x"):
            assert aami_class(non_beat) is None


class TestResolve:
    def test_explicit_dir_wins(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp_path / "mitdb").mkdir()
        (tmp_path / "mitdb" / "100.hea").write_text("100 1 360 10\n")
        monkeypatch.setenv("ECG_DATA_DIR", "/nonexistent")
        assert resolve_database_dir("mitdb", tmp_path, record="100") == tmp_path / "mitdb"

    def test_env_var_order(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ECG_DATA_DIR", str(tmp_path))
        dirs = candidate_data_dirs()
        assert dirs[0] == tmp_path
        assert dirs[-1].parts[-2:] == ("cardiac-monitor", "data")
        assert candidate_data_dirs("/x")[0] == Path("/x")

    def test_exceptions(self, tmp_path: Path) -> None:
        with pytest.raises(DataNotFoundError, match=r"ECG_DATA_DIR.*cardiac-monitor data fetch mitdb"):
            resolve_database_dir("mitdb", tmp_path, record="100")


@pytest.mark.usefixtures("mitdb_dir")
class TestLoadRecord:
    def test_basic(self, data_dir: Path) -> None:
        rec = load_record("100", data_dir=data_dir, sampto=3600)
        assert rec.fs == 360.0
        assert rec.leads == ("MLII", "V5")
        assert rec.units == ("mV", "mV")
        assert rec.signal.shape == (3600, 2)
        assert rec.annotations is not None
        beats = rec.annotations.beats()
        assert 10 <= len(beats) <= 15
        assert set(beats.aami()) <= {"N", "S", "V", "F", "Q"}
        # The header says the first sample of MLII is 995 adu: (995 - 1024) / 200 mV.
        assert rec.signal[0, 0] == pytest.approx((995 - 1024) / 200)

    def test_full_annotations(self, data_dir: Path) -> None:
        ann = load_annotations("100", data_dir=data_dir)
        counts = dict(zip(*np.unique(ann.symbol, return_counts=True), strict=True))
        assert counts["N"] == 2239
        assert counts["A"] == 33
        assert counts["V"] == 1
        assert len(ann.beats()) == 2273

    def test_edge_cases(self, data_dir: Path) -> None:
        rec = load_record("114", data_dir=data_dir, channels=[1], sampfrom=1000, sampto=2000)
        assert rec.leads == ("MLII",)  # record 114 has its leads swapped
        assert rec.signal.shape == (1000, 1)
        assert rec.annotations is not None
        assert np.all((rec.annotations.sample >= 0) & (rec.annotations.sample < 1000))
        assert rec.lead("MLII").shape == (1000,)

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(DataNotFoundError, match="record '999'"):
            load_record("999", data_dir=data_dir)
        with pytest.raises(ValueError, match="`name` must be a non-empty"):
            load_record("", data_dir=data_dir)
        with pytest.raises(ValueError, match="bare record name"):
            load_record("../mitdb/100", data_dir=data_dir)
        with pytest.raises(ValueError, match="`channels` asks for"):
            load_record("100", data_dir=data_dir, channels=[5])
        with pytest.raises(ValueError, match="`sampto` must be greater"):
            load_record("100", data_dir=data_dir, sampfrom=10, sampto=5)
        with pytest.raises(ValueError, match="past the end"):
            load_record("100", data_dir=data_dir, sampto=10**9)
        rec = load_record("100", data_dir=data_dir, sampto=100)
        with pytest.raises(ValueError, match="has no lead 'V1'"):
            rec.lead("V1")
