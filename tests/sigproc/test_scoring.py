"""Tests of sigproc.scoring: EC57 beat-by-beat matching and gross statistics."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from sigproc.records import Annotations, load_annotations
from sigproc.scoring import EC57_SKIP_S, flutter_intervals, gross_statistics, match_beats

FS = 360.0  # the EC57 window of 150 ms is 54 samples here


def _annotations(samples: list[int], symbols: list[str]) -> Annotations:
    return Annotations(np.asarray(samples, dtype=np.int64), np.asarray(symbols), ("",) * len(samples), FS)


class TestMatchBeats:
    def test_basic(self) -> None:
        r = match_beats([100, 400, 700, 1000], [101, 398, 750, 1500], FS)
        assert (r.tp, r.fn, r.fp) == (3, 1, 1)
        assert r.pairs.tolist() == [[0, 0], [1, 1], [2, 2]]
        assert r.errors.tolist() == [1, -2, 50]
        assert r.missed.tolist() == [1000]
        assert r.false.tolist() == [1500]

    def test_window_is_inclusive(self) -> None:
        assert match_beats([1000], [1054], FS).tp == 1  # exactly 150 ms
        assert match_beats([1000], [1055], FS).tp == 0
        assert match_beats([1000], [1100], FS, window_s=0.3).tp == 1

    def test_one_to_one_closest_first(self) -> None:
        # Two detections near one beat: one matches, the other is a false positive.
        r = match_beats([1000], [990, 1003], FS)
        assert (r.tp, r.fp) == (1, 1)
        assert r.false.tolist() == [990]
        # A detection between two beats goes to the closer one.
        r = match_beats([1000, 1090], [1080], FS)
        assert r.pairs.tolist() == [[1, 0]]
        assert r.missed.tolist() == [1000]

    def test_pairs_index_the_inputs_unsorted(self) -> None:
        r = match_beats([700, 100, 400], [405, 98], FS)
        assert sorted(r.pairs.tolist()) == [[1, 1], [2, 0]]
        assert r.missed.tolist() == [700]

    def test_skip_first(self) -> None:
        ref = [100, 1000, 2000, 3000]
        det = [1000, 1805, 3001]
        r = match_beats(ref, det, FS, skip_first_s=1000 / FS)
        assert (r.tp, r.fn, r.fp) == (2, 1, 1)
        # A pair straddling the boundary is matched, then counted by its reference beat.
        r = match_beats([1001], [990], FS, skip_first_s=1000 / FS)
        assert (r.tp, r.fn, r.fp) == (1, 0, 0)
        r = match_beats([999], [1010], FS, skip_first_s=1000 / FS)
        assert (r.tp, r.fn, r.fp) == (0, 0, 0)

    def test_exclude(self) -> None:
        ref = [100, 500, 600, 700, 2000]
        det = [100, 550, 650, 2500]
        r = match_beats(ref, det, FS, exclude=[[450, 800]])
        assert (r.tp, r.fn, r.fp) == (1, 1, 1)
        assert r.missed.tolist() == [2000]

    def test_edge_cases(self) -> None:
        r = match_beats([], [], FS)
        assert (r.tp, r.fn, r.fp) == (0, 0, 0)
        assert r.pairs.shape == (0, 2)
        r = match_beats([10, 20], [], FS)
        assert (r.tp, r.fn, r.fp) == (0, 2, 0)
        r = match_beats([], np.array([5.0, 9.0]), FS)
        assert (r.tp, r.fn, r.fp) == (0, 0, 2)
        assert match_beats([5], [5], FS, exclude=np.empty((0, 2))).tp == 1

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"reference": [[1, 2]]}, "`reference` must be 1-D"),
            ({"detected": [1.5]}, "`detected` must hold integer"),
            ({"fs": 0.0}, "`fs`"),
            ({"window_s": 0.0}, "`window_s`"),
            ({"skip_first_s": -1.0}, "`skip_first_s`"),
            ({"exclude": [1, 2, 3]}, "`exclude` must have shape"),
        ],
    )
    def test_exceptions(self, kwargs: dict[str, object], match: str) -> None:
        args: dict[str, object] = {"reference": [1, 2], "detected": [1, 2], "fs": FS, **kwargs}
        with pytest.raises(ValueError, match=match):
            match_beats(**args)  # type: ignore[arg-type]


class TestGrossStatistics:
    def test_basic(self) -> None:
        a = match_beats([100, 400, 700], [100, 436], FS)  # tp 2, fn 1, error 36 samples = 100 ms
        b = match_beats([100, 400], [100, 400, 900], FS)  # tp 2, fp 1
        s = gross_statistics([a, b])
        assert (s["tp"], s["fn"], s["fp"]) == (4, 1, 1)
        assert s["se"] == pytest.approx(80.0)
        assert s["ppv"] == pytest.approx(80.0)
        assert s["der"] == pytest.approx(50.0)
        assert s["mean_abs_error_ms"] == pytest.approx(25.0)
        assert a.stats()["se"] == pytest.approx(200 / 3)

    def test_edge_cases(self) -> None:
        s = gross_statistics([])
        assert (s["tp"], s["fn"], s["fp"]) == (0, 0, 0)
        assert all(math.isnan(s[k]) for k in ("se", "ppv", "der", "mean_abs_error_ms"))
        s = gross_statistics([match_beats([], [50], FS)])
        assert s["ppv"] == 0.0
        assert math.isnan(s["se"])

    def test_exceptions(self) -> None:
        with pytest.raises(AttributeError, match="tp"):
            gross_statistics([object()])  # type: ignore[list-item]


class TestFlutterIntervals:
    def test_basic(self) -> None:
        a = _annotations([5, 10, 20, 30, 40, 50, 60], ["N", "[", "!", "]", "N", "[", "]"])
        assert flutter_intervals(a).tolist() == [[10, 31], [50, 61]]

    def test_edge_cases(self) -> None:
        assert flutter_intervals(_annotations([], [])).shape == (0, 2)
        assert flutter_intervals(_annotations([5, 9], ["N", "N"])).shape == (0, 2)
        assert flutter_intervals(_annotations([5, 9, 20], ["N", "[", "!"])).tolist() == [[9, 21]]
        assert flutter_intervals(_annotations([5, 9], ["!", "]"])).tolist() == [[0, 10]]

    def test_exceptions(self) -> None:
        with pytest.raises(AttributeError):
            flutter_intervals([1, 2])  # type: ignore[arg-type]

    @pytest.mark.data
    def test_record_207(self, mitdb_dir: Path) -> None:
        ann = load_annotations("207", data_dir=mitdb_dir.parent)
        spans = flutter_intervals(ann)
        assert spans.shape == (6, 2)
        beats = ann.beats()
        inside = np.zeros(len(beats), dtype=bool)
        for start, stop in spans:
            inside |= (beats.sample >= start) & (beats.sample < stop)
        assert set(beats.symbol[inside].tolist()) == {"!"}
        assert int((beats.symbol == "!").sum()) == int(inside.sum()) == 472
        assert EC57_SKIP_S == 300.0
