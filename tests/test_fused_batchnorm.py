"""The fused training batch norm (wav2emo/models/fused_batchnorm.py) gives nn.BatchNorm2d's outputs, statistics,
running statistics and gradients: its Triton kernels run on the CPU through Triton's interpreter (a child process:
the interpreter is chosen when Triton is imported), and on a GPU beside PyTorch's own kernels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from wav2emo.models.blocks import ConvBlock
from wav2emo.models.fused_batchnorm import FusedBatchNorm2d

CHILD = textwrap.dedent("""
    import json, sys
    import torch
    import torch.nn.functional as F
    from wav2emo.models.fused_batchnorm import fused_batch_norm

    out = {}
    for shape, relu in (((4, 24, 30, 40), False), ((4, 24, 30, 40), True), ((3, 48, 5, 7), True), ((2, 5, 3, 1), False)):
        g = torch.Generator().manual_seed(sum(shape))
        x = (torch.randn(*shape, generator=g) * 3 + 2).contiguous(memory_format=torch.channels_last)
        w = torch.rand(shape[1], generator=g) + 0.5
        b = torch.randn(shape[1], generator=g)
        dy = torch.randn(*shape, generator=g)
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        ws = [w.clone().requires_grad_(True) for _ in range(2)]
        bs = [b.clone().requires_grad_(True) for _ in range(2)]
        y, mean, var = fused_batch_norm(xs[0], ws[0], bs[0], 1e-5, relu)
        (y * dy).sum().backward()
        ref = F.batch_norm(xs[1], None, None, ws[1], bs[1], training=True, eps=1e-5)
        ref = torch.relu(ref) if relu else ref
        (ref * dy).sum().backward()
        def err(a, r):
            return float((a - r).abs().max() / r.abs().max().clamp_min(1e-12))
        out[f"{shape} relu={relu}"] = {
            "y": err(y, ref), "mean": err(mean, x.mean((0, 2, 3))), "var": err(var, x.var((0, 2, 3), unbiased=False)),
            "dx": err(xs[0].grad, xs[1].grad), "dw": err(ws[0].grad, ws[1].grad), "db": err(bs[0].grad, bs[1].grad),
            "channels_last": y.is_contiguous(memory_format=torch.channels_last),
        }
    print(json.dumps(out))
""")


def test_the_kernels_give_batch_norms_values_and_gradients_in_tritons_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(results) == 4
    for case, errors in results.items():
        assert errors.pop("channels_last"), case
        for name, value in errors.items():
            assert value < 1e-5, f"{case}: {name} differs from F.batch_norm by {value:.2e} (relative to its largest)"


def test_on_the_cpu_it_is_batchnorm2d_exactly_and_keeps_its_state_dict():
    torch.manual_seed(0)
    fused, plain = FusedBatchNorm2d(8), nn.BatchNorm2d(8)
    plain.load_state_dict(fused.state_dict())
    assert list(fused.state_dict()) == list(plain.state_dict())
    x = torch.randn(4, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    assert torch.equal(fused(x), plain(x))
    assert torch.equal(fused.forward_relu(x), torch.relu(plain(x)))
    assert torch.equal(fused.running_mean, plain.running_mean) and torch.equal(fused.running_var, plain.running_var)


def test_a_conv_blocks_output_is_unchanged_on_the_cpu():
    torch.manual_seed(0)
    block = ConvBlock(3, 8)
    x = torch.randn(2, 3, 18, 27)
    *body, relu, pool = list(block)
    by_layers = x
    for layer in body:
        by_layers = layer(by_layers)
    by_layers = relu(pool(by_layers))  # pool, then the last ReLU: they commute
    torch.manual_seed(0)
    fresh = ConvBlock(3, 8)
    fresh.load_state_dict(block.state_dict())
    assert torch.allclose(fresh(x), by_layers, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_on_the_gpu_it_matches_pytorchs_batch_norm_and_running_statistics(dtype):
    torch.manual_seed(0)
    fused, plain = FusedBatchNorm2d(24).cuda(), nn.BatchNorm2d(24).cuda()
    with torch.no_grad():
        fused.weight.uniform_(0.5, 1.5)
        fused.bias.normal_()
    plain.load_state_dict(fused.state_dict())
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    for step in range(3):
        x = (torch.randn(5, 24, 52, 96, device="cuda") * 2 + step).to(dtype)
        x = x.contiguous(memory_format=torch.channels_last)
        dy = torch.randn_like(x)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya = fused.forward_relu(xa)
        yb = torch.relu(plain(xb))
        (ya.float() * dy.float()).sum().backward()
        (yb.float() * dy.float()).sum().backward()
        assert ya.dtype == dtype and ya.is_contiguous(memory_format=torch.channels_last)
        scale = yb.float().abs().max()
        assert (ya.float() - yb.float()).abs().max() <= tol * scale
        assert (xa.grad.float() - xb.grad.float()).abs().max() <= tol * xb.grad.float().abs().max()
        for p, q in ((fused.weight, plain.weight), (fused.bias, plain.bias)):
            assert (p.grad - q.grad).abs().max() <= tol * q.grad.abs().max()
        torch.testing.assert_close(fused.running_mean, plain.running_mean, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(fused.running_var, plain.running_var, rtol=1e-3, atol=1e-4)
        assert int(fused.num_batches_tracked) == int(plain.num_batches_tracked) == step + 1
        fused.zero_grad(), plain.zero_grad()
