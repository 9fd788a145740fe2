"""Benchmark: a CREMA-D-scale corpus (7442 clips, 91 actors) on the CPU - the corpus check, then extraction time
and cache size per feature kind.

    OMP_NUM_THREADS=2 python benchmarks/corpus_scale_benchmark.py --out benchmarks/reports   # ~30 min on 2 cores

The corpus is CREMA-D-shaped (``AudioWAV/<actor>_<sentence>_<EMO>_<level>.wav`` for actors 1001..1091 with
``VideoDemographics.csv``, read by the real ``data=crema_d`` recipe with its totals check): each file is a
synthetic RAVDESS-like clip of wav2emo's generator, cut to a CREMA-D-like length (1.3..3.8 s, mean ~2.5 s, the
release's range being 1.3..5.0 s), 16 kHz 16-bit WAV.  Feature kinds: eGeMAPS functionals (openSMILE, one worker
process per core), MFCC statistics, log-mel frames, the tiny random wav2vec2 (all hidden states) over all 7442
clips; a randomly initialised wav2vec2-base (``Wav2Vec2Config()``; the same compute and cache size as the
released weights, which the offline machine cannot fetch) over ``--ssl-clips`` clips, extrapolated to 7442 (the
cost is per second of audio).  Results: ``<out>/corpus_scale_cpu<cores>.json`` and ``.md``.
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
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wav2emo.data.corpora import load_corpus  # noqa: E402
from wav2emo.data.crema_d import CREMA_D_CODES, CREMA_D_SENTENCES  # noqa: E402
from wav2emo.data.synthetic import generate_synthetic_corpus  # noqa: E402
from wav2emo.features import get_features  # noqa: E402

N_CLIPS, FIRST, N_ACTORS = 7442, 1001, 91
LEVELS = ("LO", "MD", "HI", "XX")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def crema_d_shaped(work: Path) -> Path:
    """7442 CREMA-D names over 91 actors, each a synthetic clip cut to a CREMA-D-like length."""
    root = work / "CREMA-D"
    if (root / "AudioWAV").is_dir() and len(list((root / "AudioWAV").iterdir())) == N_CLIPS:
        return root
    source = generate_synthetic_corpus(work / "synthetic-source", seed=0, actors=24, clips_per_actor=60)
    sources = sorted(source.rglob("*.flac"))
    rng = np.random.default_rng(0)
    names = [f"{a}_{s}_{e}_{lvl}" for a in range(FIRST, FIRST + N_ACTORS) for s in sorted(CREMA_D_SENTENCES)
             for e in sorted(CREMA_D_CODES) for lvl in (LEVELS if e != "NEU" else ("XX",))]
    names = sorted(rng.choice(names, size=N_CLIPS, replace=False))
    wav = root / "AudioWAV"
    wav.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        y, sr = sf.read(sources[i % len(sources)], dtype="float32")
        n = int(rng.uniform(1.3, 3.8) * sr)
        sf.write(wav / f"{name}.wav", y[:n], sr, subtype="PCM_16")
    rows = [f"{a},30,{'Male' if a % 2 else 'Female'},Caucasian,Not Hispanic" for a in range(FIRST, FIRST + N_ACTORS)]
    (root / "VideoDemographics.csv").write_text("ActorID,Age,Sex,Race,Ethnicity\n" + "\n".join(rows) + "\n")
    return root


def wav2vec2_base(folder: Path) -> Path:
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if not (folder / "config.json").is_file():
        torch.manual_seed(0)
        Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
        Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                                 return_attention_mask=False).save_pretrained(folder)
    return folder


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def measure(manifest, spec: dict, cache_dir: Path) -> dict:
    shutil.rmtree(cache_dir, ignore_errors=True)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    cache = get_features(manifest, spec, cache_dir, device="cpu", progress=False)
    seconds = time.perf_counter() - t0
    audio_s = sum(c.duration for c in manifest)
    return {"clips": cache.num_clips, "seconds": round(seconds, 1), "clips_per_s": round(cache.num_clips / seconds, 1),
            "audio_s_per_s": round(audio_s / seconds, 1), "cache_bytes": size_of(cache.path),
            "cache_mb": round(size_of(cache.path) / 2**20, 1), "feature_shape": list(cache.feature_shape),
            "frames": int(cache.lengths.sum()), "dtype": str(cache.dtype),
            "load_avg_1min": [round(load_before, 1), round(os.getloadavg()[0], 1)]}


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# CREMA-D-scale corpus on the CPU ({m['cpu_cores']} cores)", "",
             f"Machine: {m['processor']}, {m['cpu_cores']} cores visible, torch threads {m['torch_threads']}, "
             f"Python {m['python']}. Corpus: {r['corpus']['clips']} CREMA-D-shaped clips, {r['corpus']['actors']} "
             f"actors, {r['corpus']['hours']:.2f} h of 16 kHz audio (synthetic speech-like clips cut to CREMA-D "
             "lengths; see benchmarks/corpus_scale_benchmark.py). No GPU was used or measured.", "",
             f"Corpus check (`data=crema_d`, every file decoded and hashed, totals compared): "
             f"{r['corpus']['check_s']} s; cached manifest reloaded in {r['corpus']['reload_s']} s.", "",
             "The machine was shared: the 1-minute load average before and after each kind is listed; times on an "
             "idle 2-core machine would be lower (by up to the load / cores ratio).", "",
             "| feature kind | clips | time | clips/s | audio s per s | cache | shape per frame | load avg |",
             "|---|---:|---:|---:|---:|---:|---|---|"]
    for kind, k in r["features"].items():
        est = " (extrapolated)" if k.get("extrapolated_from") else ""
        lines.append(f"| {kind} | {k['clips']} | {k['seconds']} s{est} | {k['clips_per_s']} | {k['audio_s_per_s']} | "
                     f"{k['cache_mb']} MB{est} | {k['feature_shape']} {k['dtype']} | {k['load_avg_1min']} |")
    lines += ["", "Extrapolated rows were measured on the first clips named in `extrapolated_from` and scaled by "
              "audio duration (time) and frames (cache size) to the whole corpus."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "corpus_scale")
    ap.add_argument("--ssl-clips", type=int, default=200)
    ap.add_argument("--kinds", default="egemaps,mfcc,logmel,tiny_ssl,wav2vec2_base_ssl")
    args = ap.parse_args()
    import torch

    args.work.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    result: dict = {"machine": {"processor": platform.processor() or platform.machine(), "cpu_cores": cores,
                                "torch_threads": torch.get_num_threads(), "python": platform.python_version()},
                    "features": {}}
    log("corpus")
    root = crema_d_shaped(args.work)
    cache_dir = args.work / "cache"
    shutil.rmtree(cache_dir / "manifests", ignore_errors=True)
    t0 = time.perf_counter()
    manifest = load_corpus({"name": "crema_d", "root": str(root)}, cache_dir=cache_dir)
    check_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    load_corpus({"name": "crema_d", "root": str(root)}, cache_dir=cache_dir)
    result["corpus"] = {"clips": len(manifest), "actors": len(manifest.actors),
                        "hours": sum(c.duration for c in manifest) / 3600, "check_s": round(check_s, 1),
                        "reload_s": round(time.perf_counter() - t0, 2)}
    log(f"corpus: {result['corpus']}")
    specs = {
        "egemaps": {"kind": "egemaps_functionals", "name": "egemaps-v02-functionals", "feature_set": "eGeMAPSv02",
                    "shard_mb": 0.03125, "min_clip_s": 0.06},
        "mfcc": {"kind": "mfcc_stats", "name": "mfcc40-stats", "n_mfcc": 40, "n_mels": 64, "win_ms": 25.0,
                 "hop_ms": 10.0, "top_db": 80.0, "center": False},
        "logmel": {"kind": "logmel", "name": "logmel64", "n_mels": 64, "win_ms": 25.0, "hop_ms": 10.0,
                   "log_floor": 1.0e-6, "center": False, "shard_mb": 256},
        "tiny_ssl": {"kind": "ssl_hidden_states", "name": "tiny-wav2vec2", "backbone": str(args.work / "tiny"),
                     "build_tiny": True, "tiny_seed": 0, "batch_size": 16, "precision": "bf16", "num_workers": 2,
                     "shard_mb": 256, "max_batch_s": 200.0, "max_clip_s": 60.0},
        "wav2vec2_base_ssl": {"kind": "ssl_hidden_states", "name": "wav2vec2-base-random",
                              "backbone": str(wav2vec2_base(args.work / "wav2vec2-base-random")), "build_tiny": False,
                              "batch_size": 8, "precision": "bf16", "num_workers": 2, "shard_mb": 256,
                              "max_batch_s": 60.0, "max_clip_s": 60.0},
    }
    for kind in args.kinds.split(","):
        m = manifest
        if kind == "wav2vec2_base_ssl":
            m = manifest.select(manifest.clip_ids[: args.ssl_clips])
        log(f"{kind}: {len(m)} clips")
        r = measure(m, specs[kind], args.work / f"cache-{kind}")
        if len(m) < len(manifest):
            scale = sum(c.duration for c in manifest) / sum(c.duration for c in m)
            r.update(extrapolated_from=len(m), measured_s=r["seconds"], measured_mb=r["cache_mb"],
                     clips=len(manifest), seconds=round(r["seconds"] * scale, 1),
                     cache_mb=round(r["cache_mb"] * scale, 1), clips_per_s=r["clips_per_s"])
        result["features"][kind] = r
        log(f"{kind}: {r}")
        args.out.mkdir(parents=True, exist_ok=True)
        stem = args.out / f"corpus_scale_cpu{cores}"
        stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
        stem.with_suffix(".md").write_text(markdown(result))
    log(f"written {args.out}/corpus_scale_cpu{cores}.md")


if __name__ == "__main__":
    main()
