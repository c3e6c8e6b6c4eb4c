"""The CNN-LSTM beat classifier of Ronihal et al. (2025), equations 10-17.

Per beat ``t`` the network sees the window ``x_t`` of every lead around the
R peak (eq. 10, cut by :func:`sigproc.beats.beat_windows`) and the beat's RR
features ``rr_t``:

* eq. 11, lead attention: ``z_t = sum_l a_l x_t^(l)`` with
  ``a = softmax(w)`` over the leads present, ``w`` learned. A missing lead
  (a single-lead wearable) is masked out of the softmax, so the same weights
  serve one lead or two.
* eq. 12, multi-scale dilated convolution: three parallel branches of
  ``kernel_size`` taps whose dilations are chosen so that their receptive
  fields span a P wave, a QRS complex and a T wave *in seconds*, converted
  with the model's rate ``fs``; then batch norm, ReLU, max pooling, dropout
  and two more convolution blocks.
* eq. 13, the morphology regulariser, acts on the QRS-branch kernels
  (:meth:`CNNLSTM.qrs_kernels`, :func:`model.losses.morphology_regulariser`).
* eq. 14, RR conditioning: ``h_t = [GAP(F_t); rr_t]``. With
  ``rr_mode="relative"`` (:class:`RRInputs`) ``rr_t`` is replaced by log
  ratios of the intervals to the stream's own rhythm, which carry over
  between patients where absolute intervals do not.
* eq. 15, a unidirectional LSTM over consecutive beats: ``s_t = LSTM(h_t, s_{t-1})``.
  With ``context_contrast`` the LSTM also reads ``h_t - mean(h_1..h_t)``,
  each beat's features against the running mean of its context, a causal
  per-stream normalisation of morphology.
* eq. 16, heads on ``s_t``: the AAMI class of beat ``t``, normal vs
  abnormal, and for each horizon ``h`` the class of beat ``t + h``.

The network is causal: the LSTM runs forwards only, and the one look-ahead
it may read is ``post_rr`` (the interval to the next beat), which costs one
beat of delay and is switched by :attr:`ModelConfig.use_post_rr`. The model
always takes the seven columns of :data:`sigproc.beats.RR_FEATURE_NAMES`
and drops the look-ahead ones itself when the switch is off.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
.. [2] Yu F, Koltun V. Multi-scale context aggregation by dilated
   convolutions. ICLR 2016.
.. [3] Mondéjar-Guerra V et al. Heartbeat classification fusing temporal
   and morphological information of ECGs via ensemble of classifiers.
   Biomed Signal Process Control 47:41-48, 2019 (normalised RR features).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from functools import cache
from typing import NamedTuple

import torch
from torch import Tensor, nn

from model.data import rr_columns

__all__ = [
    "CNNLSTM",
    "RATE_REF_S",
    "RR_MODES",
    "BeatSequenceModel",
    "LeadAttention",
    "ModelConfig",
    "ModelOutput",
    "MultiScaleBeatEncoder",
    "RRInputs",
    "dilation_for",
    "lower_median",
    "shape_payload",
    "shape_terms",
]

LSTMState = tuple[Tensor, Tensor]

#: How the RR features enter the network (:class:`RRInputs`).
RR_MODES: tuple[str, ...] = ("raw", "relative")

#: Reference interval of the ``rr_rate`` term (:class:`RRInputs`): 75 bpm.
RATE_REF_S = 0.8

#: The shape terms' segment around the R peak, in seconds before and after it.
SHAPE_BEFORE_S, SHAPE_AFTER_S = 0.15, 0.25

#: Terms of :func:`shape_terms`: two QRS widths, template correlation and RMS difference.
N_SHAPE_TERMS = 4


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of the beat networks; plain types, stored in checkpoints.

    Attributes
    ----------
    n_leads : int
        Leads of the input (lead 0 MLII, lead 1 the second lead).
    fs : float
        The model's sampling rate in Hz; the dilations follow from it.
    n_window : int
        Beat window length in samples.
    n_classes : int
        AAMI classes (N, S, V, F, Q).
    horizons : tuple of int
        Early-alarm horizons in beats (eq. 16).
    use_post_rr : bool
        Read the next RR interval (one beat of delay) or stay strictly causal.
    kernel_size : int
        Taps of each dilated branch kernel.
    p_wave_s, qrs_s, t_wave_s : float
        Receptive fields of the three branches in seconds (eq. 12).
    branch_channels : int
        Output channels of each branch.
    conv_channels : int
        Channels of the two convolution blocks after the branches.
    pool : int
        Max-pooling factor after the branches.
    pool_bins : int
        Bins of the average pooling that ends the convolutions (eq. 14):
        1, the paper's global average pooling, keeps what patterns the beat
        holds and drops where they are; ``k`` averages ``k`` consecutive
        stretches of the window (adaptive average pooling), so the features
        also say whether a pattern comes before, at or after the R peak
        (``k * conv_channels`` features).
    hidden : int
        LSTM (or per-beat MLP) width.
    dropout : float
        Dropout probability.
    seq_len : int
        Beats of history the sequence models see (training sequence length
        and the inference context).
    rr_mode : str
        ``raw``: the RR columns as given (seconds and ratios); ``relative``:
        log ratios to the stream's own rhythm only (:class:`RRInputs`).
    rr_ratio_scale : float
        Factor on the log ratios of ``relative`` mode, so that a 10 %
        premature beat moves its feature by about 0.5, the scale of the
        convolutional features it is concatenated with.
    context_contrast : bool
        Feed the LSTM each beat's features minus their running mean over
        the beat's context as well (:meth:`CNNLSTM.sequence`).
    rr_rate : bool
        ``relative`` mode only: one absolute term besides the ratios, the
        log of the local RR interval (mean of the last 10) over
        :data:`RATE_REF_S`, so that a run of beats judged against a long-run
        mean can be told apart by its rate: a supraventricular tachycardia
        (local RR 0.4 s) from normal beats after a slow stretch (0.96 s).
    rr_skip : bool
        Give the heads the beat's own RR ratios directly, beside the
        sequence state: ``[s_t; r_t; r_t**2 / 2]`` with ``r_t`` the scaled
        log ratios of ``relative`` mode (which it requires). A premature
        beat (the defining trait of an SVEB) then moves the class logits
        through a quadratic function of its ratios on a path that bypasses
        the LSTM and its dropout (:meth:`BeatSequenceModel.temporal`).
    rr_irregularity : bool
        With ``rr_skip``, the heads also read the irregularity of the
        rhythm over the beat's context, ``i_t = mean |r_k - r_(k-1)|`` of
        the first ratio (``log(pre_rr / local_rr)``, scaled) over the
        context's beats up to ``t``, and its products with the beat's
        ratios ``i_t * r_t``: in atrial fibrillation every beat looks
        premature to a ratio rule, but the irregularity gives it away.
    shape_skip : bool
        With ``rr_skip``, the heads also read four hand-measured, patient-
        relative shape terms of each beat (:func:`shape_terms`): two QRS
        widths (what separates a wide ventricular beat from a narrow
        supraventricular one in any patient) and the beat's correlation and
        relative RMS difference with the median of the beats before it in
        its context (does it look like this patient's usual beat, whatever
        that is), with their products with the prematurity ``r_t[0]`` and
        their squares. Measured on the lead-fused window, not learnt.
    r_position : float
        Share of the window before the R peak
        (:attr:`model.data.PreprocessConfig.pre_fraction`); where
        :func:`shape_payload` looks for the QRS complex.
    morphology_dropout : float
        In training, the probability that a beat's convolutional features
        (the pooled morphology of eq. 14) are zeroed as a whole, leaving the
        beat its RR features and its context. Without it the network can
        separate the training patients' S beats by their shape alone and
        learns little of what carries over to new patients, the prematurity
        of the beat. 0.5 in the shipped model; no effect at inference.
    class_offsets : tuple of float
        Added to the class logits (one per class) after training, chosen on
        the validation records (:func:`model.training.calibrate_class_offsets`);
        empty for none. They move the decision thresholds between classes,
        not the probabilities' ranking within a class.
    """

    n_leads: int = 2
    fs: float = 180.0
    n_window: int = 130
    n_classes: int = 5
    horizons: tuple[int, ...] = (1, 2, 3)
    use_post_rr: bool = True
    kernel_size: int = 7
    p_wave_s: float = 0.11
    qrs_s: float = 0.08
    t_wave_s: float = 0.20
    branch_channels: int = 12
    conv_channels: int = 32
    pool: int = 3
    pool_bins: int = 1
    hidden: int = 64
    dropout: float = 0.3
    seq_len: int = 16
    rr_mode: str = "raw"
    rr_ratio_scale: float = 5.0
    rr_rate: bool = False
    context_contrast: bool = False
    rr_skip: bool = False
    rr_irregularity: bool = False
    shape_skip: bool = False
    r_position: float = 0.4
    morphology_dropout: float = 0.0
    class_offsets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.rr_mode not in RR_MODES:
            raise ValueError(f"`rr_mode` must be one of {RR_MODES}, got {self.rr_mode!r}")
        if self.rr_rate and self.rr_mode != "relative":
            raise ValueError(f"`rr_rate` needs `rr_mode='relative'`, got {self.rr_mode!r}")
        if self.rr_skip and self.rr_mode != "relative":
            raise ValueError(f"`rr_skip` needs `rr_mode='relative'`, got {self.rr_mode!r}")
        if self.rr_irregularity and not self.rr_skip:
            raise ValueError("`rr_irregularity` needs `rr_skip`")
        if self.shape_skip and not self.rr_skip:
            raise ValueError("`shape_skip` needs `rr_skip`")
        if self.pool_bins < 1:
            raise ValueError(f"`pool_bins` must be >= 1, got {self.pool_bins}")
        if not 0.0 < self.r_position < 1.0:
            raise ValueError(f"`r_position` must be in (0, 1), got {self.r_position}")
        if not 0.0 <= self.morphology_dropout < 1.0:
            raise ValueError(f"`morphology_dropout` must be in [0, 1), got {self.morphology_dropout}")
        if self.class_offsets and len(self.class_offsets) != self.n_classes:
            raise ValueError(
                f"`class_offsets` must have one value per class ({self.n_classes}), "
                f"got {len(self.class_offsets)}"
            )

    @property
    def rr_columns(self) -> tuple[int, ...]:
        """Columns of the seven RR features the model reads."""
        return rr_columns(use_post_rr=self.use_post_rr)

    @property
    def n_rr_ratios(self) -> int:
        """Log ratios (and the rate term) of ``relative`` mode (:class:`RRInputs`)."""
        return (5 if self.use_post_rr else 3) + (1 if self.rr_rate else 0)

    @property
    def shape_segment(self) -> tuple[int, int]:
        """Window samples ``[start, stop)`` that :func:`shape_payload` keeps: R - 0.15 s to R + 0.25 s."""
        r = round(self.r_position * self.n_window)
        before, after = round(SHAPE_BEFORE_S * self.fs), round(SHAPE_AFTER_S * self.fs)
        return max(0, r - before), min(self.n_window, r + after)

    @property
    def n_payload(self) -> int:
        """Columns the encoders append for :func:`shape_terms` (0 without ``shape_skip``)."""
        if not self.shape_skip:
            return 0
        start, stop = self.shape_segment
        return 1 + stop - start

    @property
    def head_features(self) -> int:
        """Width of what the heads read: the sequence state, and with ``rr_skip`` the RR terms."""
        r = self.n_rr_ratios
        return (
            self.hidden
            + (2 * r if self.rr_skip else 0)
            + (1 + r if self.rr_irregularity else 0)
            + (3 * N_SHAPE_TERMS if self.shape_skip else 0)
        )

    def to_dict(self) -> dict[str, object]:
        """Plain-type form for checkpoints."""
        d = asdict(self)
        d["horizons"] = list(self.horizons)
        d["class_offsets"] = list(self.class_offsets)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        kw = dict(d)
        if "horizons" in kw:
            kw["horizons"] = tuple(int(h) for h in kw["horizons"])  # type: ignore[attr-defined]
        if "class_offsets" in kw:
            kw["class_offsets"] = tuple(float(v) for v in kw["class_offsets"])  # type: ignore[attr-defined]
        return cls(**kw)  # type: ignore[arg-type]


def shape_payload(z: Tensor, config: ModelConfig) -> Tensor:
    """What :func:`shape_terms` needs of each beat: the window's median and the segment around R.

    ``z`` (B, T, W), the lead-fused windows -> (B, T, :attr:`ModelConfig.n_payload`). Per beat,
    so the inference code can encode each beat once; the terms that compare
    a beat with its context are computed over the context by :func:`shape_terms`.
    """
    start, stop = config.shape_segment
    baseline = z.median(dim=-1, keepdim=True).values  # (B, T, 1)
    return torch.cat([baseline, z[..., start:stop]], dim=-1).detach()


def shape_terms(payload: Tensor, fs: float, *, last_only: bool = False) -> Tensor:
    """Four hand-measured shape terms (B, T, 4) of each beat from :func:`shape_payload` (B, T, 1 + S).

    With ``last_only`` the terms of the last beat alone (B, 1, 4), against
    the median of all the beats before it: one median instead of ``T - 1``.

    * the active QRS width: the time within R - 0.15 s .. R + 0.25 s that the
      slope exceeds a quarter of its largest value;
    * the equivalent width: the area of ``|x - median|`` over the segment
      divided by its peak, in seconds;
    * ``atanh`` of the correlation of the segment with the sample-wise median
      of the segments of the beats before it in the sequence (the first beat
      is compared with itself);
    * the log RMS of the difference from that template, relative to the
      template's RMS.

    Widths enter as ``2 log(width / 0.1 s)``, so a normal QRS sits near 0
    and a wide one (> 0.12 s) above. The median template is the beats'
    usual shape even when a third of them are ectopic, and it is the
    patient's own, so a beat unlike it stands out in any patient.
    """
    t = payload.shape[1]
    if last_only:
        earlier = payload[:, : max(t - 1, 1), 1:]  # the first beat has no earlier beat: itself
        template = lower_median(earlier, dim=1)[:, None]  # (B, 1, S)
        payload = payload[:, -1:]
    else:
        seg = payload[..., 1:]
        templates = [seg[:, :1]]  # the first beat has no earlier beat: itself
        templates += [lower_median(seg[:, :k], dim=1)[:, None] for k in range(1, t)]
        template = torch.cat(templates, dim=1)  # (B, T, S), from beats before t only
    baseline, seg = payload[..., :1], payload[..., 1:]  # (B, T, 1), (B, T, S)
    slope = (seg[..., 1:] - seg[..., :-1]).abs()
    active = (slope > 0.25 * slope.amax(dim=-1, keepdim=True)).sum(dim=-1).to(seg.dtype) / fs
    dev = (seg - baseline).abs()
    equivalent = dev.sum(dim=-1) / dev.amax(dim=-1).clamp(min=1e-6) / fs
    a = seg - seg.mean(dim=-1, keepdim=True)
    b = template - template.mean(dim=-1, keepdim=True)
    corr = (a * b).sum(dim=-1) / ((a * a).sum(dim=-1) * (b * b).sum(dim=-1)).clamp(min=1e-12).sqrt()
    rms = ((seg - template) ** 2).mean(dim=-1) / (template**2).mean(dim=-1).clamp(min=1e-9)
    return torch.stack(
        [
            2 * torch.log(active.clamp(min=1.0 / fs) / 0.1),
            2 * torch.log(equivalent.clamp(min=1.0 / fs) / 0.1),
            torch.atanh(corr.clamp(-0.999, 0.999)),
            0.5 * torch.log(rms + 1e-6),
        ],
        dim=-1,
    )


#: Below this many values the sorting network's per-operation overhead outweighs
#: its speed (one beat of a live stream): :func:`lower_median` calls ``median``.
_NETWORK_MIN_NUMEL = 16384


def lower_median(x: Tensor, dim: int) -> Tensor:
    """``x.median(dim).values`` (the lower median for an even count), faster for short ``dim``.

    Without gradients, the values along ``dim`` go through the part of a
    Batcher odd-even merge sorting network (padded with +inf to a power of
    two) that the median depends on, element-wise minima and maxima,
    which on a CPU is several times
    faster than :meth:`torch.Tensor.median` over the 15 earlier beats of
    a context; the result is the same element, bit for bit. With gradients,
    or for a small tensor (one beat of a stream), it is
    :meth:`torch.Tensor.median` itself.
    """
    k = x.shape[dim]
    if k == 0:
        raise ValueError("median of an empty dimension")
    if (x.requires_grad and torch.is_grad_enabled()) or x.numel() < _NETWORK_MIN_NUMEL:
        return x.median(dim=dim).values
    n = 1 << (k - 1).bit_length()
    items = list(x.unbind(dim))
    items += [torch.full_like(items[0], float("inf"))] * (n - k)
    for i, j in _median_pairs(n, (k - 1) // 2):
        items[i], items[j] = torch.minimum(items[i], items[j]), torch.maximum(items[i], items[j])
    return items[(k - 1) // 2]


@cache
def _median_pairs(n: int, rank: int) -> tuple[tuple[int, int], ...]:
    """The compare-exchanges of :func:`_batcher_pairs` that output ``rank`` depends on."""
    needed, kept = {rank}, []
    for i, j in reversed(_batcher_pairs(n)):
        if i in needed or j in needed:
            kept.append((i, j))
            needed |= {i, j}
    return tuple(reversed(kept))


@cache
def _batcher_pairs(n: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs of Batcher's odd-even merge sort of ``n`` (a power of two) values."""
    pairs = []
    p = 1
    while p < n:
        k = p
        while k >= 1:
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple(pairs)


class ModelOutput(NamedTuple):
    """What every beat network returns.

    Attributes
    ----------
    class_logits : Tensor, shape (B, T, C)
        AAMI class logits of each beat.
    abnormal_logit : Tensor, shape (B, T)
        Logit of "beat is not N".
    early_logits : Tensor, shape (B, T, H, C)
        Class logits of beat ``t + h`` for each horizon.
    """

    class_logits: Tensor
    abnormal_logit: Tensor
    early_logits: Tensor


def dilation_for(duration_s: float, fs: float, kernel_size: int) -> int:
    """Dilation that gives a ``kernel_size`` kernel a receptive field of ``duration_s``.

    The receptive field of a dilated kernel is ``(k - 1) * d + 1`` samples;
    ``d`` is the nearest integer (at least 1) that makes it ``duration_s * fs``.

    Examples
    --------
    >>> dilation_for(0.08, 360.0, 7), dilation_for(0.08, 180.0, 7)
    (5, 2)
    """
    if duration_s <= 0 or fs <= 0 or kernel_size < 2:
        raise ValueError(
            "need positive `duration_s` and `fs` and `kernel_size` >= 2, "
            f"got {duration_s}, {fs}, {kernel_size}"
        )
    return max(1, round((duration_s * fs - 1) / (kernel_size - 1)))


class LeadAttention(nn.Module):
    """Softmax-normalised learned lead weights, eq. 11: ``z = sum_l a_l x^(l)``."""

    def __init__(self, n_leads: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(n_leads))

    def weights(self, lead_mask: Tensor | None = None) -> Tensor:
        """Lead weights ``a``, shape (L,) or (B, L) with a mask; masked leads get 0."""
        if lead_mask is None:
            return torch.softmax(self.logits, dim=0)
        scores = self.logits.expand(lead_mask.shape).masked_fill(~lead_mask, float("-inf"))  # (B, L)
        return torch.softmax(scores, dim=-1)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Fuse ``x`` (B, T, L, W) into (B, T, W); ``lead_mask`` (B, L) marks present leads."""
        a = self.weights(lead_mask)
        if a.dim() == 1:
            return torch.einsum("btlw,l->btw", x, a)
        return torch.einsum("btlw,bl->btw", x, a)


class RRInputs(nn.Module):
    """The RR part of eq. 14: the raw columns, or log ratios to the stream's rhythm.

    ``raw`` passes the columns of :attr:`ModelConfig.rr_columns` through.
    ``relative`` computes, from the same seven input columns,

    * ``log(pre_rr / local_rr)``, ``log(pre_rr / mean_rr)``,
      ``log(local_rr / mean_rr)``, and with ``use_post_rr``
    * ``log(post_rr / pre_rr)``, ``log(post_rr / local_rr)``, and with ``rr_rate``
    * ``log(local_rr / RATE_REF_S)``,

    each clipped to ``[-2, 2]`` (a missed or spurious beat) and multiplied by
    ``rr_ratio_scale``. Absolute intervals, which differ between patients
    more than between beat classes, are left out: prematurity and the
    compensatory pause are judged against the patient's own rhythm, which is
    what inter-patient SVEB detection hinges on [3]_. The inputs of the
    network (and so of the inference API and the live pipeline) are
    unchanged; the ratios are derived inside it.
    """

    rr_index: Tensor

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mode = config.rr_mode
        self.scale = float(config.rr_ratio_scale)
        self.use_post_rr = config.use_post_rr
        self.rate = config.rr_rate
        self.register_buffer("rr_index", torch.tensor(config.rr_columns, dtype=torch.long), persistent=False)
        if self.mode == "raw":
            self.out_features = len(config.rr_columns)
        else:
            self.out_features = config.n_rr_ratios

    def forward(self, rr: Tensor) -> Tensor:
        """``rr`` (..., 7), columns :data:`sigproc.beats.RR_FEATURE_NAMES` -> (..., out_features)."""
        if self.mode == "raw":
            return rr.index_select(-1, self.rr_index)
        iv = rr[..., :4].clamp(min=1e-3)
        pre, post, local, mean = iv.unbind(-1)
        ratios = [pre / local, pre / mean, local / mean]
        if self.use_post_rr:
            ratios += [post / pre, post / local]
        if self.rate:
            ratios.append(local / RATE_REF_S)
        return torch.stack(ratios, dim=-1).log().clamp(-2.0, 2.0) * self.scale  # (..., R)


class MultiScaleBeatEncoder(nn.Module):
    """Eqs. 11-14: lead attention, dilated P/QRS/T branches, conv blocks, GAP, RR concat."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c = config
        self.config = c
        self.attention = LeadAttention(c.n_leads)
        self.dilations = tuple(
            dilation_for(s, c.fs, c.kernel_size) for s in (c.p_wave_s, c.qrs_s, c.t_wave_s)
        )
        self.branches = nn.ModuleList(
            nn.Conv1d(1, c.branch_channels, c.kernel_size, dilation=d, padding=d * (c.kernel_size - 1) // 2)
            for d in self.dilations
        )
        width = 3 * c.branch_channels
        self.post_branch = nn.Sequential(
            nn.BatchNorm1d(width), nn.ReLU(), nn.MaxPool1d(c.pool), nn.Dropout(c.dropout)
        )
        self.blocks = nn.Sequential(
            nn.Conv1d(width, c.conv_channels, 5, padding=2),
            nn.BatchNorm1d(c.conv_channels),
            nn.ReLU(),
            nn.MaxPool1d(2),
            nn.Dropout(c.dropout),
            nn.Conv1d(c.conv_channels, c.conv_channels, 3, padding=1),
            nn.BatchNorm1d(c.conv_channels),
            nn.ReLU(),
        )
        self.rr_inputs = RRInputs(c)
        #: What the sequence model reads; :attr:`ModelConfig.n_payload` more columns follow.
        self.out_features = c.conv_channels * c.pool_bins + self.rr_inputs.out_features
        self._fused: tuple[list[nn.Conv1d], nn.Conv1d, nn.Conv1d] | None = None

    @property
    def qrs_branch(self) -> nn.Conv1d:
        """The branch whose receptive field matches the QRS complex."""
        conv = self.branches[1]
        assert isinstance(conv, nn.Conv1d)  # for the type checker; built above
        return conv

    def forward(self, windows: Tensor, rr: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """``windows`` (B, T, L, W), ``rr`` (B, T, 7) -> beat features (B, T, D)."""
        b, t, _, w = windows.shape
        z = self.attention(windows, lead_mask).reshape(b * t, 1, w)  # (B*T, 1, W)
        if self._fused is not None and not self.training:
            f = self._fused_features(z)
        else:
            f = torch.cat([branch(z) for branch in self.branches], dim=1)  # (B*T, 3C, W)
            f = self.blocks(self.post_branch(f))  # (B*T, C2, W')
        if self.config.pool_bins == 1:
            g = f.mean(dim=-1).reshape(b, t, -1)  # (B, T, C2), global average pooling
        else:  # (B, T, C2 * bins), channel-major
            g = nn.functional.adaptive_avg_pool1d(f, self.config.pool_bins).reshape(b, t, -1)
        p = self.config.morphology_dropout
        if self.training and p > 0:  # whole beats lose their morphology, not single features
            g = g * (torch.rand(b, t, 1, device=g.device) >= p).to(g.dtype) / (1.0 - p)
        parts = [g, self.rr_inputs(rr)]  # eq. 14
        if self.config.shape_skip:
            parts.append(shape_payload(z.reshape(b, t, w), self.config))
        return torch.cat(parts, dim=-1)  # (B, T, D + n_payload)

    def fuse(self) -> None:
        """Fold the batch norms into the convolutions for faster inference.

        Only the eval-mode forward pass uses the folded copies; the
        parameters and the state dict are untouched, and switching back to
        training mode drops the copies. In eval mode ReLU and max pooling
        commute, so pooling runs first on the smaller tensor.
        """
        bn0, conv2, bn2, conv3, bn3 = (
            self.post_branch[0],
            self.blocks[0],
            self.blocks[1],
            self.blocks[5],
            self.blocks[6],
        )
        scale0, shift0 = _bn_affine(bn0)  # type: ignore[arg-type]
        c = self.config.branch_channels
        branches = []
        for i, conv in enumerate(self.branches):
            sl = slice(i * c, (i + 1) * c)
            branches.append(_fold(conv, scale0[sl], shift0[sl]))  # type: ignore[arg-type]
        self._fused = (branches, _fold(conv2, *_bn_affine(bn2)), _fold(conv3, *_bn_affine(bn3)))  # type: ignore[arg-type]

    def train(self, mode: bool = True) -> MultiScaleBeatEncoder:
        if mode:
            self._fused = None
        super().train(mode)
        return self

    def _fused_features(self, z: Tensor) -> Tensor:
        assert self._fused is not None  # checked by the caller
        branches, conv2, conv3 = self._fused
        pool = self.config.pool
        f = torch.cat([br(z) for br in branches], dim=1)  # (B*T, 3C, W)
        f = torch.relu(torch.nn.functional.max_pool1d(f, pool))
        f = torch.relu(torch.nn.functional.max_pool1d(conv2(f), 2))
        return torch.relu(conv3(f))  # (B*T, C2, W')


def _bn_affine(bn: nn.BatchNorm1d) -> tuple[Tensor, Tensor]:
    """Per-channel ``scale, shift`` of an eval-mode batch norm."""
    assert bn.running_var is not None  # track_running_stats is on
    assert bn.running_mean is not None
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return scale.detach(), (bn.bias - bn.running_mean * scale).detach()


def _fold(conv: nn.Conv1d, scale: Tensor, shift: Tensor) -> nn.Conv1d:
    """A copy of ``conv`` followed by the per-channel affine map ``scale * y + shift``."""
    fused = nn.Conv1d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size[0],
        dilation=conv.dilation[0],
        padding=conv.padding[0],
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight * scale[:, None, None])
        bias = conv.bias if conv.bias is not None else torch.zeros_like(scale)
        assert fused.bias is not None  # built with bias=True
        fused.bias.copy_(bias * scale + shift)
    return fused.eval().requires_grad_(False)


class BeatSequenceModel(nn.Module):
    """Base of the registered beat networks: ``encode`` -> ``temporal`` -> ``heads``.

    Subclasses set ``self.encoder`` (per-beat features) and implement
    :meth:`temporal`. Splitting the forward pass this way lets the inference
    code encode each beat once and rerun only the cheap temporal part over a
    sliding context of beats.
    """

    config: ModelConfig
    encoder: nn.Module

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.lstm: nn.LSTM | None = None
        self.config = config
        self.drop = nn.Dropout(config.dropout)
        h, c = config.head_features, config.n_classes
        self.class_head = nn.Linear(h, c)
        self.abnormal_head = nn.Linear(h, 1)
        self.early_head = nn.Linear(h, len(config.horizons) * c)

    def encode(self, windows: Tensor, rr: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Per-beat features (B, T, D) from ``windows`` (B, T, L, W) and ``rr`` (B, T, 7)."""
        out: Tensor = self.encoder(windows, rr, lead_mask)
        return out

    def temporal(
        self, features: Tensor, state: LSTMState | None = None, *, last_only: bool = False
    ) -> tuple[Tensor, LSTMState | None]:
        """What the heads read (B, T, :attr:`ModelConfig.head_features`) from features (B, T, D).

        The sequence state of :meth:`sequence` and, with ``rr_skip``, the
        beat's own RR ratios and their squares (with ``rr_irregularity``
        the context's irregularity and its products with the ratios, with
        ``shape_skip`` the :func:`shape_terms`, their products with the
        prematurity and their squares); the carried state is the sequence
        model's alone, so the stateful call is unchanged. Like the context
        contrast, the irregularity and the shape template start at the
        first beat of ``features``, which every caller makes the beat's
        whole context. With ``last_only`` only the last beat's row is
        returned (B, 1, H), equal to the last row of the full output: the
        sliding-context callers need no more, and the shape template of
        every other beat is the costly part.
        """
        n_payload = self.config.n_payload
        payload = features[..., -n_payload:] if n_payload else None
        if payload is not None:
            features = features[..., :-n_payload]
        s, new_state = self.sequence(features, state)  # (B, T, hidden)
        if self.config.rr_skip:
            r = features[..., -self.config.n_rr_ratios :]  # the encoders put the RR inputs last
            terms = [r, r * r / 2]
            if self.config.rr_irregularity:
                step = (r[:, 1:, :1] - r[:, :-1, :1]).abs()  # (B, T-1, 1)
                step = torch.cat([torch.zeros_like(r[:, :1, :1]), step], dim=1)  # (B, T, 1)
                n = torch.arange(r.shape[1], device=r.device, dtype=r.dtype).clamp(min=1)
                irregularity = step.cumsum(dim=1) / n[None, :, None]  # (B, T, 1)
                terms += [irregularity, irregularity * r]
            if last_only:
                s, r, terms = s[:, -1:], r[:, -1:], [t[:, -1:] for t in terms]
            if payload is not None:
                m = shape_terms(payload, self.config.fs, last_only=last_only)  # (B, T or 1, 4)
                terms += [m, m * r[..., :1], m * m / 2]
            s = torch.cat([s, *terms], dim=-1)
        elif last_only:
            s = s[:, -1:]
        return s, new_state

    def sequence(self, features: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState | None]:
        """Beat-sequence states (B, T, hidden) from features (B, T, D): the LSTM of eq. 15."""
        if self.lstm is None:
            raise NotImplementedError(f"{type(self).__name__} has no LSTM and must override `sequence`")
        s, new_state = self.lstm(features, state)  # (B, T, hidden)
        return s, new_state

    def heads(self, s: Tensor) -> ModelOutput:
        """Eq. 16: class, abnormal and early-alarm logits from :meth:`temporal`'s output (B, T, H)."""
        h = self.config.hidden
        s = self.drop(s) if s.shape[-1] == h else torch.cat([self.drop(s[..., :h]), s[..., h:]], dim=-1)
        b, t, _ = s.shape
        early = self.early_head(s).reshape(b, t, len(self.config.horizons), self.config.n_classes)
        logits = self.class_head(s)  # (B, T, C)
        if self.config.class_offsets:
            logits = logits + torch.tensor(
                self.config.class_offsets, dtype=logits.dtype, device=logits.device
            )
        return ModelOutput(logits, self.abnormal_head(s).squeeze(-1), early)

    def qrs_kernels(self) -> Tensor | None:
        """Kernels the morphology regulariser acts on (eq. 13), or None without convolutions."""
        if isinstance(self.encoder, MultiScaleBeatEncoder):
            return self.encoder.qrs_branch.weight  # (C, 1, K)
        return None

    def forward(self, windows: Tensor, rr: Tensor, lead_mask: Tensor | None = None) -> ModelOutput:
        """Classify every beat of ``windows`` (B, T, L, W) with RR features ``rr`` (B, T, 7).

        ``lead_mask`` (B, L), bool, marks the leads present (default: all).
        """
        s, _ = self.temporal(self.encode(windows, rr, lead_mask))
        return self.heads(s)


class CNNLSTM(BeatSequenceModel):
    """The paper's CNN-LSTM: :class:`MultiScaleBeatEncoder` + LSTM over beats (eq. 15).

    Parameters
    ----------
    config : ModelConfig
        Hyper-parameters.

    Examples
    --------
    >>> net = CNNLSTM(ModelConfig())
    >>> out = net(torch.zeros(2, 16, 2, 130), torch.ones(2, 16, 7))
    >>> tuple(out.class_logits.shape), tuple(out.early_logits.shape)
    ((2, 16, 5), (2, 16, 3, 5))
    """

    def __init__(self, config: ModelConfig) -> None:
        encoder = MultiScaleBeatEncoder(config)
        super().__init__(config)
        self.encoder = encoder
        n_in = encoder.out_features * (2 if config.context_contrast else 1)
        self.lstm = nn.LSTM(n_in, config.hidden, batch_first=True)

    def sequence(self, features: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState | None]:
        """Eq. 15 over features (B, T, D); with ``context_contrast`` over ``[h_t, h_t - mean(h_1..h_t)]``.

        The running mean starts at the first beat of ``features``: every
        caller (training sequences, the sliding inference context, the live
        pipeline) passes the beat's whole context, so the contrast is the
        same causal quantity everywhere. A beat whose shape departs from the
        beats around it (an ectopic beat in a patient's own rhythm) stands
        out whatever the patient's usual morphology.
        """
        if self.config.context_contrast:
            steps = torch.arange(1, features.shape[1] + 1, device=features.device, dtype=features.dtype)
            running = features.cumsum(dim=1) / steps[None, :, None]  # (B, T, D)
            features = torch.cat([features, features - running], dim=-1)  # (B, T, 2D)
        return super().sequence(features, state)
