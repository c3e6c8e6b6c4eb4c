"""Every registered network: documented shapes, NaN-free, gradients reach every parameter."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from model.cnn_lstm import (
    CNNLSTM,
    LeadAttention,
    ModelConfig,
    MultiScaleBeatEncoder,
    RRInputs,
    dilation_for,
    lower_median,
    shape_payload,
    shape_terms,
)
from model.registry import MODEL_ALIASES, get_model, list_models


class TestRegistry:
    def test_basic(self) -> None:
        assert list_models() == ["cnn_lstm", "cnn", "lstm"]
        assert isinstance(get_model("CNN+LSTM"), CNNLSTM)

    def test_edge_cases(self) -> None:
        for alias, name in MODEL_ALIASES.items():
            assert type(get_model(alias)) is type(get_model(name))
        assert get_model("cnn", hidden=16).config.hidden == 16

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="unknown model 'resnet'"):
            get_model("resnet")


@pytest.mark.parametrize("name", list_models())
class TestForward:
    def test_shapes_and_finite(self, name: str, tiny_config: ModelConfig) -> None:
        torch.manual_seed(0)
        net = get_model(name, tiny_config)
        x = torch.randn(3, 5, 2, tiny_config.n_window)  # (B, T, L, W)
        rr = torch.rand(3, 5, 7) + 0.5  # (B, T, 7)
        out = net(x, rr)
        assert out.class_logits.shape == (3, 5, 5)
        assert out.abnormal_logit.shape == (3, 5)
        assert out.early_logits.shape == (3, 5, 3, 5)
        for t in out:
            assert torch.isfinite(t).all()

    def test_gradients_flow(self, name: str, tiny_config: ModelConfig) -> None:
        torch.manual_seed(0)
        net = get_model(name, tiny_config)
        out = net(torch.randn(2, 4, 2, tiny_config.n_window), torch.rand(2, 4, 7) + 0.5)
        (out.class_logits.sum() + out.abnormal_logit.sum() + out.early_logits.sum()).backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None, pname
            assert torch.isfinite(p.grad).all(), pname
            assert p.grad.abs().sum() > 0, pname

    def test_single_lead_mask(self, name: str, tiny_config: ModelConfig) -> None:
        torch.manual_seed(0)
        net = get_model(name, tiny_config).eval()
        x = torch.randn(2, 4, 2, tiny_config.n_window)
        rr = torch.rand(2, 4, 7) + 0.5
        mask = torch.tensor([[True, False]] * 2)
        a = net(x, rr, mask).class_logits
        x2 = x.clone()
        x2[:, :, 1] = 1e3  # a masked lead cannot change the output
        assert torch.allclose(a, net(x2, rr, mask).class_logits)

    def test_causal(self, name: str, tiny_config: ModelConfig) -> None:
        """Beat t's outputs do not depend on later beats (the LSTM is unidirectional)."""
        torch.manual_seed(0)
        net = get_model(name, tiny_config).eval()
        x = torch.randn(1, 6, 2, tiny_config.n_window)
        rr = torch.rand(1, 6, 7) + 0.5
        a = net(x, rr).class_logits[:, :3]
        x[:, 3:] = torch.randn(1, 3, 2, tiny_config.n_window)
        rr[:, 3:] = 2.0
        assert torch.allclose(a, net(x, rr).class_logits[:, :3])


class TestPostRRSwitch:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """With ``use_post_rr=False`` the look-ahead columns are ignored."""
        torch.manual_seed(0)
        net = get_model("cnn_lstm", replace(tiny_config, use_post_rr=False)).eval()
        x = torch.randn(1, 4, 2, tiny_config.n_window)
        rr = torch.rand(1, 4, 7) + 0.5
        a = net(x, rr).class_logits
        rr[..., 1] = 9.0  # post_rr
        rr[..., 6] = 9.0  # post_pre_ratio
        assert torch.allclose(a, net(x, rr).class_logits)


class TestRRInputs:
    def test_basic(self) -> None:
        """Relative mode: log ratios of pre, post, local and mean RR, hand-computed."""
        rr_in = RRInputs(ModelConfig(rr_mode="relative", rr_ratio_scale=2.0))
        pre, post, local, mean = 0.6, 1.0, 0.8, 0.9
        rr = torch.tensor([[pre, post, local, mean, pre / local, pre / mean, post / pre]])
        want = 2.0 * torch.log(
            torch.tensor([pre / local, pre / mean, local / mean, post / pre, post / local])
        )
        assert rr_in.out_features == 5
        assert torch.allclose(rr_in(rr), want[None], atol=1e-6)

    def test_rate(self) -> None:
        """``rr_rate`` adds the local interval against 0.8 s, after the ratios; the rest is unchanged."""
        pre, post, local, mean = 0.39, 0.4, 0.4, 0.6  # a supraventricular tachycardia: local 150 bpm
        rr = torch.tensor([[pre, post, local, mean, pre / local, pre / mean, post / pre]])
        plain = RRInputs(ModelConfig(rr_mode="relative"))
        rated = RRInputs(ModelConfig(rr_mode="relative", rr_rate=True))
        assert (
            rated.out_features
            == plain.out_features + 1
            == ModelConfig(rr_mode="relative", rr_rate=True).n_rr_ratios
        )
        out = rated(rr)
        assert torch.allclose(out[:, :-1], plain(rr))
        assert out[0, -1].item() == pytest.approx(5.0 * math.log(0.4 / 0.8), rel=1e-6)
        with pytest.raises(ValueError, match="`rr_rate` needs `rr_mode='relative'`"):
            ModelConfig(rr_rate=True)

    def test_edge_cases(self) -> None:
        rr = torch.tensor([[0.6, 1.0, 0.8, 0.9, 0.75, 0.667, 1.667]])
        raw = RRInputs(ModelConfig())
        assert torch.equal(raw(rr), rr)  # the paper's: the seven columns as given
        causal = RRInputs(ModelConfig(rr_mode="relative", use_post_rr=False))
        assert causal.out_features == 3
        late = rr.clone()
        late[:, 1] = 5.0  # post_rr is never read without the look-ahead
        assert torch.equal(causal(rr), causal(late))
        rr_in = RRInputs(ModelConfig(rr_mode="relative"))
        zero = torch.tensor([[0.0, 1.0, 0.8, 0.8, 0.0, 0.0, 1.0]])  # a degenerate interval: clipped
        out = rr_in(zero)
        assert torch.isfinite(out).all()
        assert out.abs().max() <= 2.0 * ModelConfig().rr_ratio_scale

    def test_patient_rate_invariance(self, tiny_config: ModelConfig) -> None:
        """In relative mode the network cannot tell a slow heart from a fast one with the same rhythm."""
        torch.manual_seed(0)
        net = get_model("cnn_lstm", replace(tiny_config, rr_mode="relative")).eval()
        x = torch.randn(1, 4, 2, tiny_config.n_window)
        rr = torch.rand(1, 4, 7) + 0.5
        slow = rr.clone()
        slow[..., :4] *= 1.4  # every interval longer, every ratio the same
        assert torch.allclose(net(x, rr).class_logits, net(x, slow).class_logits, atol=1e-5)
        raw = get_model("cnn_lstm", tiny_config).eval()
        assert not torch.allclose(raw(x, rr).class_logits, raw(x, slow).class_logits, atol=1e-5)

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="`rr_mode` must be one of"):
            ModelConfig(rr_mode="seconds")


class TestContextContrast:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """The LSTM reads [h_t, h_t - mean(h_1..h_t)], computed here by hand."""
        torch.manual_seed(0)
        net = get_model("cnn_lstm", replace(tiny_config, context_contrast=True)).eval()
        assert isinstance(net, CNNLSTM)
        assert net.lstm is not None
        assert isinstance(net.encoder, MultiScaleBeatEncoder)
        h = torch.randn(2, 3, net.encoder.out_features)
        running = torch.stack([h[:, : t + 1].mean(dim=1) for t in range(3)], dim=1)
        want, _ = net.lstm(torch.cat([h, h - running], dim=-1))
        got, _ = net.temporal(h)
        assert torch.allclose(got, want, atol=1e-6)

    def test_edge_cases(self, tiny_config: ModelConfig) -> None:
        """Still causal: later beats cannot move the running mean of earlier ones; LSTM input doubled."""
        torch.manual_seed(0)
        net = get_model("cnn_lstm", replace(tiny_config, context_contrast=True, rr_mode="relative")).eval()
        x = torch.randn(1, 6, 2, tiny_config.n_window)
        rr = torch.rand(1, 6, 7) + 0.5
        a = net(x, rr).class_logits[:, :3]
        x2, rr2 = x.clone(), rr.clone()
        x2[:, 3:] = torch.randn(1, 3, 2, tiny_config.n_window)
        rr2[:, 3:] = 2.0
        assert torch.allclose(a, net(x2, rr2).class_logits[:, :3])
        assert net.lstm is not None
        assert isinstance(net.encoder, MultiScaleBeatEncoder)
        assert net.lstm.input_size == 2 * net.encoder.out_features


class TestRRSkip:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """The heads read [s_t, r_t, r_t**2 / 2], r_t the scaled log RR ratios, computed here by hand."""
        torch.manual_seed(0)
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True)
        net = get_model("cnn_lstm", cfg).eval()
        assert cfg.head_features == cfg.hidden + 10
        assert net.class_head.in_features == cfg.head_features
        x, rr = torch.randn(2, 5, 2, cfg.n_window), torch.rand(2, 5, 7) + 0.5
        pre, post, local, mean = rr[..., :4].unbind(-1)
        r = torch.stack([pre / local, pre / mean, local / mean, post / pre, post / local], -1).log() * 5.0
        assert net.lstm is not None
        s, _ = net.lstm(net.encode(x, rr))
        want = net.class_head(torch.cat([s, r, r * r / 2], dim=-1))
        assert torch.allclose(net(x, rr).class_logits, want, atol=1e-5)

    @pytest.mark.parametrize("name", list_models())
    def test_edge_cases(self, name: str, tiny_config: ModelConfig) -> None:
        """Every model takes it; dropout spares the RR terms (training logits through them are exact)."""
        torch.manual_seed(0)
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True, use_post_rr=False, dropout=0.9)
        net = get_model(name, cfg).train()
        with torch.no_grad():
            net.class_head.weight[:, : cfg.hidden] = 0.0
        x, rr = torch.randn(2, 5, 2, cfg.n_window), torch.rand(2, 5, 7) + 0.5
        r = net.encode(x, rr)[..., -3:]
        want = net.class_head.bias + torch.cat([r, r * r / 2], -1) @ net.class_head.weight[:, cfg.hidden :].T
        assert torch.allclose(net(x, rr).class_logits, want, atol=1e-5)

    def test_irregularity(self, tiny_config: ModelConfig) -> None:
        """[s, r, r**2/2, i, i*r], i the running mean of |r0_k - r0_(k-1)| over the context, by hand."""
        torch.manual_seed(0)
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True, rr_irregularity=True)
        net = get_model("cnn_lstm", cfg).eval()
        assert cfg.head_features == cfg.hidden + 16
        x = torch.randn(1, 4, 2, cfg.n_window)
        rr = torch.ones(1, 4, 7)
        rr[0, :, 0] = torch.tensor([1.0, 0.5, 1.0, 1.0])  # pre_rr; local and mean stay 1
        r0 = 5.0 * torch.log(rr[0, :, 0])
        want_i = torch.tensor([0.0, abs(float(r0[1])), 2 * abs(float(r0[1])) / 2, 2 * abs(float(r0[1])) / 3])
        got = net.temporal(net.encode(x, rr))[0][0, :, cfg.hidden :]
        r = net.encode(x, rr)[0, :, -5:]
        assert torch.allclose(got[:, 10], want_i, atol=1e-5)
        assert torch.allclose(got[:, 11:], want_i[:, None] * r, atol=1e-5)
        regular = rr.clone()
        regular[0, :, 0] = 1.0
        assert torch.equal(net.temporal(net.encode(x, regular))[0][0, :, cfg.hidden + 10], torch.zeros(4))

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        with pytest.raises(ValueError, match="`rr_skip` needs `rr_mode='relative'`, got 'raw'"):
            replace(tiny_config, rr_skip=True)
        with pytest.raises(ValueError, match="`rr_irregularity` needs `rr_skip`"):
            replace(tiny_config, rr_mode="relative", rr_irregularity=True)


def _triangle() -> torch.Tensor:
    """A 30-sample segment: zero, a triangle rising 0.1 per sample to 1 and falling back, zero."""
    up = torch.arange(1, 11, dtype=torch.float64) / 10  # 0.1 .. 1.0
    zeros = torch.zeros(11, dtype=torch.float64)
    return torch.cat([zeros[:5], up, up.flip(0)[1:], zeros[:6]])


class TestLowerMedian:
    @pytest.mark.parametrize("k", [1, 2, 3, 8, 15, 16, 17])
    def test_equals_torch_median(self, k: int) -> None:
        """The sorting network picks the very element ``median`` picks, ties and even counts included."""
        g = torch.Generator().manual_seed(k)
        for x in (
            torch.randn(400, k, 60, generator=g),
            torch.randint(-2, 3, (400, k, 60), generator=g).float(),
        ):
            assert x.numel() >= 16384  # large enough for the network path
            assert torch.equal(lower_median(x, dim=1), x.median(dim=1).values)
            assert torch.equal(lower_median(x.transpose(1, 2), dim=2), x.median(dim=1).values)

    def test_small_and_gradients(self) -> None:
        x = torch.tensor([[3.0, 1.0, 2.0, 5.0]], requires_grad=True)
        m = lower_median(x, dim=1)  # torch.median: gradient to the chosen element only
        assert m.item() == 2.0
        m.sum().backward()
        assert x.grad is not None
        assert x.grad.tolist() == [[0.0, 0.0, 1.0, 0.0]]
        with pytest.raises(ValueError, match="empty"):
            lower_median(torch.zeros(3, 0), dim=1)


class TestShapeSkip:
    def test_terms_by_hand(self) -> None:
        """Widths of a triangle and the median template of earlier beats, computed by hand at 100 Hz."""
        tri = _triangle()
        seg = torch.stack([tri, tri, -tri, tri])[None]  # (1, 4, 30): beat 2 inverted
        payload = torch.cat([torch.zeros(1, 4, 1, dtype=torch.float64), seg], dim=-1)  # baseline 0
        m = shape_terms(payload, fs=100.0)[0]  # (4, 4)
        # slope 0.1 on 20 of the 29 differences: 0.2 s; area 5.5 + 4.5 over a peak of 1: 0.1 s
        assert torch.allclose(m[:, 0], torch.full((4,), 2 * math.log(2.0), dtype=m.dtype))
        assert torch.allclose(m[:, 1], torch.zeros(4, dtype=m.dtype), atol=1e-9)
        top = torch.atanh(torch.tensor(0.999, dtype=m.dtype))
        # beat 0 against itself, beat 1 against beat 0, beat 3 against median(tri, tri, -tri) = tri
        for i in (0, 1, 3):
            assert torch.isclose(m[i, 2], top)
            assert torch.isclose(m[i, 3], 0.5 * torch.log(torch.tensor(1e-6, dtype=m.dtype)))
        # beat 2 against tri: correlation -1, |(-tri) - tri|^2 / |tri|^2 = 4
        assert torch.isclose(m[2, 2], -top)
        assert torch.isclose(m[2, 3], 0.5 * torch.log(torch.tensor(4 + 1e-6, dtype=m.dtype)))

    def test_basic(self, tiny_config: ModelConfig) -> None:
        """The heads read [s, r, r**2/2, m, m*r0, m**2/2], m the shape terms of the fused window."""
        torch.manual_seed(0)
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True, shape_skip=True)
        net = get_model("cnn_lstm", cfg).eval()
        assert cfg.shape_segment == (7, 31)  # R at 0.4 * 40 = 16; 0.15 s and 0.25 s at 60 Hz
        assert cfg.head_features == cfg.hidden + 10 + 12
        assert net.class_head.in_features == cfg.head_features
        x, rr = torch.randn(2, 5, 2, cfg.n_window), torch.rand(2, 5, 7) + 0.5
        features = net.encode(x, rr)
        assert features.shape[-1] == net.encoder.out_features + cfg.n_payload
        z = net.encoder.attention(x)  # (2, 5, W)
        assert torch.allclose(features[..., -cfg.n_payload :], shape_payload(z, cfg))
        assert torch.allclose(features[..., -cfg.n_payload :][..., 0], z.median(dim=-1).values)
        r = features[..., -cfg.n_payload - 5 : -cfg.n_payload]
        m = shape_terms(features[..., -cfg.n_payload :], cfg.fs)
        assert net.lstm is not None
        s, _ = net.lstm(features[..., : -cfg.n_payload])
        want = net.class_head(torch.cat([s, r, r * r / 2, m, m * r[..., :1], m * m / 2], dim=-1))
        assert torch.allclose(net(x, rr).class_logits, want, atol=1e-5)

    @pytest.mark.parametrize("name", list_models())
    def test_edge_cases(self, name: str, tiny_config: ModelConfig) -> None:
        """Every model takes it, one lead or two; still causal: later beats cannot move earlier outputs."""
        torch.manual_seed(0)
        cfg = replace(tiny_config, rr_mode="relative", rr_skip=True, shape_skip=True, use_post_rr=False)
        net = get_model(name, cfg).eval()
        x, rr = torch.randn(1, 6, 2, cfg.n_window), torch.rand(1, 6, 7) + 0.5
        for mask in (None, torch.tensor([[True, False]])):
            a = net(x, rr, mask).class_logits
            assert torch.isfinite(a).all()
            x2 = x.clone()
            x2[:, 3:] = torch.randn(1, 3, 2, cfg.n_window) * 5
            assert torch.allclose(a[:, :3], net(x2, rr, mask).class_logits[:, :3])
            assert not torch.allclose(a[:, 3:], net(x2, rr, mask).class_logits[:, 3:])

    @pytest.mark.parametrize("name", list_models())
    @pytest.mark.parametrize("switches", ["none", "skip", "all"])
    def test_last_only(self, name: str, switches: str, tiny_config: ModelConfig) -> None:
        """``temporal(last_only=True)`` is the last row of the full output (the sliding-context fast path)."""
        torch.manual_seed(0)
        cfg = tiny_config
        if switches != "none":
            cfg = replace(cfg, rr_mode="relative", rr_skip=True, context_contrast=True)
        if switches == "all":
            cfg = replace(cfg, rr_irregularity=True, shape_skip=True)
        net = get_model(name, cfg).eval()
        for t in (1, 2, 6):
            features = net.encode(torch.randn(3, t, 2, cfg.n_window), torch.rand(3, t, 7) + 0.5)
            full, _ = net.temporal(features)
            last, _ = net.temporal(features, last_only=True)
            assert last.shape == (3, 1, cfg.head_features)
            assert torch.allclose(last, full[:, -1:], atol=1e-6)
        payload = torch.randn(2, 5, 9)
        for t in (1, 5):
            assert torch.allclose(
                shape_terms(payload[:, :t], 60.0, last_only=True), shape_terms(payload[:, :t], 60.0)[:, -1:]
            )

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        with pytest.raises(ValueError, match="`shape_skip` needs `rr_skip`"):
            replace(tiny_config, rr_mode="relative", shape_skip=True)
        with pytest.raises(ValueError, match=r"`r_position` must be in \(0, 1\), got 1.0"):
            replace(tiny_config, r_position=1.0)


class TestMorphologyDropout:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """In training whole beats lose their pooled morphology (scaled survivors); RR stays."""
        torch.manual_seed(0)
        enc = MultiScaleBeatEncoder(replace(tiny_config, morphology_dropout=0.5))
        x, rr = torch.randn(8, 16, 2, tiny_config.n_window), torch.rand(8, 16, 7) + 0.5
        c2 = tiny_config.conv_channels
        dropped = enc.train()(x, rr)
        zero = (dropped[..., :c2] == 0).all(dim=-1)  # (B, T)
        assert 0.3 < float(zero.float().mean()) < 0.7
        assert torch.equal(dropped[..., c2:], rr)  # raw RR columns, untouched
        plain = MultiScaleBeatEncoder(tiny_config)
        plain.load_state_dict(enc.state_dict())
        clean = enc.eval()(x, rr)
        assert torch.equal(clean, plain.eval()(x, rr))  # no effect at inference
        assert not (clean[..., :c2] == 0).all(dim=-1).any()

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        with pytest.raises(ValueError, match=r"`morphology_dropout` must be in \[0, 1\), got 1.0"):
            replace(tiny_config, morphology_dropout=1.0)


class TestPoolBins:
    def test_basic(self, tiny_config: ModelConfig) -> None:
        """``pool_bins=k`` averages k stretches of each channel; their mean is the global average."""
        torch.manual_seed(0)
        x, rr = torch.randn(2, 3, 2, tiny_config.n_window), torch.rand(2, 3, 7) + 0.5
        c2 = tiny_config.conv_channels
        one = MultiScaleBeatEncoder(tiny_config).eval()
        binned = MultiScaleBeatEncoder(replace(tiny_config, pool_bins=2)).eval()
        binned.load_state_dict(one.state_dict())  # same parameters: pooling has none
        assert binned.out_features == one.out_features + c2
        g1, g2 = one(x, rr)[..., :c2], binned(x, rr)[..., : 2 * c2]
        # the convolutions leave an even length here, so the two bins are equal halves
        assert torch.allclose(g2.reshape(2, 3, c2, 2).mean(-1), g1, atol=1e-6)
        assert not torch.allclose(g2[..., 0::2], g2[..., 1::2])  # where a pattern sits now counts
        assert torch.equal(binned(x, rr)[..., 2 * c2 :], rr)

    @pytest.mark.parametrize("name", list_models())
    def test_models(self, name: str, tiny_config: ModelConfig) -> None:
        """Every model runs with binned pooling, in training and fused for inference."""
        net = get_model(name, replace(tiny_config, pool_bins=3))
        x, rr = torch.randn(2, 4, 2, tiny_config.n_window), torch.rand(2, 4, 7) + 0.5
        out = net(x, rr)
        out.class_logits.sum().backward()
        assert out.class_logits.shape == (2, 4, tiny_config.n_classes)
        net.eval()
        plain = net(x, rr).class_logits
        if isinstance(net.encoder, MultiScaleBeatEncoder):
            net.encoder.fuse()
        assert torch.allclose(net(x, rr).class_logits, plain, atol=1e-5)

    def test_exceptions(self, tiny_config: ModelConfig) -> None:
        with pytest.raises(ValueError, match="`pool_bins` must be >= 1, got 0"):
            replace(tiny_config, pool_bins=0)


class TestDilation:
    @pytest.mark.parametrize("fs", [180.0, 250.0, 360.0, 500.0])
    def test_receptive_fields_in_seconds(self, fs: float) -> None:
        k = 7
        for dur in (0.08, 0.11, 0.20):
            d = dilation_for(dur, fs, k)
            rf_s = ((k - 1) * d + 1) / fs
            assert abs(rf_s - dur) <= (k - 1) / (2 * fs) + 1e-9

    def test_edge_cases(self) -> None:
        assert dilation_for(0.001, 360.0, 7) == 1

    def test_exceptions(self) -> None:
        with pytest.raises(ValueError, match="kernel_size"):
            dilation_for(0.1, 360.0, 1)

    def test_model_branches(self) -> None:
        net = CNNLSTM(ModelConfig(fs=360.0, n_window=259))
        enc = net.encoder
        assert enc.dilations == tuple(dilation_for(s, 360.0, 7) for s in (0.11, 0.08, 0.20))
        kernels = net.qrs_kernels()
        assert kernels is not None
        assert kernels.shape == (12, 1, 7)


class TestLeadAttention:
    def test_basic(self) -> None:
        att = LeadAttention(2)
        with torch.no_grad():
            att.logits.copy_(torch.tensor([1.0, 0.0]))
        a = att.weights()
        assert torch.allclose(a.sum(), torch.tensor(1.0))
        assert torch.allclose(a[0], torch.sigmoid(torch.tensor(1.0)))

    def test_edge_cases(self) -> None:
        att = LeadAttention(2)
        x = torch.randn(1, 3, 2, 10)
        fused = att(x, torch.tensor([[True, False]]))
        assert torch.allclose(fused, x[:, :, 0])


class TestFuse:
    @pytest.mark.parametrize("name", ["cnn_lstm", "cnn"])
    def test_basic(self, name: str, tiny_config: ModelConfig) -> None:
        """Folding batch norms for inference changes nothing but speed."""
        torch.manual_seed(0)
        net = get_model(name, tiny_config)
        x, rr = torch.randn(4, 3, 2, tiny_config.n_window), torch.rand(4, 3, 7) + 0.5
        for _ in range(3):  # move the running statistics away from their initial values
            net(x, rr)
        net.eval()
        plain = net(x, rr).class_logits
        assert isinstance(net.encoder, MultiScaleBeatEncoder)
        net.encoder.fuse()
        assert net.encoder._fused is not None
        assert torch.allclose(net(x, rr).class_logits, plain, atol=1e-5)
        net.train()
        assert net.encoder._fused is None

    def test_follows_parameters(self, tiny_config: ModelConfig) -> None:
        """The folded copies take the parameters' dtype and device (a network moved to a GPU, say)."""
        net = get_model("cnn_lstm", tiny_config).double().eval()
        x, rr = torch.randn(2, 3, 2, tiny_config.n_window, dtype=torch.float64), torch.rand(2, 3, 7).double()
        plain = net(x, rr).class_logits
        assert isinstance(net.encoder, MultiScaleBeatEncoder)
        net.encoder.fuse()
        assert net.encoder._fused is not None
        assert net.encoder._fused[1].weight.dtype == torch.float64
        assert torch.allclose(net(x, rr).class_logits, plain)
