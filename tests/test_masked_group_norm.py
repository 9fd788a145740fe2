"""The fused masked GroupNorm and the fixed padded lengths give the per-clip way's numbers (float tolerance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from wav2emo.backbones.fixed_shapes import SETTINGS, pad_to_bucket
from wav2emo.backbones.invariance import MaskedGroupNorm
from wav2emo.models.upstream import build_upstream


def norm_pair(channels: int = 6, groups: int = 3, seed: int = 0) -> MaskedGroupNorm:
    torch.manual_seed(seed)
    gn = nn.GroupNorm(groups, channels, affine=True)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    return MaskedGroupNorm(gn)


def run(norm: MaskedGroupNorm, x: torch.Tensor, lengths: list[int], fused: bool) -> torch.Tensor:
    norm.fused, norm.lengths = fused, lengths
    try:
        return norm(x)
    finally:
        norm.fused, norm.lengths = MaskedGroupNorm.fused, None


def batch(b: int = 4, c: int = 6, t: int = 50, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    x = 3.0 + 2.0 * torch.randn(b, c, t, generator=g)  # an offset: the variance must not lose it
    lengths = [t, 7, 31, 2][:b]
    x[1, :, 7:] = 100.0  # what lies past a clip's length must not matter
    return x, lengths


@pytest.mark.parametrize("groups", [6, 3, 1])
def test_fused_equals_one_group_norm_per_clip(groups):
    norm = norm_pair(groups=groups)
    x, lengths = batch()
    ref = run(norm, x, lengths, fused=False)
    got = run(norm, x, lengths, fused=True)
    assert got.dtype == ref.dtype and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    for b, n in enumerate(lengths):
        assert not got[b, :, n:].any()  # padding is zero
    assert ref[1].abs().max() < 10  # the 100s past clip 1's length were left out of its statistics


def test_fused_in_chunks_equals_one_call(monkeypatch):
    norm = norm_pair()
    x, lengths = batch()
    whole = run(norm, x, lengths, fused=True)
    monkeypatch.setattr(MaskedGroupNorm, "chunk_elements", x[0].numel())  # one clip per chunk
    torch.testing.assert_close(run(norm, x, lengths, fused=True), whole)


@pytest.mark.parametrize("chunked", [False, True])
def test_fused_gradients_equal_the_per_clip_way(chunked, monkeypatch):
    norm = norm_pair()
    if chunked:
        monkeypatch.setattr(MaskedGroupNorm, "chunk_elements", 2 * 6 * 50)  # two clips per chunk
    x, lengths = batch()
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for fused in (False, True):
        xi = x.clone().requires_grad_(True)
        norm.weight.grad = norm.bias.grad = None
        (run(norm, xi, lengths, fused) * w).sum().backward()
        grads.append((xi.grad, norm.weight.grad.clone(), norm.bias.grad.clone()))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


def test_fused_under_bf16_autocast_returns_what_group_norm_returns():
    norm = norm_pair()
    x, lengths = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = run(norm, x.bfloat16(), lengths, fused=False)
        got = run(norm, x.bfloat16(), lengths, fused=True)
    assert got.dtype == ref.dtype
    torch.testing.assert_close(got.float(), ref.float(), rtol=2e-2, atol=2e-2)


def test_pad_to_bucket():
    x = torch.ones(2, 10)
    assert pad_to_bucket(x, 4, 1.0).shape == (2, 12)
    assert pad_to_bucket(x, 4, 0.0) is x
    assert pad_to_bucket(torch.ones(2, 8), 4, 1.0).shape == (2, 8)
    assert pad_to_bucket(x, 4, 1.0)[:, 10:].abs().sum() == 0


@pytest.mark.parametrize("mode", ["frozen", "full"])
def test_upstream_with_fixed_lengths_and_fused_norm_gives_the_previous_ways_features(tiny, mode, monkeypatch):
    rng = np.random.default_rng(0)
    lengths = [16000, 9000, 4100]
    x = torch.zeros(3, max(lengths))
    for b, n in enumerate(lengths):
        x[b, :n] = torch.from_numpy((0.1 * rng.standard_normal(n)).astype(np.float32))
    batch_ = {"wave": x, "wave_lengths": torch.tensor(lengths)}
    up = build_upstream(str(tiny), mode=mode).eval()
    outs = []
    for new in (False, True):
        monkeypatch.setattr(SETTINGS, "bucket_s", 0.3 if new else 0.0)
        monkeypatch.setattr(SETTINGS, "async_copies", new)
        monkeypatch.setattr(MaskedGroupNorm, "fused", new)
        outs.append(up(batch_))
    (ref, got) = outs
    assert got["ssl"].shape == ref["ssl"].shape
    assert torch.equal(got["ssl_mask"], ref["ssl_mask"])
    scale = float(ref["ssl"].abs().max())
    assert float((got["ssl"] - ref["ssl"]).abs().max()) <= 1e-4 * max(1.0, scale)


@pytest.mark.parametrize("async_copies", [True, False])
def test_host_to_device_gives_the_values(async_copies, monkeypatch):
    from wav2emo.backbones.fixed_shapes import host_to_device

    monkeypatch.setattr(SETTINGS, "async_copies", async_copies)
    got = host_to_device([3, 1, 2], "cpu", torch.float32)
    assert got.dtype == torch.float32 and got.tolist() == [3.0, 1.0, 2.0]
    assert host_to_device([5, 4], "cpu").tolist() == [5, 4]
