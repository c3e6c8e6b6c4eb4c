"""Tests of sigproc.denoise_evaluation on a little real data: numbers are computed."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from sigproc.denoise import denoise
from sigproc.denoise_evaluation import (
    FRONT_END,
    MIXTURE_RECORDS,
    TUNING_RECORDS,
    evaluate_denoise,
    format_denoise_table,
    write_strip_plot,
)
from sigproc.filters import bandpass
from sigproc.records import DS1, DS2, load_record

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def small(data_dir: Path) -> dict:
    return evaluate_denoise(
        data_dir=data_dir,
        records=["100"],
        methods=["bandpass", "emd"],
        segment_s=20.0,
        nstdb_records=["118e12"],
        nstdb_seconds=60.0,
    )


class TestEvaluateDenoise:
    def test_basic(self, small: dict) -> None:
        for key in ("snr_improvement_db", "rmse", "prd"):
            assert set(small[key]) == {"bandpass", "emd"}
            for by_noise in small[key].values():
                assert set(by_noise) == {"bw", "ma"}
                for by_snr in by_noise.values():
                    assert set(by_snr) == {"0", "6", "12"}
                    assert all(math.isfinite(v) for v in by_snr.values())
        assert set(small["realtime_factor"]) == {"bandpass", "emd"}
        assert small["realtime_factor"]["emd"] > 0
        assert set(small["qrs_nstdb"]) == {"118e12"}
        assert set(small["qrs_nstdb"]["118e12"]) == {"se", "ppv"}
        assert small["qrs_nstdb_front_end"] == "+".join(FRONT_END)
        json.dumps(small)  # JSON-able

    def test_numbers_are_computed(self, small: dict, data_dir: Path) -> None:
        # Recompute one cell by hand: band-pass, ma noise, SNR 6 dB, record 100.
        clean = load_record("100", data_dir=data_dir, channels=[0], annotations=False).signal[:, 0]
        fs = 360.0
        seg = clean[round(60 * fs) : round(80 * fs)]
        ref = bandpass(seg, fs)
        ma = load_record("ma", "nstdb", data_dir, channels=[0], annotations=False).signal[:, 0]
        start = round(37.0 * fs) % (len(ma) - len(ref))
        n = ma[start : start + len(ref)] - ma[start : start + len(ref)].mean()
        n *= np.sqrt(np.sum(ref**2) / np.sum(n**2) / 10 ** (6 / 10))
        y = denoise(seg + n, fs, "bandpass")
        snr_out = 10 * np.log10(np.sum(ref**2) / np.sum((y - ref) ** 2))
        assert small["snr_improvement_db"]["bandpass"]["ma"]["6"] == pytest.approx(snr_out - 6, abs=1e-9)
        # A linear filter's improvement does not depend on the input SNR.
        by_snr = small["snr_improvement_db"]["bandpass"]["ma"]
        assert by_snr["0"] == pytest.approx(by_snr["12"], abs=1e-6)

    def test_protocol(self, small: dict) -> None:
        assert small["protocol"]["records"] == ["100"]
        assert set(MIXTURE_RECORDS) <= set(DS2)
        assert set(TUNING_RECORDS) <= set(DS1)
        assert not set(MIXTURE_RECORDS) & set(TUNING_RECORDS)
        text = format_denoise_table(small)
        assert "emd" in text
        assert "118e12" in text

    def test_strip_plot(self, data_dir: Path, tmp_path: Path) -> None:
        out = tmp_path / "strip.png"
        write_strip_plot(out, data_dir=data_dir)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    def test_exceptions(self, data_dir: Path) -> None:
        with pytest.raises(ValueError, match="`records` must name"):
            evaluate_denoise(data_dir=data_dir, records=[])
        with pytest.raises(ValueError, match="`method` must be one of"):
            evaluate_denoise(data_dir=data_dir, methods=["ica"])
        with pytest.raises(ValueError, match="`segment_s`"):
            evaluate_denoise(data_dir=data_dir, records=["100"], segment_s=-1.0)
