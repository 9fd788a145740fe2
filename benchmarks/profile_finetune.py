"""Where the time of a fine-tuning / online-augmentation training step goes (not a test; GPU machine).

Builds fold 0 of the finetune benchmark's setting (synthetic corpus, random wav2vec2-base, fe_vgg_egemaps,
batch 25, bf16) for one configuration, trains one warm-up epoch, then profiles ``--steps`` training steps with
torch.profiler and prints the top operators by CUDA and by CPU time, and the wall time per step.

    python benchmarks/profile_finetune.py --config top_k --work /tmp/ftb
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.finetune_benchmark import CONFIGS, base  # noqa: E402
from benchmarks.train_benchmark import compose, random_base_backbone  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="top_k", help="substring of a finetune_benchmark configuration name")
    ap.add_argument("--work", type=Path, default=Path("/tmp/ftb"))
    ap.add_argument("--steps", type=int, default=15)
    args = ap.parse_args()
    import lightning as L
    from torch.profiler import ProfilerActivity, profile

    from wav2emo.runs.build import build_datamodule, build_module

    name = next(n for n in CONFIGS if args.config in n)
    overrides = CONFIGS[name][0]
    backbone = random_base_backbone(args.work / "wav2vec2-base-random")
    cfg = compose(base(backbone, 1) + overrides, args.work / "profile", args.work)
    dm = build_datamodule(cfg, 0)
    dm.prepare_data()
    dm.setup("fit")
    module = build_module(cfg, dm)
    trainer = L.Trainer(max_epochs=1, accelerator="gpu", devices=1, precision="bf16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0)
    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    print(f"{name}: warm-up epoch {time.perf_counter() - t0:.2f} s", flush=True)
    trainer = L.Trainer(max_epochs=2, accelerator="gpu", devices=1, precision="bf16-mixed", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, limit_val_batches=0, limit_train_batches=args.steps)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    print(f"{name}: {2 * args.steps} profiled steps, {wall / (2 * args.steps) * 1000:.1f} ms per step (wall, "
          "profiler on)", flush=True)
    ka = prof.key_averages()
    print(ka.table(sort_by="cuda_time_total", row_limit=25, max_name_column_width=60))
    print(ka.table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))


if __name__ == "__main__":
    main()
