"""Fine-tuning and augmentation speed benchmark (not a test): seconds per epoch on one GPU, side by side
with the reference's way, and peak GPU memory.

Runs, in one process, on fold 0 of the 1440-clip synthetic RAVDESS-shaped corpus (train/dev/test actors
17/2/5, so about 1020 training and 120 dev clips), batch 25, bf16, a randomly initialised wav2vec2-base
(the real compute cost), model fe_vgg_egemaps:

  * the reference's way: frozen wav2vec2-base in float32 inside every training and evaluation step;
  * ``finetune=none`` from the cache (speed=gpu_fast), the frozen baseline;
  * ``finetune=top_k finetune.k=4`` from the cache: the top 4 layers rerun and trained on cached hidden state 8;
  * ``finetune=full`` from waveforms (CNN feature encoder frozen, every transformer layer trained);
  * ``augment=standard`` online: waveforms augmented on the GPU, then the frozen backbone, every step;
  * ``augment=standard augment.mode=cached augment.copies=4``: four augmented copies of each training clip
    extracted once (timed), then training at the resident speed.

Seconds per epoch are medians after the first epoch (which pays for uploads and cuDNN autotuning),
validation included.  Writes <out>/finetune_<gpu>.json and .md.

    python benchmarks/finetune_benchmark.py --work /tmp/ft-bench --out benchmarks/reports
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from benchmarks.train_benchmark import (  # noqa: E402
    compose,
    machine_info,
    random_base_backbone,
    steady,
    time_reference_way,
)  # noqa: E402

# name -> (overrides, target seconds per epoch or None)
ONLINE = ["trainer=gpu", "loader.resident=true", "loader.num_workers=0", "loader.bucket_by_length=true",
          "augment=standard", "augment.mode=online", "test=false"]
CACHED = ["speed=gpu_fast", "augment=standard", "augment.mode=cached", "augment.copies=4", "test=false"]
# Full fine-tuning's memory apart from the fold: the fold stays on the host (memory-mapped), random batches of 25
# (each padded to its longest clip), MEMORY_STEPS training steps and the dev pass.
MEMORY_STEPS = 8
ON_HOST = ["trainer=gpu", "loader.resident=false", "loader.num_workers=2", "loader.bucket_by_length=false",
           "finetune=full", f"trainer.limit_train_batches={MEMORY_STEPS}", "trainer.max_epochs=1", "test=false"]
CONFIGS: dict[str, tuple[list[str], float | None]] = {
    "finetune=none (cache, speed=gpu_fast)": (["speed=gpu_fast"], None),
    "finetune=top_k k=4 (cache)": (["speed=gpu_fast", "finetune=top_k", "finetune.k=4"], 1.2),
    "finetune=full (waveforms)": (["trainer=gpu", "loader.resident=true", "loader.num_workers=0",
                                   "loader.bucket_by_length=true", "finetune=full", "test=false"], 3.0),
    "augment=standard online (frozen backbone), previous way": (ONLINE, 2.5),
    "augment=standard online (frozen backbone)": (ONLINE, 2.5),
    "augment=standard cached, 4 copies": (CACHED, None),
    "memory: finetune=full, fold on the host, bf16-mixed": (ON_HOST, None),
    "memory: finetune=full, fold on the host, bf16-mixed, gradient checkpointing":
        (ON_HOST + ["finetune.gradient_checkpointing=true"], None),
    "memory: finetune=full, fold on the host, bf16-true": (ON_HOST + ["trainer.precision=bf16-true"], None),
    "memory: finetune=full, fold on the host, bf16-true, gradient checkpointing":
        (ON_HOST + ["trainer.precision=bf16-true", "finetune.gradient_checkpointing=true"], None),
}
# Rows run the previous way: the per-clip masked GroupNorm and each batch at its own length, cudnn.benchmark off
# and small host lists copied to the GPU with a stream wait
# (wav2emo.backbones.invariance.MaskedGroupNorm.fused, wav2emo.backbones.fixed_shapes.SETTINGS).
# The cached copies' previous way (one group after another on the GPU) is timed beside the new one by
# benchmarks/copies_benchmark.py.
PREVIOUS = ", previous way"


def set_way(name: str) -> str:
    """Switch the online SSL path to the previous or the new way for configuration ``name``; returns which."""
    from wav2emo.backbones.fixed_shapes import SETTINGS, FixedShapes
    from wav2emo.backbones.invariance import MaskedGroupNorm

    previous = name.endswith(PREVIOUS)
    SETTINGS.bucket_s = 0.0 if previous else FixedShapes().bucket_s
    SETTINGS.autotune = not previous
    SETTINGS.async_copies = not previous
    MaskedGroupNorm.fused = not previous
    return "previous" if previous else "new"


def fresh_copies(cache_dir: Path) -> None:
    """Remove the augmented copies and their feature caches this benchmark made, so the next row builds them."""
    import shutil

    for path in [*Path(cache_dir).glob("*/augment-*"), *Path(cache_dir).glob("*-aug-*")]:
        shutil.rmtree(path, ignore_errors=True)


FULL_MEMORY_TARGET_GB = 8.0
CACHED_COPIES_TARGET_S = 30.0
CACHED_OVERHEAD_TARGET = 0.10


def base(backbone: Path, epochs: int) -> list[str]:
    return [
        "data=synthetic", "features=wav2vec2-base", f"features.ssl.backbone={backbone}", "model=fe_vgg_egemaps",
        f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false", "logger=csv", "loader.batch_size=25",
        "callbacks.early_stopping=null",
    ]


def run_config(overrides: list[str], out: Path, work: Path) -> dict:
    import wav2emo.feeding.datamodule as datamodule_module
    from wav2emo.runs.build import build_datamodule
    from wav2emo.runs.fold_runner import run_fold

    cfg = compose(overrides, out, work)
    prepare = copies_audio = None
    if cfg.augment.get("mode") == "cached" and cfg.augment.get("name") != "none":
        # The copies and their features, extracted once (timed apart from training; the fold run reuses them).
        fresh_copies(Path(cfg.paths.cache_dir))
        make_copies, timing = datamodule_module.make_copies, {}

        def timed_make_copies(*a, **k):
            t = time.perf_counter()
            try:
                return make_copies(*a, **k)
            finally:
                timing["s"] = time.perf_counter() - t

        datamodule_module.make_copies = timed_make_copies
        try:
            t0 = time.perf_counter()
            build_datamodule(cfg, 0).setup("fit")
            prepare = time.perf_counter() - t0
        finally:
            datamodule_module.make_copies = make_copies
        copies_audio = timing.get("s")
    import gc

    gc.collect()  # what earlier rows left is freed (or at least measured: allocated_before_gb)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base_gb = torch.cuda.memory_allocated() / 2**30
    t0 = time.perf_counter()
    res = run_fold(cfg, 0, out / "fold_0")
    wall = time.perf_counter() - t0
    return {
        "copies_seconds": prepare, "copies_audio_seconds": copies_audio,
        "seconds_per_epoch": steady(res["epoch_seconds"]), "epoch_seconds": res["epoch_seconds"],
        "first_epoch_seconds": res["epoch_seconds"][0] if res["epoch_seconds"] else None,
        "wall_seconds": wall, "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30,
        "peak_gpu_reserved_gb": torch.cuda.max_memory_reserved() / 2**30, "allocated_before_gb": base_gb,
        "train_clips": res["split"]["clips"]["train"], "dev_clips": res["split"]["clips"]["dev"],
        "test_ua": res.get("test", {}).get("ua"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-ft-bench"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the configurations to run")
    ap.add_argument("--compose-only", action="store_true",
                    help="compose every configuration and switch each way, run nothing (a check without a GPU)")
    args = ap.parse_args()
    if args.compose_only:
        compose_only(args)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from wav2emo.data.corpora import load_corpus
    from wav2emo.features import get_features

    backbone = random_base_backbone(args.work / "wav2vec2-base-random")
    cfg = compose(base(backbone, 1), args.work / "prep", args.work)
    t0 = time.perf_counter()
    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    for name in ("ssl", "egemaps"):
        get_features(manifest, dict(cfg.features[name]), cfg.paths.cache_dir)
    t_feat = time.perf_counter() - t0
    from wav2emo.data.folds import assemble_fold

    parts = assemble_fold(manifest, cfg.folds, 0).parts
    results: dict = {
        "machine": machine_info(),
        "corpus": {"clips": len(manifest), "features_seconds": t_feat,
                   "durations_s": [min(c.duration for c in manifest), max(c.duration for c in manifest)]},
        "epochs": args.epochs, "runs": {},
    }
    # The reference's way first (so every report written below, even of a run cut short, carries it).
    results["reference_way"] = time_reference_way(len(parts["train"]), len(parts["dev"]), egemaps=True,
                                                  strict_fp32=False)
    print("reference way", results["reference_way"], flush=True)
    name = "finetune_" + machine_slug(torch.cuda.get_device_name(0))
    for i, (config, (overrides, target)) in enumerate(CONFIGS.items()):
        if args.only and not any(s in config for s in args.only):
            continue
        slug = f"{i:02d}_" + "".join(ch if ch.isalnum() else "_" for ch in config)[:60]
        try:
            way = set_way(config)
            r = run_config(base(backbone, args.epochs) + overrides, args.work / slug, args.work)
            r["way"] = way
        except Exception as e:  # one failing configuration must not lose the others' numbers
            r = {"error": f"{type(e).__name__}: {e}"[:2000]}
        r["target_seconds_per_epoch"] = target
        results["runs"][config] = r
        print(config, json.dumps(r), flush=True)
        write_report(args.out, name, results, render(results))  # after every row
    set_way("")
    print(render(results))


def compose_only(args) -> None:
    """Every configuration composes (Hydra) and both ways switch: what can be checked without a GPU."""
    from wav2emo.backbones.fixed_shapes import SETTINGS
    from wav2emo.backbones.invariance import MaskedGroupNorm

    backbone = args.work / "wav2vec2-base-random"
    for i, (name, (overrides, _)) in enumerate(CONFIGS.items()):
        if args.only and not any(s in name for s in args.only):
            continue
        way = set_way(name)
        cfg = compose(base(backbone, args.epochs) + overrides, args.work / f"compose-{i:02d}", args.work)
        print(f"{name}: composes ({way} way: fused={MaskedGroupNorm.fused}, bucket_s={SETTINGS.bucket_s}, "
              f"autotune={SETTINGS.autotune}; precision {cfg.trainer.precision}, finetune {cfg.finetune.name}, "
              f"checkpointing {cfg.finetune.get('gradient_checkpointing')}, resident {cfg.loader.resident})")
    set_way("")


def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**missed**"


def render(r: dict) -> str:
    m, ref = r["machine"], r["reference_way"]
    lo, hi = r["corpus"]["durations_s"]
    lines = [
        "# Fine-tuning and augmentation: seconds per epoch on one GPU, beside the reference's way",
        "",
        f"Machine: {m['gpu']}, {m['cpu_cores']} CPU cores; torch {m['torch']} (CUDA {m['cuda']}), "
        f"transformers {m['transformers']}, lightning {m['lightning']}, Python {m['python']}.",
        f"Corpus: {r['corpus']['clips']} synthetic RAVDESS-shaped clips ({lo:.2f}-{hi:.2f} s); fold 0; "
        f"{ref['train_clips']} training + {ref['eval_clips']} dev clips per epoch; batch 25; "
        "randomly initialised wav2vec2-base (real compute cost); fe_vgg_egemaps; bf16-mixed for wav2emo.",
        f"Each configuration trains {r['epochs']} epochs; seconds per epoch are the median after the first, "
        "validation included. Regenerate: `python benchmarks/finetune_benchmark.py` on the GPU machine.",
        "",
        "The reference's way (benchmarks/train_benchmark.py): frozen wav2vec2-base in float32 inside every "
        f"step on 25 clips zero-padded to 5.27 s: **{ref['seconds_per_epoch']:.2f} s per epoch** "
        f"({ref['seconds_per_train_step'] * 1000:.0f} ms per training batch).",
        "",
        "Rows marked *previous way* run the online SSL path as before (one GroupNorm per clip, each batch at its "
        "own length, cudnn.benchmark off, lengths copied to the GPU with a stream wait); the unmarked "
        "rows run the new way (fused masked GroupNorm, waves padded to 0.5 s multiples, cudnn.benchmark on around "
        "the backbone), in the same process. The cached copies are made as the data module makes them (on the CPU, "
        "whole groups spread over its cores); benchmarks/copies_benchmark.py times their previous way beside it.",
        "",
        "| configuration | s per epoch | target | verdict | vs reference | peak GPU memory | first epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    none_s = None
    memory = {k: v for k, v in r["runs"].items() if k.startswith("memory:")}
    for name, v in r["runs"].items():
        if name in memory:
            continue
        if "error" in v:
            lines.append(f"| {name} | failed: {v['error'][:200]} | | | | | |")
            continue
        s, t = v["seconds_per_epoch"], v["target_seconds_per_epoch"]
        if name.startswith("finetune=none"):
            none_s = s
        verdict = "" if t is None else _verdict(s <= t)
        target = "" if t is None else f"<= {t:.1f} s"
        if "cached" in name and none_s:
            target = f"within 10 % of finetune=none ({none_s:.3f} s)"
            verdict = _verdict(s <= none_s * (1 + CACHED_OVERHEAD_TARGET))
        lines.append(f"| {name} | {s:.3f} | {target} | {verdict} | {ref['seconds_per_epoch'] / s:.1f}x | "
                     f"{v['peak_gpu_gb']:.2f} GiB | {v['first_epoch_seconds']:.1f} s |")
    full = next((v for k, v in r["runs"].items() if k.startswith("finetune=full") and "error" not in v), None)
    if full:
        lines += ["", f"Peak GPU memory of full fine-tuning at batch 25 with the fold resident on the GPU: "
                      f"{full['peak_gpu_gb']:.2f} GiB (fold, backbone, head, optimiser and activations together)."]
    if memory:
        lines += ["", "## Full fine-tuning: backbone + head memory, apart from the fold",
                  "", f"The fold stays on the host (memory-mapped, `loader.resident=false`); {MEMORY_STEPS} training "
                  "steps on random batches of 25 clips (each padded to its longest clip) and the dev pass; peak "
                  "`torch.cuda.max_memory_allocated` (weights, gradients, Adam state, activations, one batch); the GB column "
                  "and the verdict count what the run allocated above what was allocated before it. "
                  f"Target: <= {FULL_MEMORY_TARGET_GB:.0f} GB (= {FULL_MEMORY_TARGET_GB * 1e9 / 2**30:.2f} GiB).", "",
                  "| configuration | peak allocated | = GB | allocated before the run | peak reserved | target <= 8 GB "
                  "| s per epoch (cut) |",
                  "| --- | ---: | ---: | ---: | ---: | --- | ---: |"]
        for name, v in memory.items():
            if "error" in v:
                lines.append(f"| {name[8:]} | failed: {v['error'][:200]} | | | | | |")
                continue
            gb = (v["peak_gpu_gb"] - v.get("allocated_before_gb", 0.0)) * 2**30 / 1e9
            lines.append(f"| {name[8:]} | {v['peak_gpu_gb']:.2f} GiB | {gb:.2f} | {v.get('allocated_before_gb', 0.0):.2f} GiB "
                         f"| {v['peak_gpu_reserved_gb']:.2f} GiB | {_verdict(gb <= FULL_MEMORY_TARGET_GB)} | "
                         f"{v['first_epoch_seconds']:.1f} |")
        host = memory.get("memory: finetune=full, fold on the host, bf16-mixed")
        if full and host and "error" not in host:
            lines.append(f"\nThe resident row's peak minus the bf16-mixed row's: {full['peak_gpu_gb'] - host['peak_gpu_gb']:.2f} "
                         "GiB, about what the resident fold (and its longer, length-bucketed batches) adds.")
    for name, v in r["runs"].items():
        if "cached" in name and "error" not in v and v.get("copies_seconds") is not None:
            audio = v.get("copies_audio_seconds")
            split = "" if audio is None else (f" ({audio:.1f} s making and writing the augmented audio, "
                                              f"{v['copies_seconds'] - audio:.1f} s their features and the rest)")
            lines += ["", f"Cached augmentation, {name}: the copies of the {v['train_clips']} training clips and their "
                      f"features (wav2vec2 hidden states and eGeMAPS) in {v['copies_seconds']:.1f} s{split} "
                      f"(target <= {CACHED_COPIES_TARGET_S:.0f} s): {_verdict(v['copies_seconds'] <= CACHED_COPIES_TARGET_S)}."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
