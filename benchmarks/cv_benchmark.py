"""The whole cross-validation from audio files to the report, timed (not a test; issue 11, item 5).

Runs the README's multirun command on the 1440-clip synthetic RAVDESS-shaped corpus with a randomly initialised
wav2vec2-base (real compute cost) and an empty feature cache, so the time covers extraction (SSL hidden states and
eGeMAPS), five folds of 100 epochs, and the CV report:

    python -m wav2emo.train -m model=fe_vgg_egemaps fold=0,1,2,3,4 trainer=gpu

Also reads each fold's start-up (process start to first training step) and training time from its log and
result.  Writes <out>/cv_<gpu>.json and .md.

    python benchmarks/cv_benchmark.py --work /tmp/cvb --out benchmarks/reports [--variant fold_all]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402

VARIANTS = {
    # the command: five processes one after the other (Hydra's basic launcher)
    "multirun": ["-m", "model=fe_vgg_egemaps", "fold=0,1,2,3,4", "trainer=gpu"],
    # every fold in one process: one start-up, one cache open
    "fold_all": ["model=fe_vgg_egemaps", "fold=all", "trainer=gpu"],
    # the five folds as five concurrent processes on the one GPU (hydra-joblib-launcher); the cache lock makes
    # one of them extract while the others wait
    "joblib": ["-m", "model=fe_vgg_egemaps", "fold=0,1,2,3,4", "trainer=gpu", "hydra/launcher=joblib",
               "hydra.launcher.n_jobs=5"],
}
TARGET_SECONDS = 180.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-cvb"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--variant", choices=sorted(VARIANTS), nargs="+", default=["multirun"])
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every variant")
    args = ap.parse_args()
    import torch

    from benchmarks.train_benchmark import machine_info, random_base_backbone

    args.out.mkdir(parents=True, exist_ok=True)
    backbone = random_base_backbone(args.work / "wav2vec2-base-random")
    results: dict = {"machine": machine_info(), "epochs": args.epochs, "variants": {}}
    for variant in args.variant:
        base = args.work / variant
        env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=str(REPO),
                   WAV2EMO_DATA_DIR=str(args.work / "data"),  # audio shared: only features are timed
                   WAV2EMO_CACHE_DIR=str(base / "cache"), WAV2EMO_LOG_DIR=str(base / "logs"))
        if not (args.work / "data").exists():  # generate the audio first, outside the timing
            subprocess.run([sys.executable, "-c", "from wav2emo.data.corpora import load_corpus; "
                            "from omegaconf import OmegaConf; import hydra; "
                            "from hydra import compose, initialize_config_dir; "
                            f"initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base='1.3'); "
                            "cfg = compose(config_name='train', overrides=['data=synthetic']); "
                            "load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)"],
                           env=env, check=True)
        cmd = [sys.executable, "-m", "wav2emo.train", *VARIANTS[variant], "data=synthetic",
               "features=wav2vec2-base", f"features.ssl.backbone={backbone}", f"trainer.max_epochs={args.epochs}",
               "trainer.enable_progress_bar=false", f"hydra.sweep.dir={base / 'sweep'}",
               f"hydra.run.dir={base / 'sweep'}", *args.extra]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        (base / "stdout.txt").write_text(proc.stdout + "\n" + proc.stderr)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            results["variants"][variant] = {"error": proc.stderr[-2000:], "wall_seconds": wall}
            continue
        starts = [float(x) for x in re.findall(r"first training step ([0-9.]+) s after", proc.stdout + proc.stderr)]
        folds = [json.loads(p.read_text()) for p in sorted((base / "sweep").rglob("fold_result.json"))]
        report = next((base / "sweep").rglob("cv_report.json"), None)
        summary = json.loads(report.read_text()) if report else {}
        results["variants"][variant] = {
            "command": " ".join(["python -m wav2emo.train", *VARIANTS[variant]]),
            "wall_seconds": wall, "cv_report": str(report) if report else None,
            "startup_seconds_to_first_step": starts,
            "fold_train_seconds": [f.get("train_seconds") for f in folds],
            "fold_seconds_per_epoch_median": [sorted(f["epoch_seconds"])[len(f["epoch_seconds"]) // 2] for f in folds],
            "speed": folds[0].get("speed") if folds else None,
            "test_ua_mean": (summary.get("summary") or {}).get("ua", {}).get("mean"),
        }
        print(variant, json.dumps(results["variants"][variant]), flush=True)
    write_report(args.out, "cv_" + machine_slug(torch.cuda.get_device_name(0)), results, render(results))
    print(render(results))


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# The whole cross-validation, from audio files to the CV report",
        "",
        f"Machine: {m['gpu']}, {m['cpu_cores']} CPU cores; torch {m['torch']}, lightning {m['lightning']}.",
        f"1440 synthetic RAVDESS-shaped clips, randomly initialised wav2vec2-base, empty feature cache, "
        f"fe_vgg_egemaps, five folds of {r['epochs']} epochs. Regenerate: `python benchmarks/cv_benchmark.py`.",
        "",
        "| command | wall (s) | start-up to first step per process (s) | training per fold (s) | epoch (s, median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in r["variants"].values():
        if "error" in v:
            lines.append(f"| (failed) | {v['wall_seconds']:.0f} | | | |")
            continue
        fmt = lambda xs: ", ".join(f"{x:.1f}" for x in xs if x is not None)  # noqa: E731
        lines.append(f"| `{v['command']}` | **{v['wall_seconds']:.0f}** | {fmt(v['startup_seconds_to_first_step'])} "
                     f"| {fmt(v['fold_train_seconds'])} | {fmt(v['fold_seconds_per_epoch_median'])} |")
    best = min((v["wall_seconds"] for v in r["variants"].values() if "error" not in v), default=None)
    if best is not None:
        lines += ["", f"Target (issue 11): the whole CV in {TARGET_SECONDS:.0f} s or less on one GPU: best {best:.0f} s, "
                      f"**{'met' if best <= TARGET_SECONDS else 'missed'}**."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
