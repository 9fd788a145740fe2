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

from benchmarks.train_benchmark import (  # noqa: E402
    compose,
    machine_info,
    random_base_backbone,
    steady,
    time_reference_way,
)  # noqa: E402

# name -> (overrides, target seconds per epoch or None, what the target compares with)
CONFIGS: dict[str, tuple[list[str], float | None]] = {
    "finetune=none (cache, speed=gpu_fast)": (["speed=gpu_fast"], None),
    "finetune=top_k k=4 (cache)": (["speed=gpu_fast", "finetune=top_k", "finetune.k=4"], 1.2),
    "finetune=full (waveforms)": (["trainer=gpu", "loader.resident=true", "loader.num_workers=0",
                                   "loader.bucket_by_length=true", "finetune=full"], 3.0),
    "augment=standard online (frozen backbone)": (["trainer=gpu", "loader.resident=true", "loader.num_workers=0",
                                                   "loader.bucket_by_length=true", "augment=standard",
                                                   "augment.mode=online"], 2.5),
    "augment=standard cached, 4 copies": (["speed=gpu_fast", "augment=standard", "augment.mode=cached",
                                           "augment.copies=4"], None),
}
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
    from wav2emo.runs.build import build_datamodule
    from wav2emo.runs.fold_runner import run_fold

    cfg = compose(overrides, out, work)
    prepare = None
    if cfg.augment.get("mode") == "cached" and cfg.augment.get("name") != "none":
        # The copies and their features, extracted once (timed apart from training; the fold run reuses them).
        t0 = time.perf_counter()
        build_datamodule(cfg, 0).setup("fit")
        prepare = time.perf_counter() - t0
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    res = run_fold(cfg, 0, out / "fold_0")
    wall = time.perf_counter() - t0
    return {
        "copies_seconds": prepare,
        "seconds_per_epoch": steady(res["epoch_seconds"]), "epoch_seconds": res["epoch_seconds"],
        "first_epoch_seconds": res["epoch_seconds"][0] if res["epoch_seconds"] else None,
        "wall_seconds": wall, "peak_gpu_gb": torch.cuda.max_memory_allocated() / 2**30,
        "train_clips": res["split"]["clips"]["train"], "dev_clips": res["split"]["clips"]["dev"],
        "test_ua": res.get("test", {}).get("ua"),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-ft-bench"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--only", nargs="*", default=None, help="substrings of the configurations to run")
    args = ap.parse_args()
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
    results: dict = {
        "machine": machine_info(),
        "corpus": {"clips": len(manifest), "features_seconds": t_feat,
                   "durations_s": [min(c.duration for c in manifest), max(c.duration for c in manifest)]},
        "epochs": args.epochs, "runs": {},
    }
    for name, (overrides, target) in CONFIGS.items():
        if args.only and not any(s in name for s in args.only):
            continue
        slug = "".join(ch if ch.isalnum() else "_" for ch in name)[:60]
        try:
            r = run_config(base(backbone, args.epochs) + overrides, args.work / slug, args.work)
        except Exception as e:  # one failing configuration must not lose the others' numbers
            r = {"error": f"{type(e).__name__}: {e}"[:2000]}
        r["target_seconds_per_epoch"] = target
        results["runs"][name] = r
        print(name, json.dumps(r), flush=True)
    first = next((r for r in results["runs"].values() if "train_clips" in r), None)
    n_train, n_dev = (first["train_clips"], first["dev_clips"]) if first else (1020, 120)
    results["reference_way"] = time_reference_way(n_train, n_dev, egemaps=True, strict_fp32=False)
    print("reference way", results["reference_way"], flush=True)
    name = "finetune_" + torch.cuda.get_device_name(0).replace(" ", "_").lower()
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(render(results) + "\n")
    print(render(results))


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
        "| configuration | s per epoch | target | verdict | vs reference | peak GPU memory | first epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    none_s = None
    for name, v in r["runs"].items():
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
        lines += ["", f"Peak GPU memory of full fine-tuning at batch 25: {full['peak_gpu_gb']:.2f} GiB "
                      f"(target <= {FULL_MEMORY_TARGET_GB:.0f} GB): "
                      f"{_verdict(full['peak_gpu_gb'] * 2**30 / 1e9 <= FULL_MEMORY_TARGET_GB)}."]
    cached = next((v for k, v in r["runs"].items() if "cached" in k and "error" not in v), None)
    if cached and cached.get("copies_seconds") is not None:
        lines += [f"Cached augmentation: the copies of the {cached['train_clips']} training clips and their features "
                  f"(wav2vec2 hidden states and eGeMAPS) were extracted in {cached['copies_seconds']:.1f} s "
                  f"(target <= {CACHED_COPIES_TARGET_S:.0f} s): "
                  f"{_verdict(cached['copies_seconds'] <= CACHED_COPIES_TARGET_S)}; training then reads them "
                  "like any cache."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
