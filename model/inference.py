"""Fast beat classification with a trained checkpoint, in batches or beat by beat.

:class:`BeatClassifier` wraps a checkpoint. :meth:`BeatClassifier.predict`
classifies a run of consecutive beats of one stream;
:meth:`BeatClassifier.stream` returns a :class:`BeatStream` that takes the
beats one at a time and gives exactly the same outputs.

Both give every beat the history of at most ``seq_len`` beats (itself and
the ``seq_len - 1`` before it), the context the network was trained on: the
LSTM runs from a zero state over that sliding context. The stream's state is
therefore the per-beat feature vectors of the last ``seq_len - 1`` beats; a
beat costs one convolutional encoding and ``seq_len`` LSTM steps.

Inputs are the windows of :func:`sigproc.beats.beat_windows` cut from the
stream after the checkpoint's *causal* filter (``preprocess.filter_spec()``,
run with :class:`sigproc.filters.StreamingFilter` at the device's rate), and
the seven RR features of :func:`sigproc.beats.rr_features`. Windows at
another rate are resampled to the model's rate; each window is z-scored per
lead here, as in training.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
"""

from __future__ import annotations

import hashlib
import os
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import Tensor

from model.checkpoint import Checkpoint, load_checkpoint
from model.cnn_lstm import BeatSequenceModel, ModelOutput
from model.data import PreprocessConfig, normalise_windows, resample_windows
from sigproc._checks import check_fs
from sigproc.beats import RR_FEATURE_NAMES, BeatWindows
from sigproc.rhythm import AFDetector, AFMonitor, PrematurityGate, SVTRule, af_irregularity, clean_intervals

__all__ = [
    "ECTOPIC_CLASSES",
    "SHIPPED_WEIGHTS",
    "BeatClassifier",
    "BeatGates",
    "BeatPrediction",
    "BeatStream",
    "GatedProbs",
    "af_gate",
    "context_states",
    "gate_beat",
    "predict_arrays",
    "prematurity_gate",
    "rhythm_gates",
    "svt_gate",
]

#: The inter-patient CNN-LSTM trained on DS1, shipped with the package.
SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "cnn_lstm_ds1.pt"


@dataclass(frozen=True)
class BeatPrediction:
    """Outputs for ``N`` beats.

    Attributes
    ----------
    class_probs : ndarray, shape (N, C)
        Probability of each class of :attr:`classes`.
    abnormal_prob : ndarray, shape (N,)
        Probability that the beat is not N (the abnormal head).
    early_probs : ndarray, shape (N, H, C)
        Probability of each class for beat ``t + h``, ``h`` in :attr:`horizons`.
    classes : tuple of str
        Class names.
    horizons : tuple of int
        Early-alarm horizons in beats.
    resampled_from : float or None
        The input rate when windows were resampled to the model's rate.
    af_irregularity : ndarray, shape (N,), or None
        With an AF gate (:attr:`BeatClassifier.af_detector`): the RR
        evidence of atrial fibrillation at each beat
        (:func:`sigproc.rhythm.af_irregularity`, ``NaN`` early in a stream).
    af : ndarray of bool, shape (N,), or None
        With an AF gate: beats in a rhythm called atrial fibrillation, whose
        S probability was moved to N (:func:`af_gate`).
    svt : ndarray of bool, shape (N,), or None
        With an SVT rule (:attr:`BeatClassifier.svt_rule`): beats in a fast
        run, whose N probability was moved to S (:func:`svt_gate`).
    not_premature : ndarray of bool, shape (N,), or None
        With a prematurity gate (:attr:`BeatClassifier.prematurity_gate`):
        beats neither premature nor in a fast run, whose S probability was
        moved to N (:func:`prematurity_gate`).
    """

    class_probs: NDArray[np.float32]
    abnormal_prob: NDArray[np.float32]
    early_probs: NDArray[np.float32]
    classes: tuple[str, ...]
    horizons: tuple[int, ...]
    resampled_from: float | None = None
    af_irregularity: NDArray[np.float64] | None = None
    af: NDArray[np.bool_] | None = None
    svt: NDArray[np.bool_] | None = None
    not_premature: NDArray[np.bool_] | None = None

    @property
    def labels(self) -> list[str]:
        """The most probable class of each beat."""
        return [self.classes[i] for i in self.class_probs.argmax(axis=1)]


def context_states(model: BeatSequenceModel, features: Tensor, *, chunk: int = 8192) -> Tensor:
    """Temporal states (N, hidden) of ``features`` (N, D) with a sliding context.

    Beat ``t`` gets the state after running the model's temporal part from
    zero over beats ``max(0, t - T + 1) .. t`` with ``T = config.seq_len``.
    """
    n, t = features.shape[0], model.config.seq_len
    head = min(t - 1, n)
    parts: list[Tensor] = []
    if head > 0:
        s, _ = model.temporal(features[None, :head])  # (1, head, hidden)
        parts.append(s[0])
    if n >= t:
        windows = features.unfold(0, t, 1).permute(0, 2, 1)  # (N - T + 1, T, D)
        for i in range(0, windows.shape[0], chunk):
            s, _ = model.temporal(windows[i : i + chunk], last_only=True)
            parts.append(s[:, -1])  # (chunk, hidden)
    return torch.cat(parts) if parts else features.new_zeros((0, model.config.head_features))


@torch.no_grad()
def predict_arrays(
    model: BeatSequenceModel,
    windows: Tensor,
    rr: Tensor,
    lead_mask: Tensor | None = None,
    *,
    chunk: int = 512,
) -> ModelOutput:
    """Logits for consecutive beats of one stream: ``windows`` (N, L, W), ``rr`` (N, 7).

    ``lead_mask`` (L,) bool marks the leads present. Beats are encoded in
    chunks of ``chunk``, small enough that the convolutions' intermediate
    maps stay in cache. Returns a
    :class:`~model.cnn_lstm.ModelOutput` with the time axis dropped:
    (N, C), (N,), (N, H, C).
    """
    model.eval()
    fuse = getattr(model.encoder, "fuse", None)
    if callable(fuse) and getattr(model.encoder, "_fused", None) is None:
        fuse()  # batch norms folded into the convolutions; dropped again by model.train()
    feats = []
    for i in range(0, windows.shape[0], chunk):
        w = windows[i : i + chunk, None]  # (n, 1, L, W): each beat its own length-1 sequence
        mask = None if lead_mask is None else lead_mask.expand(w.shape[0], -1)
        feats.append(model.encode(w, rr[i : i + chunk, None], mask)[:, 0])  # (n, D)
    if not feats:
        c, h = model.config.n_classes, len(model.config.horizons)
        return ModelOutput(windows.new_zeros((0, c)), windows.new_zeros(0), windows.new_zeros((0, h, c)))
    s = context_states(model, torch.cat(feats))  # (N, hidden)
    out = model.heads(s[None])
    return ModelOutput(out.class_logits[0], out.abnormal_logit[0], out.early_logits[0])


#: Classes whose beats make an RR interval unfit for the AF evidence.
ECTOPIC_CLASSES: tuple[str, ...] = ("V", "F", "Q")


def af_gate(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    pre_rr: NDArray[np.floating],
    classes: tuple[str, ...],
    detector: AFDetector,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.float64], NDArray[np.bool_]]:
    """Move the S probability to N on beats in atrial fibrillation.

    In AF an atrial premature beat cannot be told from the chaotic
    conduction around it, and the AAMI convention labels every
    non-ventricular AF beat N; a classifier that judges prematurity calls
    many of them S. This gate finds AF from the RR intervals
    (:func:`sigproc.rhythm.af_irregularity`, leaving out the intervals at
    beats the network calls V, F or Q) and, on the beats it flags, adds the
    S probability to N, now and in the early-alarm forecasts: a beat the
    network thought supraventricular (N or S) stays supraventricular, so
    only S calls change, to N, or a close V call to N.

    Returns the gated class and early-alarm probabilities (new arrays), the
    irregularity and the AF flag of every beat.
    """
    ectopic = np.isin(class_probs.argmax(axis=1), _ectopic_indices(classes))
    irregularity = af_irregularity(pre_rr, clean_intervals(ectopic), detector)
    af = detector.flags(irregularity)
    return (*_fold(class_probs, early_probs, af, "S", "N", classes), irregularity, af)


def svt_gate(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    rr: NDArray[np.floating],
    classes: tuple[str, ...],
    rule: SVTRule,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """Move the N probability to S on beats in a run of supraventricular tachycardia.

    A prematurity-minded network misses the beats of a run of SVT: each is
    on time for the run (:class:`sigproc.rhythm.SVTRule`). On the beats the
    rule flags (``rr`` (N, 7), the RR features), the N probability is added
    to S, now and in the early-alarm forecasts: a beat thought
    supraventricular stays so, and is called S. Run it before
    :func:`af_gate`, which takes S back in atrial fibrillation (fast AF
    is no SVT). Returns the gated probabilities (new arrays) and the flags.
    """
    svt = rule.flags(rr[:, 2], rr[:, 3])
    return (*_fold(class_probs, early_probs, svt, "N", "S", classes), svt)


def prematurity_gate(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    rr: NDArray[np.floating],
    classes: tuple[str, ...],
    gate: PrematurityGate,
) -> tuple[NDArray[np.float32], NDArray[np.float32], NDArray[np.bool_]]:
    """Move the S probability to N on beats neither premature nor in a fast run.

    AAMI's S class holds premature beats (:class:`sigproc.rhythm.PrematurityGate`).
    A network that weighs the beat against the long-run rhythm as well
    calls S the beats of any rhythm faster than that mean, such as normal
    conduction after a stretch of 2:1 AV block; on the beats the gate does
    not allow (``rr`` (N, 7), the RR features) the S probability is added
    to N, now and in the early-alarm forecasts. Returns the gated
    probabilities (new arrays) and the beats it acted on.
    """
    blocked = ~gate.allows(rr[:, 0], rr[:, 2])
    return (*_fold(class_probs, early_probs, blocked, "S", "N", classes), blocked)


class GatedProbs(NamedTuple):
    """Probabilities after :func:`rhythm_gates`, and what each gate found (``None``: not run)."""

    class_probs: NDArray[np.float32]
    early_probs: NDArray[np.float32]
    svt: NDArray[np.bool_] | None
    af_irregularity: NDArray[np.float64] | None
    af: NDArray[np.bool_] | None
    not_premature: NDArray[np.bool_] | None


def rhythm_gates(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    rr: NDArray[np.floating],
    classes: tuple[str, ...],
    *,
    svt_rule: SVTRule | None = None,
    af_detector: AFDetector | None = None,
    prematurity: PrematurityGate | None = None,
) -> GatedProbs:
    """:func:`svt_gate`, :func:`prematurity_gate`, then :func:`af_gate` over one stream's beats.

    ``rr`` (N, 7) are the beats' RR features, consecutive beats of one
    stream. Each step is skipped when its rule is ``None``. The AF gate
    comes last: its history counts the ectopic beats as they are finally
    called.
    """
    svt = irregularity = af = blocked = None
    if svt_rule is not None:
        class_probs, early_probs, svt = svt_gate(class_probs, early_probs, rr, classes, svt_rule)
    if prematurity is not None:
        class_probs, early_probs, blocked = prematurity_gate(
            class_probs, early_probs, rr, classes, prematurity
        )
    if af_detector is not None:
        class_probs, early_probs, irregularity, af = af_gate(
            class_probs, early_probs, rr[:, 0], classes, af_detector
        )
    return GatedProbs(class_probs, early_probs, svt, irregularity, af, blocked)


def gate_beat(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    rr: NDArray[np.floating],
    classes: tuple[str, ...],
    *,
    svt_rule: SVTRule | None = None,
    monitor: AFMonitor | None = None,
    prematurity: PrematurityGate | None = None,
) -> BeatGates:
    """:func:`rhythm_gates` for the next beat of a stream.

    ``class_probs`` (C,), ``early_probs`` (H, C) and the beat's RR features
    ``rr`` (7,); ``monitor`` carries the stream's RR history for the AF
    gate. Each step is skipped when its rule is ``None``.
    """
    gated = rhythm_gates(
        class_probs[None], early_probs[None], rr[None], classes, svt_rule=svt_rule, prematurity=prematurity
    )
    probs, early = gated.class_probs, gated.early_probs
    svt = gated.svt is not None and bool(gated.svt[0])
    blocked = gated.not_premature is not None and bool(gated.not_premature[0])
    if monitor is None:
        return BeatGates(probs[0], early[0], svt, False, blocked)
    monitor.push_beat(float(rr[0]), ectopic=int(probs[0].argmax()) in _ectopic_indices(classes))
    probs, early = _fold(probs, early, np.array([monitor.af]), "S", "N", classes)
    return BeatGates(probs[0], early[0], svt, monitor.af, blocked)


class BeatGates(NamedTuple):
    """One beat after :func:`gate_beat`: its probabilities and what each gate found."""

    class_probs: NDArray[np.float32]
    early_probs: NDArray[np.float32]
    svt: bool
    af: bool
    not_premature: bool


def _ectopic_indices(classes: tuple[str, ...]) -> list[int]:
    return [classes.index(c) for c in ECTOPIC_CLASSES if c in classes]


def _fold(
    class_probs: NDArray[np.float32],
    early_probs: NDArray[np.float32],
    mask: NDArray[np.bool_],
    source: str,
    target: str,
    classes: tuple[str, ...],
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """New arrays with the ``source`` probability added to ``target`` on the beats of ``mask``."""
    a, b = classes.index(source), classes.index(target)
    probs, early = class_probs.copy(), early_probs.copy()
    probs[mask, b] += probs[mask, a]
    probs[mask, a] = 0.0
    early[mask, :, b] += early[mask, :, a]
    early[mask, :, a] = 0.0
    return probs, early


class BeatClassifier:
    """A trained beat network ready for inference.

    Parameters
    ----------
    checkpoint : Checkpoint
        A loaded checkpoint (see :meth:`load`).
    num_threads : int, optional
        If given, sets :func:`torch.set_num_threads`.
    af_detector : AFDetector, None or "checkpoint"
        Gate the S class in atrial fibrillation (:func:`af_gate`) with these
        parameters; ``None`` gives the network's outputs; ``"checkpoint"``
        (the default) does what the checkpoint says
        (:attr:`model.checkpoint.Checkpoint.af_detector`: the shipped
        weights gate).
    svt_rule : SVTRule, None or "checkpoint"
        The same for the SVT rule (:func:`svt_gate`), applied before the AF
        gate.
    prematurity_gate : PrematurityGate, None or "checkpoint"
        The same for the prematurity gate (:func:`prematurity_gate`),
        applied after the SVT rule and before the AF gate.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        num_threads: int | None = None,
        af_detector: AFDetector | Literal["checkpoint"] | None = "checkpoint",
        svt_rule: SVTRule | Literal["checkpoint"] | None = "checkpoint",
        prematurity_gate: PrematurityGate | Literal["checkpoint"] | None = "checkpoint",
    ) -> None:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        self.checkpoint = checkpoint
        self.model = checkpoint.build()
        fuse = getattr(self.model.encoder, "fuse", None)
        if callable(fuse):
            fuse()
        self.preprocess: PreprocessConfig = checkpoint.preprocess
        self.classes = tuple(checkpoint.label_map)
        self.horizons = tuple(checkpoint.model_config.horizons)
        self.af_detector = checkpoint.af_detector if af_detector == "checkpoint" else af_detector
        self.svt_rule = checkpoint.svt_rule if svt_rule == "checkpoint" else svt_rule
        self.prematurity_gate = (
            checkpoint.prematurity_gate if prematurity_gate == "checkpoint" else prematurity_gate
        )
        #: What classified a beat, stored with it: the network's name and a digest of what decides
        #: its outputs (weights, configuration, preprocessing, rhythm rules), e.g. ``cnn_lstm@3f2a9c0d1b7e``.
        self.version = f"{checkpoint.model_name}@{self._digest()}"

    def _digest(self) -> str:
        """12 hex digits of SHA-256 over the weights, the configuration and the rules in force."""
        h = hashlib.sha256()
        for key in sorted(self.checkpoint.state_dict):
            h.update(key.encode())
            h.update(self.checkpoint.state_dict[key].detach().cpu().contiguous().numpy().tobytes())
        rules = (self.af_detector, self.svt_rule, self.prematurity_gate)
        settings = (self.checkpoint.model_config, self.preprocess, self.classes, rules)
        h.update(repr(settings).encode())
        return h.hexdigest()[:12]

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        num_threads: int | None = None,
        af_detector: AFDetector | Literal["checkpoint"] | None = "checkpoint",
        svt_rule: SVTRule | Literal["checkpoint"] | None = "checkpoint",
        prematurity_gate: PrematurityGate | Literal["checkpoint"] | None = "checkpoint",
    ) -> BeatClassifier:
        """Load a checkpoint; ``None`` loads the shipped inter-patient weights.

        Example
        -------
        >>> clf = BeatClassifier.load()  # doctest: +SKIP
        >>> clf.fs, clf.n_leads  # doctest: +SKIP
        (180.0, 2)
        """
        return cls(
            load_checkpoint(SHIPPED_WEIGHTS if path is None else path),
            num_threads=num_threads,
            af_detector=af_detector,
            svt_rule=svt_rule,
            prematurity_gate=prematurity_gate,
        )

    @property
    def fs(self) -> float:
        """The model's sampling rate in Hz."""
        return self.preprocess.fs

    @property
    def n_leads(self) -> int:
        """Most leads the model reads (lead 0 MLII, lead 1 the second lead)."""
        return self.checkpoint.model_config.n_leads

    def prepare(
        self, beat_windows: ArrayLike | BeatWindows, rr_features: ArrayLike, *, fs: float | None = None
    ) -> tuple[Tensor, Tensor, Tensor, float | None]:
        """Validate, resample and normalise inputs; returns tensors and the input rate if resampled.

        Raises
        ------
        ValueError
            Naming the mismatch: dimensions, lead count, window length for
            the rate, sampling rate, RR columns, beat counts, non-finite values.
        """
        raw = beat_windows.windows if isinstance(beat_windows, BeatWindows) else beat_windows
        w = np.asarray(raw, dtype=np.float64)
        if w.ndim == 2:
            w = w[:, None, :]
        if w.ndim != 3:
            raise ValueError(f"`beat_windows` must have shape (n_beats, n_leads, n_window), got {w.shape}")
        n, n_leads, n_win = w.shape
        if not 1 <= n_leads <= self.n_leads:
            raise ValueError(f"`beat_windows` has {n_leads} leads; this model takes 1 to {self.n_leads}")
        fs_in = self.fs if fs is None else check_fs(fs)
        expected = round(self.preprocess.window_s * fs_in)
        if n_win != expected:
            raise ValueError(
                f"`beat_windows` has {n_win} samples per window; at fs={fs_in:g} Hz the model's "
                f"{self.preprocess.window_s:g} s window has {expected} (pass `fs` if the rate differs)"
            )
        r = np.asarray(rr_features, dtype=np.float64)
        if r.ndim == 1:
            r = r[None, :]
        if r.ndim != 2 or r.shape[1] != len(RR_FEATURE_NAMES):
            raise ValueError(
                f"`rr_features` must have shape (n_beats, {len(RR_FEATURE_NAMES)}), got {r.shape}"
            )
        if r.shape[0] != n:
            raise ValueError(f"`rr_features` has {r.shape[0]} rows for {n} beat windows")
        if not (np.isfinite(w).all() and np.isfinite(r).all()):
            raise ValueError("`beat_windows` and `rr_features` must be finite (no NaN gaps)")
        resampled = None if fs_in == self.fs else fs_in
        x = normalise_windows(resample_windows(w, fs_in, self.fs, self.preprocess.n_window))  # (N, L, W)
        if n_leads < self.n_leads:
            pad = np.zeros((n, self.n_leads - n_leads, x.shape[-1]), dtype=np.float32)
            x = np.concatenate([x, pad], axis=1)
        mask = torch.arange(self.n_leads) < n_leads  # (L,)
        return torch.from_numpy(x), torch.from_numpy(r.astype(np.float32)), mask, resampled

    def predict(
        self, beat_windows: ArrayLike | BeatWindows, rr_features: ArrayLike, *, fs: float | None = None
    ) -> BeatPrediction:
        """Classify consecutive beats of one stream.

        Parameters
        ----------
        beat_windows : array_like, shape (N, L, W) or BeatWindows
            Causally filtered windows of 1 (MLII) or 2 leads,
            ``W = round(window_s * fs)``.
        rr_features : array_like, shape (N, 7)
            :func:`sigproc.beats.rr_features` of the same beats.
        fs : float, optional
            Rate of the windows in Hz (default: the model's); other rates
            are resampled to the model's.

        Returns
        -------
        BeatPrediction

        Raises
        ------
        ValueError
            For inputs of the wrong shape, rate or lead count.
        """
        x, r, mask, resampled = self.prepare(beat_windows, rr_features, fs=fs)
        pred = self._to_prediction(predict_arrays(self.model, x, r, mask), resampled)
        gated = rhythm_gates(
            pred.class_probs,
            pred.early_probs,
            r.numpy(),
            self.classes,
            svt_rule=self.svt_rule,
            af_detector=self.af_detector,
            prematurity=self.prematurity_gate,
        )
        return replace(pred, **gated._asdict())

    def stream(self, *, n_leads: int | None = None, fs: float | None = None) -> BeatStream:
        """A per-stream classifier that takes beats one at a time."""
        return BeatStream(self, n_leads=n_leads or self.n_leads, fs=fs)

    def _to_prediction(self, out: ModelOutput, resampled: float | None) -> BeatPrediction:
        return BeatPrediction(
            class_probs=torch.softmax(out.class_logits, -1).numpy(),
            abnormal_prob=torch.sigmoid(out.abnormal_logit).numpy(),
            early_probs=torch.softmax(out.early_logits, -1).numpy(),
            classes=self.classes,
            horizons=self.horizons,
            resampled_from=resampled,
        )


class BeatStream:
    """Stateful classification of one stream, one beat per :meth:`push`.

    The outputs equal those of :meth:`BeatClassifier.predict` on the same
    sequence of beats. If the model reads ``post_rr`` the caller pushes a
    beat once the next R peak is known (one beat of delay).
    """

    def __init__(self, classifier: BeatClassifier, *, n_leads: int, fs: float | None = None) -> None:
        if not 1 <= n_leads <= classifier.n_leads:
            raise ValueError(f"`n_leads` must be 1 to {classifier.n_leads}, got {n_leads}")
        self.classifier = classifier
        self.n_leads = n_leads
        self.fs = fs
        self._features: deque[Tensor] = deque(maxlen=classifier.model.config.seq_len)
        detector = classifier.af_detector
        self._af = None if detector is None else AFMonitor(detector)

    def reset(self) -> None:
        """Forget the history (a new recording, or a gap in the signal)."""
        self._features.clear()
        if self._af is not None:
            self._af.reset()

    @torch.no_grad()
    def push(self, window: ArrayLike, rr: ArrayLike) -> BeatPrediction:
        """Classify the next beat: ``window`` (L, W) and its ``rr`` (7,).

        Returns a :class:`BeatPrediction` of one beat.
        """
        w = np.asarray(window, dtype=np.float64)
        if w.ndim != 2 or w.shape[0] != self.n_leads:
            raise ValueError(
                f"`window` must have shape ({self.n_leads}, n_window) for this stream, got {w.shape}"
            )
        x, r, mask, resampled = self.classifier.prepare(w[None], rr, fs=self.fs)
        model = self.classifier.model
        feat = model.encode(x[None], r[None], mask[None])[0, -1]  # (D,)
        self._features.append(feat)
        s, _ = model.temporal(torch.stack(list(self._features))[None], last_only=True)  # (1, 1, hidden)
        out = model.heads(s[:, -1:])
        pred = self.classifier._to_prediction(
            ModelOutput(out.class_logits[0], out.abnormal_logit[0], out.early_logits[0]), resampled
        )
        rule, gate = self.classifier.svt_rule, self.classifier.prematurity_gate
        if rule is None and gate is None and self._af is None:
            return pred
        g = gate_beat(
            pred.class_probs[0],
            pred.early_probs[0],
            r[0].numpy(),
            self.classifier.classes,
            svt_rule=rule,
            monitor=self._af,
            prematurity=gate,
        )
        return replace(
            pred,
            class_probs=g.class_probs[None],
            early_probs=g.early_probs[None],
            svt=None if rule is None else np.array([g.svt]),
            af_irregularity=None if self._af is None else np.array([self._af.irregularity]),
            af=None if self._af is None else np.array([g.af]),
            not_premature=None if gate is None else np.array([g.not_premature]),
        )
