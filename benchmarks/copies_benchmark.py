"""Cached augmentation copies and their features, the previous way beside the new way in one process (issue 25).

The call the data module makes for ``augment=standard augment.mode=cached augment.copies=4`` on fold 0 of the
1440-clip synthetic RAVDESS-shaped corpus (about 1020 training clips, so 4080 copies) with fe_vgg_egemaps's
features (a randomly initialised wav2vec2-base's 13 hidden states, eGeMAPSv02 functionals):
:func:`wav2emo.augment.copy_features.copies_with_features`, timed whole and split into making the copies
(:func:`~wav2emo.augment.copies.make_copies`) and the rest (the feature caches).

* previous way (``copy_features.SETTINGS.overlap = False``): every copy written, then both caches built from the
  written files (eGeMAPS in a worker pool beside the SSL extraction);
* new way: each group's eGeMAPS queued to openSMILE workers from the samples in memory while the next groups are
  made; once every copy is written the caches are built, eGeMAPS from those values, SSL from the files.

A small warm-up (16 clips, both ways' code paths) runs first so neither way pays for CUDA's start-up.  After each
pair the two ways' eGeMAPS values (every copy) and SSL hidden states (64 copies) are compared clip by clip, and
both ways' copies and caches are deleted (about 16 GB each on the GPU machine).  Writes <out>/copies_<machine>.json
and .md.

    python benchmarks/copies_benchmark.py OUTDIR                 # GPU machine: < 4 min on one H100, 16 cores
    python benchmarks/copies_benchmark.py OUTDIR --cpu-smoke     # a check without a GPU (tiny backbone, small corpus)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.train_benchmark import compose, random_base_backbone  # noqa: E402

TARGET_S = 30.0


def machine() -> dict:
    import transformers

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"gpu": gpu, "cpu_cores": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "load_average": list(os.getloadavg())}


def overrides(args, backbone: Path | None) -> list[str]:
    common = ["data=synthetic", "model=fe_vgg_egemaps", "augment=standard", "augment.mode=cached",
              f"augment.copies={args.copies}"]
    if args.cpu_smoke:
        return common + ["data.corpus.clips_per_actor=8", "features=tiny"]
    return common + ["features=wav2vec2-base", f"features.ssl.backbone={backbone}"]


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the openSMILE workers)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def one_way(way: str, train, augmenter, seed: int, cache_dir: Path, specs: dict, device: str) -> dict:
    """Copies and caches the ``way`` way into ``cache_dir`` (fresh), timed; the manifest and caches with it."""
    import wav2emo.augment.copy_features as copy_features

    shutil.rmtree(cache_dir, ignore_errors=True)
    copy_features.SETTINGS.overlap = way == "new"
    make_copies, timing = copy_features.make_copies, {}

    def timed_make_copies(*a, **k):
        t = time.perf_counter()
        try:
            return make_copies(*a, **k)
        finally:
            timing["audio_s"] = time.perf_counter() - t

    copy_features.make_copies = timed_make_copies
    try:
        if device == "cuda":
            torch.cuda.synchronize()
        cpu0 = cpu_seconds()
        t0 = time.perf_counter()
        m, caches = copy_features.copies_with_features(train, augmenter, seed, cache_dir, specs, device=device,
                                                       extraction_device=device)
        total = time.perf_counter() - t0
        cpu = cpu_seconds() - cpu0
    finally:
        copy_features.make_copies = make_copies
        copy_features.SETTINGS.overlap = True
    eg = json.loads((Path(caches["egemaps"].path) / "meta.json").read_text())["build"]
    return {"way": way, "copies": len(m), "total_s": round(total, 2), "audio_s": round(timing["audio_s"], 2),
            "features_s": round(total - timing["audio_s"], 2), "cpu_s": round(cpu, 1), "egemaps_from_memory": eg.get("clips_from_memory", 0),
            "egemaps_build_s": eg.get("seconds"), "manifest": m, "caches": caches}


def compare(a: dict, b: dict, ssl_clips: int = 64) -> dict:
    """Largest differences between the two ways' values, clip by clip (by copy id; their rows may differ)."""
    out = {}
    for name, limit in (("egemaps", None), ("ssl", ssl_clips)):
        ca, cb = a["caches"][name], b["caches"][name]
        ids = [c.clip_id for c in a["manifest"]][:limit]
        ra = dict(zip([c.clip_id for c in a["manifest"]], ca.rows_for(a["manifest"]), strict=True))
        rb = dict(zip([c.clip_id for c in b["manifest"]], cb.rows_for(b["manifest"]), strict=True))
        worst = 0.0
        for cid in ids:
            x = np.asarray(ca.read(int(ra[cid])), dtype=np.float32)
            y = np.asarray(cb.read(int(rb[cid])), dtype=np.float32)
            if x.shape != y.shape:
                worst = float("inf")
                break
            worst = max(worst, float(np.abs(x - y).max()))
        out[name] = {"clips_compared": len(ids), "max_abs_diff": worst}
    return out


def render(r: dict) -> str:
    m = r["machine"]
    where = m["gpu"] or "no GPU"
    lines = [
        "# Cached augmentation copies and their features: previous way vs new way (issue 25)", "",
        f"Machine: {where}, {m['cpu_cores']} CPU cores; torch {m['torch']} (CUDA {m['cuda']}), transformers "
        f"{m['transformers']}, Python {m['python']}; load average at the start {m['load_average']}.",
        f"Corpus: {r['corpus_clips']} synthetic RAVDESS-shaped clips; fold 0's {r['train_clips']} training clips x "
        f"{r['copies_per_clip']} copies; augment=standard; features: {r['features']} (SSL hidden states + eGeMAPSv02 "
        "functionals); device " + r["device"] + ".",
        "Previous way: every copy made and written, then both caches built from the files (eGeMAPS worker pool "
        "beside the SSL extraction). New way: each group's eGeMAPS queued to niced openSMILE workers from the "
        "samples in memory while the next groups are made; then the caches (eGeMAPS from those values, SSL from "
        "the files). Same process, after a 16-clip warm-up of both ways.",
        "Regenerate: `bash benchmarks/gpu_copies.sh OUTDIR` on the GPU machine (`--cpu-smoke`: small corpus, tiny "
        "backbone, on the CPU).", "",
        "CPU s: CPU seconds of the process and its openSMILE worker processes (the cost, whatever else runs on the "
        "machine).", "",
        "| pair | way | total | making the copies | features after | CPU s | eGeMAPS from memory | target <= 30 s |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for k, pair in enumerate(r["pairs"]):
        for row in pair["rows"]:
            verdict = ("**met**" if row["total_s"] <= TARGET_S else "**missed**") if r["device"] == "cuda" else \
                "(not the issue's size)"
            lines.append(f"| {k + 1} | {row['way']} | {row['total_s']:.1f} s | {row['audio_s']:.1f} s | "
                         f"{row['features_s']:.1f} s | {row['cpu_s']:.1f} | {row['egemaps_from_memory']} of {row['copies']} | "
                         f"{verdict} |")
    lines.append("")
    for k, pair in enumerate(r["pairs"]):
        same = pair["same_values"]
        if same is None:
            continue
        lines.append(f"Pair {k + 1}, new vs previous, copy by copy: eGeMAPS max abs difference "
                     f"{same['egemaps']['max_abs_diff']:.3g} over {same['egemaps']['clips_compared']} copies; SSL "
                     f"hidden states {same['ssl']['max_abs_diff']:.3g} over {same['ssl']['clips_compared']} copies.")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("COPIES_WORK", "/tmp/wav2emo-copies-bench")))
    ap.add_argument("--copies", type=int, default=None, help="copies per clip (4; 2 with --cpu-smoke)")
    ap.add_argument("--pairs", type=int, default=2, help="previous/new pairs at most (a second only if time allows)")
    ap.add_argument("--budget-s", type=float, default=200.0, help="no new pair starts after this many seconds")
    ap.add_argument("--cpu-smoke", action="store_true", help="small corpus, tiny backbone, on the CPU")
    args = ap.parse_args()
    args.copies = args.copies or (2 if args.cpu_smoke else 4)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from wav2emo.augment import build_augment
    from wav2emo.data.corpora import load_corpus
    from wav2emo.data.folds import assemble_fold
    from wav2emo.data.manifest import Manifest

    device = "cpu" if args.cpu_smoke or not torch.cuda.is_available() else "cuda"
    backbone = None if args.cpu_smoke else random_base_backbone(args.work / "wav2vec2-base-random")
    cfg = compose(overrides(args, backbone), args.work / "out", args.work)
    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    train = assemble_fold(manifest, cfg.folds, 0).parts["train"]
    augmenter = build_augment(cfg.augment)
    specs = {name: cfg.features[name] for name in ("ssl", "egemaps")}
    setup_s = time.perf_counter() - start
    print(f"setup {setup_s:.1f} s: {len(train)} training clips, device {device}", flush=True)
    warm = Manifest(list(train)[:16], name=f"{train.name}-warmup", class_names=train.class_names)
    for way in ("previous", "new"):
        one_way(way, warm, augmenter, int(cfg.seed), args.work / f"warm-{way}", specs, device)
    result = {"machine": machine(), "device": device, "corpus_clips": len(manifest), "train_clips": len(train),
              "copies_per_clip": args.copies, "features": str(cfg.features.ssl.name), "setup_s": round(setup_s, 1),
              "pairs": []}
    name = "copies_" + (result["machine"]["gpu"] or "cpu").replace(" ", "_").lower()
    def save() -> None:  # after every row: a run cut short keeps what it measured
        (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / f"{name}.md").write_text(render(result) + "\n")

    for k in range(args.pairs):
        if k and time.perf_counter() - start > args.budget_s:
            break
        pair: dict = {"rows": [], "same_values": None}
        result["pairs"].append(pair)
        rows = []
        for way in ("previous", "new"):
            rows.append(one_way(way, train, augmenter, int(cfg.seed), args.work / f"cache-{way}", specs, device))
            pair["rows"].append({key: v for key, v in rows[-1].items() if key not in ("manifest", "caches")})
            print(pair["rows"][-1], flush=True)
            save()
        pair["same_values"] = compare(rows[0], rows[1])
        print("same values:", pair["same_values"], flush=True)
        del rows
        for way in ("previous", "new"):
            shutil.rmtree(args.work / f"cache-{way}", ignore_errors=True)
        save()
    result["wall_s"] = round(time.perf_counter() - start, 1)
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(render(result))
    print(f"wall {result['wall_s']} s")


if __name__ == "__main__":
    main()
