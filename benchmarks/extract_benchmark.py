"""Benchmark: 1440 RAVDESS-shaped FLAC clips -> a finished all-layer wav2vec2-base float16 feature cache, and
the eGeMAPS cache beside it.

    python benchmarks/extract_benchmark.py --out $OUT/reports      # on a GPU machine, PYTHONPATH=$PWD (~3-4 min)
    python benchmarks/extract_benchmark.py --out /tmp/r --model tiny --clips-per-actor 10   # a small CPU check

What it measures, in one process (and fresh child processes where a user's first run matters):
  1. corpus: the synthetic RAVDESS-shaped corpus (24 actors x 60 clips, 2.9-5.3 s, 16 kHz FLAC);
  2. backbone: a randomly initialised wav2vec2-base (``Wav2Vec2Config()`` defaults), saved with
     save_pretrained to a local folder so the normal loading path (and its weight hashing) is used;
  3. eGeMAPS (``benchmarks/extract_egemaps.py``): openSMILE's throughput on one core in a bare loop, N bare
     loops in N processes (N = cores), our ``get_features`` with N worker processes against N x one core, and
     SSL + eGeMAPS one after the other vs overlapped (``get_features_many``), each in a fresh process;
  4. SSL ``get_features`` from audio files to a finished cache: ``cold`` in a fresh process (``--buckets`` lists
     the cold runs: default one, length buckets of 0.5 s), then in this process ``first``, ``warm`` and ``warm,
     durable=false`` (no fsync per shard); each with model loading included and excluded;
  5. stages alone, to see which one limits: the backbone on pre-decoded batches (no I/O; also plain
     HF without the batch-invariance patch), decoding all clips, writing the same bytes to shards;
  6. checks on the GPU: batched == one-by-one in fp32, and bf16 cache vs fp32 reference error.
``--suite egemaps`` runs 1-3 only, ``--suite ssl`` skips 3.  Results go to ``<out>/extract_<gpu>.json`` and ``.md``
(their text: ``benchmarks/extract_report.py``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


from benchmarks.extract_report import machine, markdown, report_stem  # noqa: E402
from benchmarks.report_files import write_report  # noqa: E402
from wav2emo.backbones import load_backbone, resolve_source  # noqa: E402
from wav2emo.data.audio import load_audio  # noqa: E402
from wav2emo.data.manifest import Clip, Manifest, sha1_of_file  # noqa: E402
from wav2emo.features import get_features  # noqa: E402
from wav2emo.features.cache.reader import FeatureCache  # noqa: E402
from wav2emo.features.cache.writer import CacheBuilder  # noqa: E402
from wav2emo.features.extraction_batches import expected_samples  # noqa: E402


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# Corpus --------------------------------------------------------------------------------------------------
def _fallback_corpus(root: Path, actors: int, per_actor: int) -> Manifest:
    """Harmonic tones of RAVDESS-like durations, used only if wav2emo.data.synthetic is unavailable."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    clips = []
    for a in range(1, actors + 1):
        for k in range(per_actor):
            n = int(rng.uniform(2.94, 5.27) * 16000)
            t = np.arange(n) / 16000
            x = 0.2 * np.sin(2 * np.pi * (100 + 3 * a + 20 * np.sin(2 * np.pi * t)) * t) + 0.01 * rng.standard_normal(n)
            p = root / f"Actor_{a:02d}" / f"03-01-01-01-01-{k % 2 + 1:02d}-{a:02d}-{k:02d}.flac"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, x.astype(np.float32), 16000, subtype="PCM_16")
            clips.append(Clip(p.stem, str(p), "fallback", a, "male" if a % 2 else "female", "neutral", 0, 1, 1,
                              k % 2 + 1, n / 16000, 16000, 1, n, sha1_of_file(p)))
    return Manifest(clips, name="fallback")


def make_corpus(root: Path, actors: int, per_actor: int) -> tuple[Manifest, str]:
    try:
        from wav2emo.data.ravdess import prepare_ravdess
        from wav2emo.data.synthetic import generate_synthetic_corpus
    except ImportError as e:
        log(f"synthetic corpus unavailable ({e}); writing fallback FLAC files")
        return _fallback_corpus(root, actors, per_actor), "fallback tones"
    corpus = generate_synthetic_corpus(root, seed=0, actors=range(1, actors + 1), clips_per_actor=per_actor,
                                       workers=min(16, os.cpu_count() or 1))
    return prepare_ravdess(corpus, corpus_name="synthetic", require_complete=False), "wav2emo.data.synthetic"


def make_backbone(folder: Path, model: str) -> Path:
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from wav2emo.backbones import build_tiny_wav2vec2

    if model == "tiny":
        return build_tiny_wav2vec2(folder, seed=0)
    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    net = Wav2Vec2Model(Wav2Vec2Config())  # the defaults are wav2vec2-base
    net.save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


# Measurements --------------------------------------------------------------------------------------------
def drop_page_cache() -> bool:
    try:
        subprocess.run(["sync"], check=False)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def run_get_features(manifest, spec, cache_dir: Path, device: str) -> dict:
    shutil.rmtree(cache_dir, ignore_errors=True)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    cache = get_features(manifest, spec, cache_dir, device=device, progress=False)
    sync()
    total = time.perf_counter() - t0
    b = cache.meta["build"]
    n = cache.num_clips
    size = sum(p.stat().st_size for p in cache.path.iterdir() if p.is_file())
    out = {
        "total_s": round(total, 3),
        "model_load_s": b["model_load_s"],
        "total_excl_model_load_s": round(total - b["model_load_s"], 3),
        "key_and_open_s": round(total - b["seconds"], 3),
        "pipeline_s": b["extract_s"],
        "wait_input_s": b["wait_input_s"],
        "wait_writer_s": b["wait_writer_s"],
        "write_busy_s": b["write_busy_s"],
        "clips": n,
        "frames": int(cache.lengths.sum()),
        "clips_per_s": round(n / total, 1),
        "clips_per_s_excl_model_load": round(n / (total - b["model_load_s"]), 1),
        "cache_bytes": size,
        "cache_gb": round(size / 1e9, 3),
        "write_gb_per_s": round(size / 1e9 / b["extract_s"], 2),
        "pin_s": b.get("pin_s"),
        "wait_buffer_s": b.get("wait_buffer_s"),
        "transformers_import_s": b.get("transformers_import_s"),
        "length_bucket_s": b.get("length_bucket_s"),
        "batch_s": b.get("batch_s"),
        "peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None,
        "path": str(cache.path),
    }
    return out


def time_backbone(manifest, folder: Path, device: str, batch_size: int, precision: str, workers: int) -> dict:
    """The backbone alone on pre-decoded, pre-padded batches: no decoding, no D2H copy, no writing."""
    dev = torch.device(device)
    bb = load_backbone(resolve_source(folder), device=dev, precision=precision if dev.type == "cuda" else "fp32")
    ex = bb  # the Backbone runs extraction itself
    samples = [expected_samples(c, 16000) for c in manifest]
    order = sorted(range(len(manifest)), key=lambda i: -samples[i])
    with ThreadPoolExecutor(workers) as pool:
        waves = list(pool.map(lambda i: ex.prepare(load_audio(manifest[i].path)), order))
    batches = [ex.pad(waves[k : k + batch_size]) for k in range(0, len(waves), batch_size)]
    batches = [(x.to(dev), lengths) for x, lengths in batches]

    def ours() -> float:
        sync()
        t0 = time.perf_counter()
        for x, lengths in batches:
            ex.extract_batch(x, lengths, torch.float16)
        sync()
        return time.perf_counter() - t0

    autocast = torch.autocast(dev.type, dtype=torch.bfloat16) if ex.precision == "bf16" else torch.autocast(dev.type, enabled=False)

    def plain() -> float:  # HF as shipped: no attention mask, no masked GroupNorm, no stacking
        for _, norm in ex.invariance.norms:
            norm.lengths = None
        sync()
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast:
            for x, _ in batches:
                bb.model(x, output_hidden_states=True)
        sync()
        return time.perf_counter() - t0

    ours(), plain()  # warm-up
    t_ours = sorted(ours() for _ in range(3))[1]
    t_plain = sorted(plain() for _ in range(3))[1]
    n = len(manifest)
    return {"backbone_batch_invariant_s": round(t_ours, 3), "backbone_plain_hf_s": round(t_plain, 3),
            "backbone_clips_per_s": round(n / t_ours, 1), "audio_seconds": round(sum(samples) / 16000, 1)}


def time_decode(manifest, workers: int) -> dict:
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(len(w) for w in pool.map(lambda c: load_audio(c.path), manifest))
    dt = time.perf_counter() - t0
    return {"decode_s": round(dt, 3), "decode_workers": workers, "decoded_samples": total}


def time_write(path: Path, lengths: list[int], shape: tuple[int, int], threads: int, durable: bool) -> dict:
    shutil.rmtree(path, ignore_errors=True)
    n = len(lengths)
    b = CacheBuilder(path, clip_ids=[str(i) for i in range(n)], sha1s=["0"] * n, lengths=lengths,
                     feature_shape=shape, dtype=np.float16, order=sorted(range(n), key=lambda i: -lengths[i]),
                     durable=durable)
    src = (np.random.default_rng(0).standard_normal((max(lengths), *shape)) * 0.5).astype(np.float16)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda i: b.write(i, src[: lengths[i]]), b.pending))
    b.finish({"key": "bench", "kind": "bench"})
    dt = time.perf_counter() - t0
    nbytes = sum(lengths) * math.prod(shape) * 2
    shutil.rmtree(path, ignore_errors=True)
    return {"write_s": round(dt, 3), "write_gb_per_s": round(nbytes / 1e9 / dt, 2), "threads": threads, "durable": durable}


def check_numbers(manifest, folder: Path, device: str, bf16_cache_path: str | None) -> dict:
    """Batched == one-by-one (fp32 on this device) and the bf16 cache's error against fp32 per clip."""
    dev = torch.device(device)
    bb = load_backbone(resolve_source(folder), device=dev, precision="fp32")
    ex = bb
    picks = [i for i in (0, 7, 300, 901) if i < len(manifest)]
    waves = [load_audio(manifest[i].path) for i in picks]
    batched = ex.extract(waves)
    alone = [ex.extract([w])[0] for w in waves]
    gap = max(float(np.abs(a - b).max()) for a, b in zip(batched, alone, strict=True))
    scale = max(float(np.abs(a).max()) for a in alone)
    out = {"fp32_batched_vs_alone_max_abs": gap, "fp32_max_abs_value": scale}
    if bf16_cache_path:
        cache = FeatureCache.open(bf16_cache_path)
        rel = []
        for i, ref in zip(picks, alone, strict=True):
            got = cache.read(cache.index_of(manifest[i].clip_id)).astype(np.float32)
            rel.append(float(np.linalg.norm(got - ref) / np.linalg.norm(ref)))
        out["bf16_cache_vs_fp32_rel_err"] = max(rel)
    return out


def child(args_json: str) -> None:
    """One cold extraction in this fresh process: what a first ``python -m wav2emo.extract`` pays."""
    a = json.loads(args_json)
    t0 = time.perf_counter()
    manifest, _ = make_corpus(Path(a["corpus"]), a["actors"], a["per_actor"])
    corpus_s = time.perf_counter() - t0
    torch.backends.cudnn.enabled = a.get("cudnn", True)
    t0 = time.perf_counter()
    if a["device"] == "cuda":
        torch.zeros(1, device="cuda")
        sync()
    cuda_init_s = time.perf_counter() - t0
    res = run_get_features(manifest, a["spec"], Path(a["cache_dir"]), a["device"])
    res.update({"cuda_init_s": round(cuda_init_s, 2), "manifest_s": round(corpus_s, 2)})
    print("RESULT " + json.dumps(res), flush=True)


def cold_run(work: Path, args, spec: dict, device: str, cache_dir: Path, drop: bool, cudnn: bool = True) -> dict:
    """Run :func:`child` in a fresh interpreter; adds ``process_s`` (imports and CUDA start-up included)."""
    if drop:
        drop_page_cache()
    payload = {"corpus": str(work / "corpus"), "actors": args.actors, "per_actor": args.clips_per_actor,
               "spec": spec, "device": device, "cache_dir": str(cache_dir), "cudnn": cudnn}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(payload)], capture_output=True, text=True)
    process_s = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-1500:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_s"] = round(process_s, 2)
    shutil.rmtree(cache_dir, ignore_errors=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/wav2emo-bench")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(ROOT / "benchmarks" / "reports"))
    ap.add_argument("--actors", type=int, default=24)
    ap.add_argument("--clips-per-actor", type=int, default=60)
    ap.add_argument("--model", choices=["base", "tiny"], default="base")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--workers", type=int, default=min(12, os.cpu_count() or 1))
    ap.add_argument("--writer-threads", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip", default="", help="comma list of: stages,checks,nondurable")
    ap.add_argument("--suite", choices=["all", "ssl", "egemaps"], default="all",
                    help="all: eGeMAPS (with SSL beside it) and SSL; ssl: the SSL runs only; egemaps: eGeMAPS only")
    ap.add_argument("--per-core-clips", type=int, default=40, help="clips in the one-core openSMILE loop")
    ap.add_argument("--buckets", default="0.5",
                    help="cold runs: length_bucket_s values; ':drop' drops the page cache first (needs --drop-page-cache)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--cudnn-off-run", action="store_true", help="one more cold run with cuDNN disabled (diagnosis)")
    ap.add_argument("--drop-page-cache", action="store_true",
                    help="drop the OS page cache before the cold run (root only; only on a machine of your own)")
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    skip = set(filter(None, args.skip.split(",")))
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    r: dict = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(), "notes": []}
    stem = report_stem(r["machine"]["gpu"])

    def save() -> None:
        write_report(out, stem, r, markdown(r))

    t0 = time.perf_counter()
    manifest, source = make_corpus(work / "corpus", args.actors, args.clips_per_actor)
    dur = np.array([c.duration for c in manifest])
    r["corpus"] = {"source": source, "clips": len(manifest), "audio_seconds": round(float(dur.sum()), 1),
                   "min_s": round(float(dur.min()), 2), "max_s": round(float(dur.max()), 2),
                   "seconds_to_generate": round(time.perf_counter() - t0, 1)}
    log(f"corpus: {r['corpus']}")
    t0 = time.perf_counter()
    folder = make_backbone(work / f"wav2vec2-{args.model}-random", args.model)
    r["backbone_build_s"] = round(time.perf_counter() - t0, 1)
    t0 = time.perf_counter()
    if device == "cuda":
        torch.zeros(1, device="cuda")
        torch.ones(8, 8, device="cuda") @ torch.ones(8, 8, device="cuda")
        sync()
    r["cuda_init_s"] = round(time.perf_counter() - t0, 2)
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    r["config"] = {"clips": len(manifest), "batch_size": args.batch_size, "precision": args.precision,
                   "workers": args.workers, "writer_threads": args.writer_threads, "model": args.model,
                   "hidden_states": config.num_hidden_layers + 1, "dim": config.hidden_size, "device": device}
    spec = {"kind": "ssl_hidden_states", "name": f"wav2vec2-{args.model}-random", "backbone": str(folder),
            "batch_size": args.batch_size, "precision": args.precision, "num_workers": args.workers,
            "writer_threads": args.writer_threads}
    r["runs"] = {}
    if args.suite in ("all", "egemaps"):
        from benchmarks.extract_egemaps import run_all

        r["egemaps"] = {}
        run_all(manifest, work, {**spec, "length_bucket_s": 0.5}, device, per_core_clips=args.per_core_clips,
                log=log, save=save, r=r["egemaps"])
    if args.suite == "egemaps":
        save()
        print(markdown(r))
        return
    colds = [(float(b.split(":")[0]), b.endswith(":drop") and args.drop_page_cache, True)
             for b in args.buckets.split(",") if b]
    colds += [(0.0, False, False)] if args.cudnn_off_run and device == "cuda" else []
    for bucket, drop, cudnn in colds:
        name = f"cold, fresh process, buckets {bucket:g} s" + ("" if cudnn else ", cuDNN off") + (
            ", page cache dropped" if drop else "")
        try:
            r["runs"][name] = cold_run(work, args, {**spec, "length_bucket_s": bucket}, device, work / "cache-cold",
                                       drop, cudnn)
            log(f"{name}: {r['runs'][name]}")
        except Exception as e:  # keep what was measured so far
            r["runs"][name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name} failed: {e!r}")
        save()
    plans = [("first in this process", True), ("warm", True)]
    plans += [] if "nondurable" in skip else [("warm, durable=false", False)]
    for name, durable in plans:
        try:
            r["runs"][name] = run_get_features(manifest, {**spec, "durable": durable}, work / f"cache-{len(r['runs'])}", device)
            log(f"{name}: {r['runs'][name]}")
        except Exception as e:  # keep what was measured so far
            r["runs"][name] = {"error": f"{type(e).__name__}: {e}"}
            log(f"{name} failed: {e!r}")
        save()
    bf16_path = r["runs"].get("warm", {}).get("path")

    if "stages" not in skip:
        stages: dict = {}
        try:
            stages.update(time_decode(manifest, args.workers))
            stages.update(time_backbone(manifest, folder, device, args.batch_size, args.precision, args.workers))
            if device == "cuda":
                torch.cuda.empty_cache()
            lengths = FeatureCache.open(bf16_path).lengths.tolist() if bf16_path else None
            if lengths:
                shape = (config.num_hidden_layers + 1, config.hidden_size)
                w = time_write(work / "write-test", lengths, shape, args.writer_threads, True)
                stages["write_alone_durable_s"] = w["write_s"]
                stages["write_alone_durable_gb_per_s"] = w["write_gb_per_s"]
                w = time_write(work / "write-test", lengths, shape, args.writer_threads, False)
                stages["write_alone_page_cache_s"] = w["write_s"]
                stages["write_alone_page_cache_gb_per_s"] = w["write_gb_per_s"]
        except Exception as e:
            stages["error"] = f"{type(e).__name__}: {e}"
        r["stages"] = stages
        log(f"stages: {stages}")
        save()
    if "checks" not in skip:
        try:
            r["checks"] = check_numbers(manifest, folder, device, bf16_path)
        except Exception as e:
            r["checks"] = {"error": f"{type(e).__name__}: {e}"}
        log(f"checks: {r['checks']}")
    for i in range(len(r["runs"])):
        shutil.rmtree(work / f"cache-{i}", ignore_errors=True)
    save()
    print(markdown(r))


if __name__ == "__main__":
    main()
