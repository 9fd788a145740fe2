"""Full fine-tuning's memory, estimated without a GPU: bytes autograd saves for the backward pass (not a test).

    python benchmarks/saved_activations.py --batch 2 --out benchmarks/reports

A randomly initialised wav2vec2-base in ``finetune=full`` mode (``SSLUpstream``; CNN frozen) and the
fe_vgg_egemaps encoder (``FeVGGEncoder``, 12 hidden states) run one forward pass on ``--batch`` clips of 5.27 s
(RAVDESS's longest; the benchmark's batch 25 pads to about that) under bf16 autocast on the CPU, with and without
gradient checkpointing.  A ``saved_tensors_hooks`` pair counts every distinct storage autograd keeps, per part
(backbone, head), measured at two batch sizes and extended on that line to batch 25; weights + gradients + Adam state of the trained parameters in
float32 are 16 bytes each.  CPU autocast keeps some tensors in other dtypes than CUDA autocast, attention is
eager here (SDPA's kernels on a GPU keep less), and transient peaks (the frozen CNN's 512-channel maps, one
layer's recomputation under checkpointing) are not counted: an estimate, to read beside the GPU measurement of
``benchmarks/finetune_benchmark.py`` (its ``memory:`` rows).  Writes ``<out>/saved_activations_cpu.md``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLES, TARGET_BATCH = 84320, 25


def saved_bytes(batch: int, checkpointing: bool) -> dict[str, float]:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from wav2emo.backbones.loading import wrap_model
    from wav2emo.models.fe_vgg import FeVGGEncoder
    from wav2emo.models.upstream import SSLUpstream

    torch.manual_seed(0)
    backbone = wrap_model(Wav2Vec2Model(Wav2Vec2Config()), normalize=True, identity={"source": "estimate"})
    up = SSLUpstream(backbone, mode="full", gradient_checkpointing=checkpointing).train()
    head = FeVGGEncoder(in_channels=12).train()
    storages: dict[str, dict[int, int]] = {"backbone": {}, "head": {}}
    part = ["backbone"]

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[part[0]][storage.data_ptr()] = storage.nbytes()
        return t

    wave = 0.1 * torch.randn(batch, SAMPLES)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.autocast("cpu", dtype=torch.bfloat16):
        out = up({"wave": wave, "wave_lengths": torch.full((batch,), SAMPLES)})
        part[0] = "head"
        head({"ssl": out["ssl"][:, 1:], "ssl_mask": out["ssl_mask"]})
    trained = sum(p.numel() for p in up.parameters() if p.requires_grad) + sum(p.numel() for p in head.parameters())
    return {"backbone_gib": sum(storages["backbone"].values()) / 2**30,
            "head_gib": sum(storages["head"].values()) / 2**30, "state_gib": trained * 16 / 2**30}


def at_target_batch(batch: int, checkpointing: bool) -> dict[str, float]:
    """Measured at ``batch`` and ``2 * batch`` and extended on that line to batch 25: what does not grow with
    the batch (autocast's bf16 copies of the weights, which autograd also keeps) is counted once."""
    one, two = saved_bytes(batch, checkpointing), saved_bytes(2 * batch, checkpointing)
    out = {}
    for key in ("backbone_gib", "head_gib"):
        per_clip = (two[key] - one[key]) / batch
        out[key] = one[key] + per_clip * (TARGET_BATCH - batch)
    out["state_gib"] = one["state_gib"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = {ckpt: at_target_batch(args.batch, ckpt) for ckpt in (False, True)}
    lines = ["# Full fine-tuning memory estimated on the CPU: what autograd saves for the backward pass", "",
             f"Machine: CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}; measured at batch "
             f"{args.batch} and {2 * args.batch} x 5.27 s, extended on that line to batch {TARGET_BATCH}; {time.perf_counter() - t0:.0f} s. Command: "
             f"`python benchmarks/saved_activations.py --batch {args.batch} --out benchmarks/reports`. An estimate "
             "(see the script's docstring for what it leaves out); the GPU figures are finetune_benchmark's "
             "`memory:` rows.", "",
             "| gradient checkpointing | backbone activations | head activations | weights + grads + Adam (fp32) | sum |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for ckpt, r in rows.items():
        total = r["backbone_gib"] + r["head_gib"] + r["state_gib"]
        lines.append(f"| {'on' if ckpt else 'off'} | {r['backbone_gib']:.2f} GiB | {r['head_gib']:.2f} GiB | "
                     f"{r['state_gib']:.2f} GiB | {total:.2f} GiB ({total * 2**30 / 1e9:.1f} GB) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "saved_activations_cpu.md").write_text(text)


if __name__ == "__main__":
    main()
