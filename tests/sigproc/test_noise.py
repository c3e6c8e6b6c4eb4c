"""NSTDB noise at the NSTDB's own SNR: scaling, and mixing into every lead."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sigproc.noise import nstdb_noise, scale_noise
from sigproc.records import load_record


class TestScaleNoise:
    def test_basic(self) -> None:
        rng = np.random.default_rng(1)
        x, noise = np.sin(np.arange(7200) / 30), rng.standard_normal(7200) + 3.0
        scaled = scale_noise(x, noise, 12.0)
        assert abs(scaled.mean()) < 1e-12
        assert 10 * np.log10(x.var() / scaled.var()) == pytest.approx(12.0)

    def test_edge_cases(self) -> None:
        """With beats the signal power is pp**2 / 8 of the QRS complexes."""
        x = np.zeros(3600)
        beats = np.arange(180, 3600, 360)
        x[beats] = 2.0  # QRS of 2 mV peak-to-peak
        noise = np.random.default_rng(2).standard_normal(3600)
        scaled = scale_noise(x, noise, 0.0, beats=beats, fs=360.0)
        assert np.mean(scaled**2) == pytest.approx(2.0**2 / 8)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="one length"):
            scale_noise(np.zeros(10), np.ones(9), 6.0)
        with pytest.raises(ValueError, match="constant"):
            scale_noise(np.arange(10.0), np.ones(10), 6.0)


@pytest.mark.data
class TestNSTDBNoise:
    def test_basic(self, data_dir: Path) -> None:
        """Each lead its own noise channel from one offset, at the SNR of its own QRS amplitude."""
        rec = load_record("100", "mitdb", data_dir, sampto=3600 * 2)
        beats = rec.annotations.beats().sample
        noise = nstdb_noise("ma", rec.signal, beats, rec.fs, 6.0, data_dir, offset=1000)
        assert noise.shape == rec.signal.shape
        raw = load_record("ma", "nstdb", data_dir, annotations=False).signal
        for lead in range(2):
            stretch = raw[1000 : 1000 + 7200, lead]
            want = scale_noise(rec.signal[:, lead], stretch, 6.0, beats=beats, fs=rec.fs)
            np.testing.assert_allclose(noise[:, lead], want)
        # looped past the end of the noise record
        late = nstdb_noise("ma", rec.signal, beats, rec.fs, 6.0, data_dir, offset=len(raw) - 100)
        tail = raw[np.arange(len(raw) - 100, len(raw) - 100 + 7200) % len(raw), 0]
        assert np.corrcoef(late[:, 0], tail)[0, 1] == pytest.approx(1.0)

    def test_exceptions(self, data_dir: Path) -> None:
        signal = np.zeros((100, 1))
        with pytest.raises(ValueError, match="`noise` must be one of ma, bw, em, got 'hum'"):
            nstdb_noise("hum", signal, [], 360.0, 6.0, data_dir)
        with pytest.raises(ValueError, match="NSTDB ma is sampled at 360 Hz, the record at 250 Hz"):
            nstdb_noise("ma", signal, [], 250.0, 6.0, data_dir)
