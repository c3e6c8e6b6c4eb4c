"""Batch and stateful inference agree; inputs are validated; the shipped weights work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.checkpoint import Checkpoint, save_checkpoint
from model.cnn_lstm import ModelConfig
from model.data import PreprocessConfig, inter_patient_split
from model.inference import SHIPPED_WEIGHTS, BeatClassifier, af_gate, prematurity_gate, rhythm_gates, svt_gate
from model.registry import get_model
from sigproc.beats import beat_windows, rr_features
from sigproc.filters import StreamingFilter
from sigproc.records import AAMI_CLASSES, load_record
from sigproc.rhythm import AFDetector, PrematurityGate, SVTRule


@pytest.fixture(
    params=[
        "raw",
        "relative+contrast",
        "relative+contrast+skip+irregularity",
        "relative+skip+shape",
        "relative+contrast+skip+shape+rate",
    ]
)
def classifier(request: pytest.FixtureRequest, tiny_config: ModelConfig, tmp_path: Path) -> BeatClassifier:
    """A tiny CNN-LSTM as a checkpoint: raw RR, relative RR with context contrast, RR skip, shape terms."""
    if request.param != "raw":
        tiny_config = replace(tiny_config, rr_mode="relative", context_contrast="contrast" in request.param)
    if request.param.endswith("irregularity"):
        tiny_config = replace(tiny_config, rr_skip=True, rr_irregularity=True)
    if "shape" in request.param:
        tiny_config = replace(tiny_config, rr_skip=True, shape_skip=True, rr_rate="rate" in request.param)
    torch.manual_seed(0)
    net = get_model("cnn_lstm", tiny_config)
    pre = PreprocessConfig(fs=tiny_config.fs, window_s=tiny_config.n_window / tiny_config.fs)
    path = save_checkpoint(
        Checkpoint("cnn_lstm", tiny_config, pre, net.state_dict(), inter_patient_split()), tmp_path / "t.pt"
    )
    return BeatClassifier.load(path)


def _inputs(n: int, leads: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.standard_normal((n, leads, w)), rng.uniform(0.5, 1.5, (n, 7))


class TestPredict:
    def test_basic(self, classifier: BeatClassifier) -> None:
        x, rr = _inputs(11, 2, 40)
        p = classifier.predict(x, rr)
        assert p.class_probs.shape == (11, 5)
        assert p.abnormal_prob.shape == (11,)
        assert p.early_probs.shape == (11, 3, 5)
        assert np.allclose(p.class_probs.sum(1), 1, atol=1e-5)
        assert set(p.labels) <= set(AAMI_CLASSES)
        assert p.resampled_from is None

    def test_stream_matches_batch(self, classifier: BeatClassifier) -> None:
        for leads in (2, 1):
            x, rr = _inputs(11, leads, 40)  # longer than seq_len = 4: the sliding context is used
            batch = classifier.predict(x, rr)
            stream = classifier.stream(n_leads=leads)
            got = [stream.push(x[i], rr[i]) for i in range(len(x))]
            assert np.allclose(np.concatenate([g.class_probs for g in got]), batch.class_probs, atol=1e-6)
            assert np.allclose(np.concatenate([g.abnormal_prob for g in got]), batch.abnormal_prob, atol=1e-6)
            assert np.allclose(np.concatenate([g.early_probs for g in got]), batch.early_probs, atol=1e-6)

    def test_af_gate(self, classifier: BeatClassifier) -> None:
        det = AFDetector(window=8, min_intervals=4)
        gated = BeatClassifier(classifier.checkpoint, af_detector=det)
        with torch.no_grad():  # an untrained network that calls every beat N or S, as in AF
            for clf in (classifier, gated):
                clf.model.class_head.bias.copy_(torch.tensor([8.0, 7.5, -8.0, -8.0, -8.0]))
        x, rr = _inputs(40, 2, 40)
        rr[:20, 0] = 0.8  # a regular rhythm, then independent intervals (atrial fibrillation)
        plain, got = classifier.predict(x, rr), gated.predict(x, rr)
        assert plain.af is None
        assert got.af is not None
        assert got.af_irregularity is not None
        assert not got.af[:20].any()
        assert got.af[30:].all()
        np.testing.assert_allclose(got.class_probs[~got.af], plain.class_probs[~got.af])
        s, n = AAMI_CLASSES.index("S"), AAMI_CLASSES.index("N")
        assert (got.class_probs[got.af, s] == 0).all()
        assert (got.early_probs[got.af, :, s] == 0).all()
        np.testing.assert_allclose(
            got.class_probs[got.af, n], (plain.class_probs[:, n] + plain.class_probs[:, s])[got.af], rtol=1e-6
        )
        np.testing.assert_allclose(got.class_probs.sum(1), 1, atol=1e-5)
        np.testing.assert_array_equal(got.abnormal_prob, plain.abnormal_prob)
        stream = gated.stream()
        pushed = [stream.push(x[i], rr[i]) for i in range(len(x))]
        assert np.allclose(np.concatenate([p.class_probs for p in pushed]), got.class_probs, atol=1e-6)
        assert np.allclose(np.concatenate([p.early_probs for p in pushed]), got.early_probs, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([p.af for p in pushed]), got.af)
        stream.reset()
        assert not stream.push(x[-1], rr[-1]).af.any()  # the history is gone

    def test_svt_rule(self, classifier: BeatClassifier) -> None:
        """A fast run is called S (N folded into S), then the AF gate, batch and stream alike."""
        both = BeatClassifier(
            classifier.checkpoint, svt_rule=SVTRule(), af_detector=AFDetector(window=8, min_intervals=4)
        )
        with torch.no_grad():  # an untrained network that calls every beat N
            for clf in (classifier, both):
                clf.model.class_head.bias.copy_(torch.tensor([8.0, 6.0, -8.0, -8.0, -8.0]))
        x, rr = _inputs(30, 2, 40)
        rr[:, :4] = 0.8  # pre, post, local, mean: a regular 75 bpm
        rr[12:20, [0, 1, 2]] = 0.4  # a run at 150 bpm, twice the long-run rate
        plain, got = classifier.predict(x, rr), both.predict(x, rr)
        assert plain.svt is None
        assert got.svt is not None
        assert got.svt.tolist() == [12 <= i < 20 for i in range(30)]
        assert [lab == "S" for lab in got.labels] == got.svt.tolist()
        s, n = AAMI_CLASSES.index("S"), AAMI_CLASSES.index("N")
        np.testing.assert_allclose(
            got.class_probs[got.svt, s],
            (plain.class_probs[:, n] + plain.class_probs[:, s])[got.svt],
            rtol=1e-6,
        )
        assert got.af is not None
        assert not got.af.any()  # a regular rhythm, run or not
        stream = both.stream()
        pushed = [stream.push(x[i], rr[i]) for i in range(len(x))]
        assert np.allclose(np.concatenate([p.class_probs for p in pushed]), got.class_probs, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([p.svt for p in pushed]), got.svt)
        probs, _, flags = svt_gate(plain.class_probs, plain.early_probs, rr, AAMI_CLASSES, SVTRule(0.3))
        assert not flags.any()  # 150 bpm is below a 200 bpm rule
        np.testing.assert_array_equal(probs, plain.class_probs)

    def test_prematurity_gate(self, classifier: BeatClassifier) -> None:
        """S only where a beat is early or in a fast run; S folded into N elsewhere, batch and stream."""
        gated = BeatClassifier(classifier.checkpoint, prematurity_gate=PrematurityGate(), af_detector=None)
        with torch.no_grad():  # an untrained network that calls every beat S
            for clf in (classifier, gated):
                clf.model.class_head.bias.copy_(torch.tensor([6.0, 8.0, -8.0, -8.0, -8.0]))
        x, rr = _inputs(30, 2, 40)
        rr[:, :4] = 0.8  # pre, post, local, mean: a regular 75 bpm
        rr[5, 0] = 0.6  # one premature beat
        rr[12:20, [0, 1, 2]] = 0.4  # a run at 150 bpm, on time for the run
        plain, got = classifier.predict(x, rr), gated.predict(x, rr)
        assert plain.not_premature is None
        assert set(plain.labels) == {"S"}
        allowed = [i == 5 or 12 <= i < 20 for i in range(30)]
        assert got.not_premature is not None
        assert got.not_premature.tolist() == [not a for a in allowed]
        assert [lab == "S" for lab in got.labels] == allowed
        s, n = AAMI_CLASSES.index("S"), AAMI_CLASSES.index("N")
        blocked = got.not_premature
        np.testing.assert_allclose(
            got.class_probs[blocked, n],
            (plain.class_probs[:, n] + plain.class_probs[:, s])[blocked],
            rtol=1e-6,
        )
        assert (got.class_probs[blocked, s] == 0).all()
        assert (got.early_probs[blocked, :, s] == 0).all()  # the forecasts too
        np.testing.assert_array_equal(got.class_probs[~blocked], plain.class_probs[~blocked])
        stream = gated.stream()
        pushed = [stream.push(x[i], rr[i]) for i in range(len(x))]
        assert np.allclose(np.concatenate([p.class_probs for p in pushed]), got.class_probs, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([p.not_premature for p in pushed]), got.not_premature)
        # the function itself, and its place between the SVT rule and the AF gate
        probs, _, flags = prematurity_gate(
            plain.class_probs, plain.early_probs, rr, AAMI_CLASSES, PrematurityGate()
        )
        np.testing.assert_array_equal(flags, got.not_premature)
        np.testing.assert_allclose(probs, got.class_probs, rtol=1e-6)
        both = rhythm_gates(
            plain.class_probs,
            plain.early_probs,
            rr,
            AAMI_CLASSES,
            svt_rule=SVTRule(),
            prematurity=PrematurityGate(),
        )
        assert both.svt is not None
        assert both.not_premature is not None
        assert [lab == AAMI_CLASSES.index("S") for lab in both.class_probs.argmax(1)] == allowed

    def test_af_gate_leaves_intervals_of_ventricular_calls_out(self) -> None:
        n = 40
        probs = np.tile(np.float32([0.3, 0.6, 0.05, 0.03, 0.02]), (n, 1))
        rng = np.random.default_rng(2)
        rr = np.full(n, 0.8)
        v = np.arange(3, n, 3)
        rr[v] = rng.uniform(0.4, 0.6, v.size)  # irregular only at the beats called V
        probs[v] = [0.1, 0.1, 0.7, 0.05, 0.05]
        det = AFDetector(window=8, min_intervals=4)
        early = np.repeat(probs[:, None], 3, axis=1)
        out, _, irregularity, af = af_gate(probs, early, rr, AAMI_CLASSES, det)
        assert not af.any()
        assert np.nanmax(irregularity) == 0.0
        np.testing.assert_array_equal(out, probs)

    def test_version(self, classifier: BeatClassifier) -> None:
        """The version names the network and changes with its weights or its rules, not otherwise."""
        name, digest = classifier.version.split("@")
        assert name == "cnn_lstm"
        assert len(digest) == 12
        assert int(digest, 16) >= 0
        assert BeatClassifier(classifier.checkpoint).version == classifier.version
        assert BeatClassifier(classifier.checkpoint, af_detector=AFDetector()).version != classifier.version
        state = {k: v.clone() for k, v in classifier.checkpoint.state_dict.items()}
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key] += 1e-3
        changed = BeatClassifier(replace(classifier.checkpoint, state_dict=state))
        assert changed.version != classifier.version

    def test_resampled(self, classifier: BeatClassifier) -> None:
        x, rr = _inputs(3, 1, 80)  # 120 Hz windows for a 60 Hz model
        p = classifier.predict(x, rr, fs=120.0)
        assert p.resampled_from == 120.0
        assert p.class_probs.shape == (3, 5)

    def test_exceptions(self, classifier: BeatClassifier) -> None:
        x, rr = _inputs(3, 2, 40)
        with pytest.raises(ValueError, match="has 3 leads"):
            classifier.predict(np.zeros((3, 3, 40)), rr)
        with pytest.raises(ValueError, match="41 samples per window; at fs=60 Hz"):
            classifier.predict(np.zeros((3, 2, 41)), rr)
        with pytest.raises(ValueError, match="pass `fs` if the rate differs"):
            classifier.predict(np.zeros((3, 2, 80)), rr)
        with pytest.raises(ValueError, match=r"`fs` must be positive"):
            classifier.predict(x, rr, fs=-1.0)
        with pytest.raises(ValueError, match=r"shape \(n_beats, 7\)"):
            classifier.predict(x, rr[:, :5])
        with pytest.raises(ValueError, match="2 rows for 3 beat windows"):
            classifier.predict(x, rr[:2])
        with pytest.raises(ValueError, match="must have shape"):
            classifier.predict(np.zeros((2, 2, 2, 40)), rr)
        x[0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="finite"):
            classifier.predict(x, rr)
        with pytest.raises(ValueError, match=r"shape \(1, n_window\)"):
            classifier.stream(n_leads=1).push(np.zeros((2, 40)), rr[0])


@pytest.mark.data
class TestShippedWeights:
    def _classify(
        self, data_dir: Path, record: str, leads: int, seconds: float
    ) -> tuple[list[str], list[str]]:
        clf = BeatClassifier.load()
        rec = load_record(record, data_dir=data_dir, sampto=round(seconds * 360))
        x = rec.signal[:, :leads]
        y = StreamingFilter.from_spec(clf.preprocess.filter_spec(), rec.fs, n_leads=leads).process(x)
        assert rec.annotations is not None
        ann = rec.annotations.beats()
        keep = np.flatnonzero(ann.aami() != "")
        peaks = ann.sample[keep]
        bw = beat_windows(
            y, peaks, rec.fs, window_s=clf.preprocess.window_s, pre_fraction=clf.preprocess.pre_fraction
        )
        pred = clf.predict(bw.windows, rr_features(peaks, rec.fs), fs=rec.fs)
        assert pred.resampled_from == 360.0  # the model runs at 180 Hz
        return pred.labels, list(ann.aami()[keep])

    def test_normal_segment(self, data_dir: Path) -> None:
        # Record 100 (DS2, not seen in training), first minute: sinus rhythm.
        for leads in (2, 1):
            labels, _ = self._classify(data_dir, "100", leads, 60.0)
            assert max(set(labels), key=labels.count) == "N"

    def test_ventricular_beats(self, data_dir: Path) -> None:
        # Record 233 (DS2), first five minutes: frequent PVCs; most of them are found.
        labels, ref = self._classify(data_dir, "233", 2, 300.0)
        on_v = [p for p, r in zip(labels, ref, strict=True) if r == "V"]
        assert len(on_v) > 50
        assert max(set(on_v), key=on_v.count) == "V"

    def test_metadata(self) -> None:
        assert SHIPPED_WEIGHTS.exists()
        assert SHIPPED_WEIGHTS.stat().st_size < 3_000_000
        clf = BeatClassifier.load()
        assert clf.checkpoint.split.protocol == "inter-patient"
        assert not set(clf.checkpoint.split.train) & set(clf.checkpoint.split.test)


class TestGate:
    """The AF gate travels with a checkpoint: ``cardiac-monitor gate``, evaluation, batch prediction."""

    def test_cli_and_checkpoint(self, classifier: BeatClassifier, tmp_path: Path) -> None:
        from click.testing import CliRunner

        from app import cli
        from model.checkpoint import load_checkpoint

        src = save_checkpoint(classifier.checkpoint, tmp_path / "plain.pt")
        out = tmp_path / "gated.pt"
        result = CliRunner().invoke(cli, ["gate", str(src), "--out", str(out), "--threshold", "0.05"])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out).af_detector == AFDetector(threshold=0.05)
        assert BeatClassifier.load(out).af_detector == AFDetector(threshold=0.05)
        assert BeatClassifier.load(out, af_detector=None).af_detector is None  # the caller can opt out
        assert BeatClassifier.load(src).af_detector is None
        result = CliRunner().invoke(cli, ["gate", str(out), "--off", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out).af_detector is None
        result = CliRunner().invoke(cli, ["gate", str(src), "--svt", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out).svt_rule == SVTRule()
        assert BeatClassifier.load(out).svt_rule == SVTRule()
        assert load_checkpoint(out).af_detector == AFDetector()
        result = CliRunner().invoke(cli, ["gate", str(src), "--prematurity", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert "prematurity gate PrematurityGate(max_pre_to_local=0.9, max_local_rr=0.6)" in result.output
        assert load_checkpoint(out).prematurity_gate == PrematurityGate()
        assert BeatClassifier.load(out).prematurity_gate == PrematurityGate()
        assert BeatClassifier.load(out, prematurity_gate=None).prematurity_gate is None
        result = CliRunner().invoke(cli, ["gate", str(out), "--no-prematurity", "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert load_checkpoint(out).prematurity_gate is None
        result = CliRunner().invoke(cli, ["gate", str(src), "--window", "8", "--out", str(out)])
        assert result.exit_code == 2
        assert "`min_intervals` must be 1 to `window` (8)" in result.output

    def test_predict_records(self, classifier: BeatClassifier) -> None:
        from model.data import RecordBeats
        from model.training import predict_records

        with torch.no_grad():  # calls S more often than N: a prematurity-minded network in AF
            classifier.model.class_head.bias.copy_(torch.tensor([7.5, 8.0, -8.0, -8.0, -8.0]))
        x, rr = _inputs(60, 2, 40)
        rec = RecordBeats(
            "af", x.astype(np.float32), rr.astype(np.float32), np.zeros(60, np.int64), np.arange(60)
        )
        det = AFDetector(window=8, min_intervals=4)
        _, plain, _ = predict_records(classifier.model, [rec])
        _, gated, early = predict_records(classifier.model, [rec], af_detector=det)
        assert (plain[0] == 1).mean() > 0.5
        assert (gated[0][20:] != 1).all()
        assert (early[0][20:] != 1).all()
        np.testing.assert_array_equal(gated[0][:4], plain[0][:4])  # no evidence yet: left alone

    def test_evaluate_model_checks(self) -> None:
        from model.evaluation import evaluate_model

        with pytest.raises(ValueError, match="`af_gate` is only supported for the inter-patient protocol"):
            evaluate_model(SHIPPED_WEIGHTS, protocol="random", af_gate=True)
