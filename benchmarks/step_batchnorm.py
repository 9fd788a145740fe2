"""Where the fe_vgg_egemaps training step's batch-norm time goes on a GPU, and what the fused batch norm
(wav2emo/models/fused_batchnorm.py) saves (issue 25: the first block's batch-norm statistics, backward and layout
transforms were about 2.1 of the step's 10 ms).

One training step (forward, backward, gradient clipping, Adam: ``step_variants.stepper``; the two reports of
2026-12-06 were measured on a step without the clipping) at batch 25 of 12 x 208 x 768 bf16 hidden states, bf16
autocast, channels-last, as a GPU fold trains; GPU time from CUDA events, median of repeats. Variants, measured one beside
the other in one process from the same initial weights and the same batch:

- ``pytorch``: ``fused_batchnorm=false``, PyTorch's batch norm (its channels-last kernels: cuDNN is not chosen
  for these bf16 channels-last tensors, as the first measurement with cuDNN switched off showed);
- ``fused_r<R>_t<T>_w<W>``: the fused batch norm and ReLU with reduction tiles of R elements, elementwise tiles of
  T elements and W warps a program (the first of ``FUSED_SETTINGS`` is the module's default).

For each: the step's GPU milliseconds, the loss and gradients against ``pytorch`` (max relative difference, dropout
off so that both see the same network), and the 15 most expensive CUDA kernels of 5 profiled steps.

    python benchmarks/step_batchnorm.py OUT_DIR [--steps 60] [--frames 208]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from benchmarks.step_variants import profiled, stepper  # noqa: E402
from wav2emo.models.fe_vgg import FeVGGEgemaps  # noqa: E402

# (reduction tile elements, elementwise tile elements, warps) of the fused kernels; the first is the module's default
FUSED_SETTINGS = ((2048, 8192, 4), (1024, 8192, 4), (512, 8192, 4), (4096, 8192, 8), (2048, 4096, 8))
VARIANTS = ("pytorch", *(f"fused_r{r}_t{t}_w{w}" for r, t, w in FUSED_SETTINGS))


def make_net(variant: str, state: dict | None) -> nn.Module:
    if variant.startswith("fused"):
        from wav2emo.models import fused_batchnorm as fb

        r, t, w = (int(part[1:]) for part in variant.split("_")[1:])
        fb.REDUCE_TILE_ELEMENTS, fb.TILE_ELEMENTS, fb.NUM_WARPS = r, t, w
    net = FeVGGEgemaps(in_channels=12, feature_dim=768, fused_batchnorm=variant.startswith("fused")).cuda()
    net.egemaps_norm.set_stats(torch.zeros(88), torch.ones(88))
    if state is not None:
        net.load_state_dict(state)
    for m in net.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0  # the same network in both variants: the loss and gradients are compared
    return net.to(memory_format=torch.channels_last)


def make_batch(frames: int, batch: int = 25) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    return {"ssl": torch.randn(batch, 12, frames, 768, device="cuda", generator=g).to(torch.bfloat16),
            "ssl_mask": torch.ones(batch, frames, dtype=torch.bool, device="cuda"),
            "egemaps": torch.randn(batch, 88, device="cuda", generator=g),
            "label": torch.randint(0, 8, (batch,), device="cuda", generator=g)}


def loss_and_grads(net: nn.Module, batch: dict) -> tuple[float, dict[str, torch.Tensor]]:
    net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = net(batch)
    loss = F.cross_entropy(logits.float(), batch["label"])
    loss.backward()
    return float(loss.detach()), {n: p.grad.detach().float().clone() for n, p in net.named_parameters()
                                  if p.grad is not None}


def step_ms(net: nn.Module, batch: dict, steps: int):
    """GPU milliseconds of each of ``steps`` training steps (step_variants.stepper: forward, backward, clipping,
    Adam) after 10 untimed ones; and the step itself."""
    step = stepper(net, batch)
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    out = []
    for _ in range(steps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        step()
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b))
    return out, step


def top_kernels(step, n: int = 15) -> list[dict]:
    rows = []
    for e in profiled(step, 5):
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t:
            rows.append({"kernel": e.key[:110], "calls": e.count // 5, "ms_per_step": t / 5 / 1000})
    return sorted(rows, key=lambda r: -r["ms_per_step"])[:n]


def grad_differences(grads: dict, ref: dict) -> dict:
    """The whole gradient's relative L2 difference, and the parameter whose gradient differs most (relative L2)."""
    rel = {n: float((g - ref[n]).norm() / ref[n].norm().clamp_min(1e-30)) for n, g in grads.items()}
    whole = torch.cat([g.flatten() for g in grads.values()])
    whole_ref = torch.cat([ref[n].flatten() for n in grads])
    worst = max(rel, key=rel.get)
    return {"grad_rel_l2": float((whole - whole_ref).norm() / whole_ref.norm()), "worst_param": worst,
            "worst_param_rel_l2": rel[worst]}


def measure(steps: int, frames: int) -> dict:
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    state = {k: v.clone() for k, v in make_net("pytorch", None).state_dict().items()}
    batch = make_batch(frames)
    result = {"gpu": torch.cuda.get_device_name(0), "torch": torch.__version__,
              "cudnn": torch.backends.cudnn.version(), "frames": frames, "batch": 25, "variants": {}}
    ref_loss, ref_grads = loss_and_grads(make_net("pytorch", state), batch)
    for variant in VARIANTS:
        net = make_net(variant, state)
        loss, grads = loss_and_grads(net, batch)
        times, step = step_ms(net, batch, steps)
        result["variants"][variant] = {
            "step_ms_median": statistics.median(times), "step_ms_min": min(times),
            "loss": loss, "loss_rel_diff": abs(loss - ref_loss) / abs(ref_loss), **grad_differences(grads, ref_grads),
            "kernels": top_kernels(step),
        }
        print(variant, {k: v for k, v in result["variants"][variant].items() if k != "kernels"}, flush=True)
    return result


def render(r: dict) -> str:
    lines = [f"# Training step: batch-norm kernels, {r['gpu']}", "",
             f"torch {r['torch']}, cuDNN {r['cudnn']}; fe_vgg_egemaps, batch {r['batch']} x 12 x {r['frames']} x 768 "
             "bf16, autocast bf16, channels-last; GPU time of one eager step (forward, backward, gradient clipping, "
             "Adam), same weights and batch for every variant.", "",
             "| variant | step ms (median) | min | loss rel. diff | gradient rel. L2 diff | most different parameter |",
             "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, v in r["variants"].items():
        lines.append(f"| {name} | {v['step_ms_median']:.2f} | {v['step_ms_min']:.2f} | {v['loss_rel_diff']:.1e} | "
                     f"{v['grad_rel_l2']:.1e} | `{v['worst_param']}` {v['worst_param_rel_l2']:.1e} |")
    for name, v in r["variants"].items():
        lines += ["", f"## {name}: the 15 most expensive kernels (ms per step)", "", "| kernel | calls | ms |",
                  "| --- | ---: | ---: |"]
        lines += [f"| `{k['kernel']}` | {k['calls']} | {k['ms_per_step']:.3f} |" for k in v["kernels"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--frames", type=int, default=208)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("step_batchnorm.py measures a GPU step: no CUDA device here")
    r = measure(a.steps, a.frames)
    write_report(a.out, f"step_batchnorm_{machine_slug(r['gpu'])}", r, render(r))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
