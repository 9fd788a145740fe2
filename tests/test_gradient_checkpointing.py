"""Full fine-tuning with gradient checkpointing (finetune.gradient_checkpointing=true) for every family: the same
loss and gradients as without it, and, on a GPU, a backward that torch accepts (scaled-dot-product attention
picked another kernel when a checkpointed layer was recomputed; checkpointing now runs eager attention)."""

from __future__ import annotations

import pytest
import torch

from wav2emo.backbones.loading import load_backbone, source_of
from wav2emo.backbones.tiny import TINY_FAMILIES, build_tiny
from wav2emo.models.upstream import SSLUpstream

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU"))]


def loss_and_grads(folder, device: str, checkpointing: bool):
    torch.manual_seed(0)
    bb = load_backbone(source_of(str(folder)), device=device, trainable=True)
    up = SSLUpstream(bb, mode="full", gradient_checkpointing=checkpointing).train()
    if getattr(bb.model.config, "_attn_implementation", "eager") != "eager":
        bb.model.set_attn_implementation("eager")  # what checkpointing runs: compare the same attention kernels
    for m in up.modules():  # dropout and layer drop off: the two runs must see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if hasattr(bb.model.config, "layerdrop"):
        bb.model.config.layerdrop = 0.0
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 16000, generator=g).to(device)
    lengths = torch.tensor([16000, 12000, 9000], device=device)
    out = up({"wave": x, "wave_lengths": lengths})
    m = out["ssl_mask"][:, :, None].float()
    loss = ((out["ssl"][:, -1].float() * m).sum(1) / m.sum(1)).pow(2).mean()
    loss.backward()
    grads = {n: p.grad.detach().float().cpu() for n, p in up.named_parameters() if p.grad is not None}
    return float(loss), grads


@pytest.fixture(autouse=True)
def exact_float32():
    """No TF32 on a GPU: the two backwards are compared at float32 precision."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("family", sorted(TINY_FAMILIES))
def test_checkpointing_gives_the_gradients_of_a_plain_backward(tmp_path, family, device):
    folder = build_tiny(tmp_path / family, seed=0, family=family)
    plain_loss, plain = loss_and_grads(folder, device, checkpointing=False)
    ckpt_loss, ckpt = loss_and_grads(folder, device, checkpointing=True)
    assert plain and plain.keys() == ckpt.keys()
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-4, abs=1e-6)
    for name, g in plain.items():
        torch.testing.assert_close(ckpt[name], g, rtol=2e-3, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
