"""The two baselines of the paper's Table 3: CNN-only and LSTM-only.

Both keep the interface of :class:`model.cnn_lstm.CNNLSTM` (same inputs,
same three heads, same loss) so that the comparison isolates the part each
one lacks:

* :class:`CNNOnly` has the multi-scale convolutional beat encoder and RR
  conditioning (eqs. 11-14) but no memory of earlier beats: a per-beat MLP
  replaces the LSTM, and its early-alarm heads see beat ``t`` alone.
* :class:`LSTMOnly` has the LSTM over beats (eq. 15) but no convolutions:
  each beat enters as its lead-fused window, average-pooled to a coarse
  shape vector and linearly projected, concatenated with its RR features.

References
----------
.. [1] Ronihal et al. AI-driven IoT framework for advanced cardiac monitoring
   and analysis. Ingénierie des Systèmes d'Information 30(7), 2025.
   doi:10.18280/isi.300713
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.cnn_lstm import (
    BeatSequenceModel,
    LeadAttention,
    LSTMState,
    ModelConfig,
    MultiScaleBeatEncoder,
    RRInputs,
    shape_payload,
)

__all__ = ["CNNOnly", "LSTMOnly", "RawBeatEncoder"]


class CNNOnly(BeatSequenceModel):
    """Convolutional beat encoder + per-beat MLP; no temporal context."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = MultiScaleBeatEncoder(config)
        super().__init__(config)
        self.encoder = encoder
        self.mlp = nn.Sequential(nn.Linear(encoder.out_features, config.hidden), nn.ReLU())

    def sequence(self, features: Tensor, state: LSTMState | None = None) -> tuple[Tensor, LSTMState | None]:
        return self.mlp(features), None  # (B, T, hidden)


class RawBeatEncoder(nn.Module):
    """Lead attention, average pooling to ``n_window / 4`` samples, a linear map, RR concat."""

    def __init__(self, config: ModelConfig, pool: int = 4) -> None:
        super().__init__()
        self.attention = LeadAttention(config.n_leads)
        self.pool = nn.AvgPool1d(pool, ceil_mode=True)
        n_pooled = -(-config.n_window // pool)
        self.project = nn.Sequential(
            nn.Linear(n_pooled, config.hidden), nn.ReLU(), nn.Dropout(config.dropout)
        )
        self.rr_inputs = RRInputs(config)
        self.config = config
        #: What the sequence model reads; :attr:`ModelConfig.n_payload` more columns follow.
        self.out_features = config.hidden + self.rr_inputs.out_features

    def forward(self, windows: Tensor, rr: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """``windows`` (B, T, L, W), ``rr`` (B, T, 7) -> (B, T, D + n_payload)."""
        b, t, _, w = windows.shape
        fused = self.attention(windows, lead_mask)  # (B, T, W)
        z = self.pool(fused.reshape(b * t, 1, w)).reshape(b, t, -1)  # (B, T, W/4)
        parts = [self.project(z), self.rr_inputs(rr)]
        if self.config.shape_skip:
            parts.append(shape_payload(fused, self.config))
        return torch.cat(parts, dim=-1)


class LSTMOnly(BeatSequenceModel):
    """LSTM over beats fed with coarse raw beat shapes; no convolutions."""

    def __init__(self, config: ModelConfig) -> None:
        encoder = RawBeatEncoder(config)
        super().__init__(config)
        self.encoder = encoder
        self.lstm = nn.LSTM(encoder.out_features, config.hidden, batch_first=True)
