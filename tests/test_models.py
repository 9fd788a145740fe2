"""The networks: reference shapes and parameter count, masking invariances, stored standardisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from wav2emo.models import EgemapsMLP, FeVGG, FeVGGEgemaps, LayerWeighted, Standardizer

L_, T_, D_ = 4, 60, 32  # the tiny test backbone: 4 hidden states x 60 frames x 32 dims


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def ssl_batch(b: int = 2, t: int = T_, seed: int = 0, **extra) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"ssl": torch.randn(b, L_, t, D_, generator=g), **extra}


def fitted(module: torch.nn.Module, dim: int = 88, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, Standardizer):
            m.set_stats(torch.randn(dim, generator=g) * 5, torch.rand(dim, generator=g) * 3 + 0.5)
    return module


# FeVGG --------------------------------------------------------------------------------------------------
def test_reference_head_shape_flatten_and_parameter_count():
    torch.manual_seed(0)
    net = FeVGG(head="reference").eval()
    x = torch.randn(2, 12, 263, 768).half()  # the cache stores float16: the net casts it
    with torch.no_grad():
        out = net({"ssl": x})
    assert out.shape == (2, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert net.flat_dim == 192 * 3 * 9 == 5184
    assert net.encoder.fc.in_features == 5184

    # conv3x3 without bias (BatchNorm follows) + BatchNorm (weight, bias) per conv
    def block(cin: int, cout: int, n: int) -> int:
        return cin * cout * 9 + (n - 1) * cout * cout * 9 + n * 2 * cout

    convs = block(12, 24, 2) + block(24, 48, 2) + block(48, 96, 3) + block(96, 192, 3)
    head = (5184 * 64 + 64) + (64 * 8 + 8)
    assert convs == 1_077_696
    assert n_params(net) == convs + head == 1_410_056


@pytest.mark.parametrize(
    ("shape", "pattern"),
    [((1, 12, 200, 768), r"12 x 263 x 768.*got \(12, 200, 768\)"), ((1, 12, 263, 512), "D=768")],
)
def test_reference_head_rejects_other_shapes(shape, pattern):
    net = FeVGG(head="reference")
    with pytest.raises(ValueError, match=pattern):
        net({"ssl": torch.zeros(shape)})


def test_reference_head_rejects_inputs_it_cannot_pool():
    with pytest.raises(ValueError, match="collapses"):
        FeVGG(in_channels=L_, feature_dim=D_, head="reference", input_frames=T_)


def test_unknown_head_is_rejected():
    with pytest.raises(ValueError, match="'flatten'"):
        FeVGG(head="flatten")


def test_adaptive_head_has_reference_parameter_count():
    assert n_params(FeVGG(head="adaptive")) == n_params(FeVGG(head="reference"))


@pytest.mark.parametrize("frames", [40, 100, 263, 400])
def test_adaptive_head_accepts_any_length(frames):
    torch.manual_seed(0)
    net = FeVGG(in_channels=L_, feature_dim=D_, head="adaptive").eval()
    with torch.no_grad():
        out = net(ssl_batch(t=frames))
        emb = net.embed(ssl_batch(t=frames))
    assert out.shape == (2, 8) and torch.isfinite(out).all()
    assert emb.shape == (2, 64) and (emb >= 0).all()  # the embedding is a ReLU output


def test_adaptive_masked_padding_equals_zero_padding():
    torch.manual_seed(0)
    net = FeVGG(in_channels=L_, feature_dim=D_, head="adaptive").eval()
    real = 35
    base = ssl_batch(b=1, t=90)["ssl"]
    zeros, garbage = base.clone(), base.clone()
    zeros[:, :, real:] = 0
    garbage[:, :, real:] = torch.randn_like(garbage[:, :, real:]) * 100
    garbage[0, 1, real + 3, 5] = float("nan")  # must not survive the mask
    mask = torch.zeros(1, 90, dtype=torch.bool)
    mask[:, :real] = True
    with torch.no_grad():
        out_zero = net({"ssl": zeros})
        out_masked = net({"ssl": garbage, "ssl_mask": mask})
        garbage[0, 1, real + 3, 5] = 0.0
        out_unmasked = net({"ssl": garbage})
    torch.testing.assert_close(out_masked, out_zero)
    assert not torch.allclose(out_unmasked, out_zero, atol=1e-4)  # the mask is what made them equal


def test_all_true_mask_equals_no_mask():
    net = FeVGG(in_channels=L_, feature_dim=D_).eval()
    batch = ssl_batch()
    with torch.no_grad():
        a = net(batch)
        b = net({**batch, "ssl_mask": torch.ones(2, T_, dtype=torch.bool)})
    torch.testing.assert_close(a, b)


def test_mask_shape_is_checked():
    net = FeVGG(in_channels=L_, feature_dim=D_)
    with pytest.raises(ValueError, match=r"ssl_mask must have shape \(B, T\)"):
        net(ssl_batch(ssl_mask=torch.ones(2, T_ + 1, dtype=torch.bool)))


# LayerWeighted ------------------------------------------------------------------------------------------
def test_layer_weights_start_equal_and_normalise():
    net = LayerWeighted(in_channels=L_, feature_dim=D_)
    torch.testing.assert_close(net.layer_weights, torch.full((L_,), 1 / L_))
    with torch.no_grad():
        net.mix.layer_logits.copy_(torch.tensor([1.0, -3.0, 0.0, 0.0]))
    torch.testing.assert_close(net.layer_weights, torch.tensor([0.25, 0.75, 0.0, 0.0]))
    assert math.isclose(float(net.layer_weights.sum()), 1.0, rel_tol=1e-6)


def test_layer_weighted_ignores_layers_with_zero_weight():
    torch.manual_seed(0)
    net = LayerWeighted(in_channels=L_, feature_dim=D_).eval()
    with torch.no_grad():
        net.mix.layer_logits.copy_(torch.tensor([0.0, 0.0, 2.0, 0.0]))
    batch = ssl_batch()
    other = batch["ssl"].clone()
    other[:, [0, 1, 3]] = torch.randn_like(other[:, [0, 1, 3]])
    with torch.no_grad():
        torch.testing.assert_close(net(batch), net({"ssl": other}))


def test_layer_weighted_invariant_to_padding_content_and_length():
    torch.manual_seed(0)
    net = LayerWeighted(in_channels=L_, feature_dim=D_).eval()
    real = 30
    clip = ssl_batch(b=1, t=real)["ssl"]
    outs = []
    with torch.no_grad():
        outs.append(net({"ssl": clip}))
        for total, fill in ((45, 7.0), (70, float("nan")), (31, -1e4)):
            x = torch.full((1, L_, total, D_), fill)
            x[:, :, :real] = clip
            mask = torch.arange(total)[None] < real
            outs.append(net({"ssl": x, "ssl_mask": mask}))
        x = torch.full((1, L_, 45, D_), 7.0)
        x[:, :, :real] = clip
        unmasked = net({"ssl": x})
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-5)
    assert not torch.allclose(unmasked, outs[0], atol=1e-4)


def test_layer_weighted_rejects_empty_mask_and_wrong_layer_count():
    net = LayerWeighted(in_channels=L_, feature_dim=D_)
    mask = torch.ones(2, T_, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match=r"no real frame for batch rows \[1\]"):
        net(ssl_batch(ssl_mask=mask))
    with pytest.raises(ValueError, match=r"L=4.*got \(2, 13, 60, 32\)"):
        net({"ssl": torch.zeros(2, 13, T_, D_)})


# Standardizer ------------------------------------------------------------------------------------------
def test_standardizer_raises_when_unfitted():
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer(88)(torch.zeros(2, 88))


def test_standardizer_validates_stats():
    s = Standardizer(3)
    with pytest.raises(ValueError, match=r"shape \(3,\), got \(4,\)"):
        s.set_stats(torch.zeros(4), torch.ones(4))
    with pytest.raises(ValueError, match="non-finite values at indices \\[1\\]"):
        s.set_stats([0.0, float("nan"), 0.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="negative"):
        s.set_stats([0.0, 0.0, 0.0], [1.0, -1.0, 1.0])
    assert not s.is_fitted
    s.set_stats([1.0, 2.0, 3.0], [2.0, 0.0, 4.0])  # a constant feature: std 0 -> 1
    torch.testing.assert_close(s.std, torch.tensor([2.0, 1.0, 4.0]))
    out = s(torch.tensor([[3.0, 5.0, 3.0]]))
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0, 0.0]]))
    with pytest.raises(ValueError, match=r"\(B, 3\), got \(1, 4\)"):
        s(torch.zeros(1, 4))


def test_standardizer_state_dict_round_trip():
    s = Standardizer(5)
    s.set_stats(torch.arange(5.0), torch.arange(1.0, 6.0))
    state = s.state_dict()
    assert set(state) == {"mean", "std", "fitted"}
    fresh = Standardizer(5)
    fresh.load_state_dict(state)
    assert fresh.is_fitted
    x = torch.randn(3, 5)
    torch.testing.assert_close(fresh(x), (x - torch.arange(5.0)) / torch.arange(1.0, 6.0))


def test_standardizer_fitted_flag_follows_nested_state_dict_without_device_reads(monkeypatch):
    """The forward checks a host-side flag (no GPU->CPU read per step) that loading keeps in step."""
    fitted_net = fitted(EgemapsMLP())
    fresh = EgemapsMLP()
    assert not fresh.norm.is_fitted
    fresh.load_state_dict(fitted_net.state_dict())
    assert fresh.norm.is_fitted
    fresh.load_state_dict(EgemapsMLP().state_dict())  # loading unfitted statistics unfits it again
    assert not fresh.norm.is_fitted
    fresh.load_state_dict(fitted_net.state_dict())

    def no_item(self):
        raise AssertionError("forward read a tensor value back to the host")

    monkeypatch.setattr(torch.Tensor, "item", no_item)
    assert fresh({"egemaps": torch.randn(2, 88)}).shape == (2, 8)


# eGeMAPS nets ------------------------------------------------------------------------------------------
def test_egemaps_nets_shapes_and_state_dict():
    torch.manual_seed(0)
    fusion = fitted(FeVGGEgemaps(in_channels=L_, feature_dim=D_)).eval()
    mlp = fitted(EgemapsMLP()).eval()
    egemaps = torch.randn(2, 88) * 10
    with torch.no_grad():
        assert fusion(ssl_batch(egemaps=egemaps)).shape == (2, 8)
        assert fusion.embed(ssl_batch(egemaps=egemaps)).shape == (2, 64)
        assert mlp({"egemaps": egemaps.half()}).shape == (2, 8)
    # the reference fusion layout: 88 -> 64, concat 64 + 64 -> 64 -> 8
    assert (fusion.egemaps_fc.in_features, fusion.egemaps_fc.out_features) == (88, 64)
    assert (fusion.fusion.in_features, fusion.fusion.out_features) == (128, 64)
    assert fusion.classifier.out_features == 8
    assert {"egemaps_norm.mean", "egemaps_norm.std", "egemaps_norm.fitted"} <= set(fusion.state_dict())
    with pytest.raises(RuntimeError, match="not fitted"):
        EgemapsMLP()({"egemaps": egemaps})


@pytest.mark.parametrize("kind", ["mlp", "fusion"])
def test_egemaps_standardisation_uses_stored_stats(kind):
    torch.manual_seed(0)
    make = (lambda: EgemapsMLP()) if kind == "mlp" else (lambda: FeVGGEgemaps(in_channels=L_, feature_dim=D_))
    net = make().eval()
    mean, std = torch.randn(88) * 50, torch.rand(88) * 10 + 1
    norm = net.norm if kind == "mlp" else net.egemaps_norm
    raw = torch.randn(2, 88) * std + mean
    batch = ssl_batch()
    with torch.no_grad():
        norm.set_stats(mean, std)
        out_raw = net({**batch, "egemaps": raw})
        norm.set_stats(torch.zeros(88), torch.ones(88))
        out_pre = net({**batch, "egemaps": (raw - mean) / std})
        out_unscaled = net({**batch, "egemaps": raw})
    torch.testing.assert_close(out_raw, out_pre, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out_raw, out_unscaled, atol=1e-3)


# Training ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["fe_vgg", "fe_vgg_egemaps", "egemaps_mlp", "layer_weighted"])
def test_gradient_steps_reduce_the_loss(kind):
    torch.manual_seed(0)
    nets = {
        "fe_vgg": lambda: FeVGG(in_channels=L_, feature_dim=D_, widths=(8, 8, 16, 16), dropout=0.0),
        "fe_vgg_egemaps": lambda: FeVGGEgemaps(
            in_channels=L_, feature_dim=D_, widths=(8, 8, 16, 16), dropout=0.0
        ),
        "egemaps_mlp": lambda: EgemapsMLP(dropout=0.0),
        "layer_weighted": lambda: LayerWeighted(in_channels=L_, feature_dim=D_, dropout=0.0),
    }
    net = fitted(nets[kind]())
    batch = ssl_batch(b=8, t=40, egemaps=torch.randn(8, 88) * 5)
    labels = torch.arange(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = F.cross_entropy(net(batch), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    if kind == "layer_weighted":
        assert net.mix.layer_logits.grad is not None and net.mix.layer_logits.grad.abs().sum() > 0


def test_channel_padded_conv_is_a_plain_conv_on_cpu():
    from wav2emo.models.blocks import ChannelPaddedConv2d

    torch.manual_seed(0)
    conv = ChannelPaddedConv2d(12, 24, 3, padding=1, bias=False)
    plain = torch.nn.Conv2d(12, 24, 3, padding=1, bias=False)
    plain.load_state_dict(conv.state_dict())  # same parameters, same names
    x = torch.randn(2, 12, 9, 10)
    assert torch.equal(conv(x), plain(x))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_channel_padded_conv_matches_plain_conv_on_gpu():
    """On CUDA the 12 input channels are zero-padded to 16: same outputs and gradients as nn.Conv2d."""
    from wav2emo.models.blocks import ChannelPaddedConv2d

    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        conv = ChannelPaddedConv2d(12, 24, 3, padding=1, bias=False).cuda()
        plain = torch.nn.Conv2d(12, 24, 3, padding=1, bias=False).cuda()
        plain.load_state_dict(conv.state_dict())
        for fmt in (torch.contiguous_format, torch.channels_last):
            x = torch.randn(3, 12, 40, 50, device="cuda").contiguous(memory_format=fmt).requires_grad_()
            outs = []
            for net in (conv, plain):
                net.zero_grad()
                x.grad = None
                y = net(x)
                (y * torch.linspace(-1, 1, y.numel(), device="cuda").view_as(y)).sum().backward()
                outs.append((y.detach(), x.grad.clone(), net.weight.grad.clone()))
            # cuDNN picks different algorithms (e.g. Winograd) for 12 and 16 channels: float32 rounding
            # differs by ~1e-4; a wrong channel or weight mapping would differ by O(1).
            for a, b in zip(*outs, strict=True):
                torch.testing.assert_close(a, b, rtol=2e-3, atol=2e-3)
            assert conv.weight.grad.shape == (24, 12, 3, 3)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def test_layer_weighted_loads_a_state_dict_of_before_the_shared_layer_mix():
    torch.manual_seed(0)
    new = LayerWeighted(in_channels=L_, feature_dim=D_).eval()
    with torch.no_grad():
        new.mix.layer_logits.copy_(torch.tensor([0.5, 1.0, 0.0, 2.0]))
    old_layout = {("layer_logits" if k == "mix.layer_logits" else k): v for k, v in new.state_dict().items()}
    assert "layer_logits" in old_layout and "mix.layer_logits" not in old_layout
    again = LayerWeighted(in_channels=L_, feature_dim=D_).eval()
    again.load_state_dict(old_layout)
    with torch.no_grad():
        batch = ssl_batch()
        torch.testing.assert_close(again(batch), new(batch))
