"""Scale benchmark: a synthetic corpus of CREMA-D's size (7442 clips) and of 20 000 clips - extraction
throughput and cache size per feature kind, then memory-mapped training throughput and host memory.

    python benchmarks/scale_benchmark.py --device cuda --out OUTDIR     # one H100, 16 cores: < 5 min
    OMP_NUM_THREADS=2 python benchmarks/scale_benchmark.py --device cpu --out benchmarks/reports   # 2 cores
    python benchmarks/scale_benchmark.py --device cpu --smoke --out /tmp/x                         # a minute

Corpus: 91 speakers, 6 classes (CREMA-D's), clip i has speaker i % 91 and class (i // 91) % 6, a CREMA-D-like
duration (1.27 + Gamma(4, 0.32) s, cut at 5.0 s: mean about 2.55 s) cut from wav2emo's synthetic speech-like
clips (``wav2emo.data.synthetic``), 16 kHz 16-bit WAV in the ``data=folder`` layout ``<class>/<speaker>_<i>.wav``.
Written once in parallel (a process per core); the 20 000-clip corpus is the 7442 plus 12 558 more (hard links).
Each size is read by the real ``data=folder`` recipe (every file decoded and hashed: the corpus check, timed).

Feature kinds (each cache built from scratch, timed): log-mel frames, MFCC statistics, eGeMAPS functionals
(openSMILE, one worker process per core), SSL hidden states (all layers) of a randomly initialised
wav2vec2-base (``Wav2Vec2Config()``: the released model's compute and cache size) on ``--device cuda``, of the
tiny random wav2vec2 on ``--device cpu``.  Where a kind's clip cap (``--caps``) is below the corpus size, it
runs on a subset covering every speaker and class and the report extrapolates the time and
cache size to the whole corpus by the audio seconds (time) and frames (size), and says so on that row.

Training (memory-mapped: ``loader.resident=false``): the kind's default head (SSL: fe_vgg; log-mel:
fe_vgg_logmel; eGeMAPS: egemaps_mlp; MFCC has no neural head - its models are the scikit-learn baselines),
fold 0, one epoch without validation through the real data module, at most ``--train-batches`` batches
(clips/s from those; the report says when the epoch was cut).  Host memory: the process's resident set
(VmRSS, and its anonymous part RssAnon, which leaves out the page cache of memory-mapped files) sampled every
20 ms during extraction and training, and ``ru_maxrss``.  Results: ``<out>/scale_<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.report_files import write_report  # noqa: E402

SPEAKERS = 91
CLASSES = ("angry", "disgust", "fearful", "happy", "neutral", "sad")
SIZES = (7442, 20000)
SR = 16000
HEADS = {"logmel": "fe_vgg_logmel", "mfcc": None, "egemaps": "egemaps_mlp", "ssl": "fe_vgg"}
FEATURES = {"logmel": "logmel", "mfcc": "mfcc", "egemaps": "egemaps"}
SSL_BACKBONE = {"cuda": "a randomly initialised wav2vec2-base (12 layers x 768, all 13 hidden states cached)",
                "cpu": "the tiny random wav2vec2 (features=tiny: 3 layers x 32, all 4 hidden states cached; a "
                       "wav2vec2-base runs at about 1 s of audio per second on 2 CPU cores: corpus_scale_cpu2.md)"}
CAPS = {"cuda": {"logmel": 20000, "mfcc": 20000, "egemaps": 1000, "ssl": 1000},
        "cpu": {"logmel": 20000, "mfcc": 20000, "egemaps": 150, "ssl": 400}}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# The corpus ---------------------------------------------------------------------------------------------------
def clip_name(i: int) -> str:
    return f"{CLASSES[(i // SPEAKERS) % len(CLASSES)]}/spk{i % SPEAKERS + 1:03d}_{i:05d}.wav"


def clip_seconds(i: int) -> float:
    return float(min(5.0, 1.27 + np.random.default_rng([7, i]).gamma(4.0, 0.32)))


def _write_clips(args: tuple[list[str], Path, list[int]]) -> int:
    sources, pool, indices = args
    for i in indices:
        path = pool / clip_name(i)
        if path.is_file():
            continue
        y, sr = sf.read(sources[i % len(sources)], dtype="float32")
        n = int(clip_seconds(i) * sr)
        y = np.resize(y, n) if len(y) < n else y[:n]  # repeat a short source
        tmp = path.with_name(f".{path.name}.tmp.wav")
        sf.write(tmp, y, sr, subtype="PCM_16")
        os.replace(tmp, path)
    return len(indices)


def synthesize(work: Path, n: int, cores: int) -> tuple[Path, float]:
    """``work/pool`` with clips 0..n-1 (written in parallel; kept for later runs)."""
    from wav2emo.data.synthetic import generate_synthetic_corpus

    t0 = time.perf_counter()
    source = generate_synthetic_corpus(work / "synthetic-source", seed=0, actors=24, clips_per_actor=60,
                                       workers=cores)
    sources = [str(p) for p in sorted(source.rglob("*.flac"))]
    pool = work / "pool"
    for c in CLASSES:
        (pool / c).mkdir(parents=True, exist_ok=True)
    chunks = [list(range(s, n, cores * 8)) for s in range(cores * 8)]
    with ProcessPoolExecutor(cores) as ex:
        list(ex.map(_write_clips, [(sources, pool, ch) for ch in chunks]))
    return pool, time.perf_counter() - t0


def linked_root(pool: Path, root: Path, indices: list[int]) -> Path:
    """A corpus folder of hard links to the chosen clips of the pool (rebuilt if its clip list differs)."""
    listing = root / ".clips.json"
    if listing.is_file() and json.loads(listing.read_text()) == indices:
        return root
    shutil.rmtree(root, ignore_errors=True)
    for c in CLASSES:
        (root / c).mkdir(parents=True)
    for i in indices:
        os.link(pool / clip_name(i), root / clip_name(i))
    listing.write_text(json.dumps(indices))
    return root


def subset(n: int, cap: int) -> list[int]:
    """``cap`` of clips 0..n-1 spread over the whole corpus and covering every speaker and class: the k-th has
    speaker k % 91 and class k % 6 (91 and 6 share no factor, so 546 successive picks are every pair once),
    taken from block ``k * blocks // cap`` of the corpus's blocks of 546 clips."""
    block = SPEAKERS * len(CLASSES)
    blocks = n // block
    if cap >= n:
        return list(range(n))
    if cap > blocks * block:
        return sorted({int(round(k * n / cap)) for k in range(cap)} - {n})
    return sorted(block * (k * blocks // cap) + SPEAKERS * (k % len(CLASSES)) + k % SPEAKERS for k in range(cap))


# Measuring ----------------------------------------------------------------------------------------------------
class HostMemory:
    """Peak VmRSS / RssAnon of this process, sampled every 20 ms in a thread while the block runs (MiB)."""

    def __enter__(self) -> HostMemory:
        self.peak = {"rss_mib": 0.0, "rss_anon_mib": 0.0}
        self.start = self._read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    @staticmethod
    def _read() -> dict[str, float]:
        out = {"rss_mib": 0.0, "rss_anon_mib": 0.0}
        try:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out["rss_mib"] = int(line.split()[1]) / 1024
                elif line.startswith("RssAnon:"):
                    out["rss_anon_mib"] = int(line.split()[1]) / 1024
        except OSError:
            pass
        return out

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            for k, v in self._read().items():
                self.peak[k] = max(self.peak[k], v)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        for k, v in self._read().items():
            self.peak[k] = max(self.peak[k], v)

    def summary(self) -> dict[str, float]:
        return {"peak_rss_mib": round(self.peak["rss_mib"]), "peak_rss_anon_mib": round(self.peak["rss_anon_mib"]),
                "start_rss_mib": round(self.start["rss_mib"]), "start_rss_anon_mib": round(self.start["rss_anon_mib"])}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def random_wav2vec2_base(folder: Path) -> Path:
    from benchmarks.train_benchmark import random_base_backbone

    return random_base_backbone(folder)


def compose_for(root: Path, kind: str, device: str, work: Path, backbone: Path | None, workers: int):
    from benchmarks.train_benchmark import compose

    if kind == "ssl":
        feats = (["features=wav2vec2-base", f"features.ssl.backbone={backbone}"] if device == "cuda"
                 else ["features=tiny"])
    else:
        feats = [f"features={FEATURES[kind]}"]
    overrides = ["data=folder", f"data.corpus.root={root}", *feats, f"model={HEADS[kind] or 'egemaps_mlp'}",
                 f"trainer={'gpu' if device == 'cuda' else 'cpu'}", "trainer.enable_progress_bar=false",
                 "logger=none", "loader.resident=false", f"loader.num_workers={workers}"]
    return compose(overrides, work / "out", work)


def extraction(cfg, kind: str, device: str) -> tuple[object, dict]:
    from wav2emo.data.corpora import load_corpus
    from wav2emo.features import get_features

    t0 = time.perf_counter()
    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    check_s = time.perf_counter() - t0
    spec = dict(cfg.features[kind if kind != "ssl" else "ssl"])
    with HostMemory() as mem:
        t0 = time.perf_counter()
        cache = get_features(manifest, spec, cfg.paths.cache_dir, device=device, progress=False)
        seconds = time.perf_counter() - t0
    audio_s = sum(c.duration for c in manifest)
    return manifest, {
        "clips": cache.num_clips, "audio_s": round(audio_s, 1), "corpus_check_s": round(check_s, 2),
        "seconds": round(seconds, 2), "clips_per_s": round(cache.num_clips / seconds, 1),
        "audio_s_per_s": round(audio_s / seconds, 1), "cache_bytes": size_of(cache.path),
        "cache_mib": round(size_of(cache.path) / 2**20, 1), "feature_shape": list(cache.feature_shape),
        "frames": int(cache.lengths.sum()), "dtype": str(cache.dtype), "host_memory": mem.summary(),
    }


def training(cfg, device: str, max_batches: int) -> dict:
    import lightning as L
    import torch

    from wav2emo.runs.build import build_datamodule, build_module

    with HostMemory() as mem:
        t0 = time.perf_counter()
        dm = build_datamodule(cfg, 0)
        dm.prepare_data()
        dm.setup("fit")
        module = build_module(cfg, dm)
        setup_s = time.perf_counter() - t0
        n_train = len(dm.parts["train"])
        batch = int(cfg.loader.batch_size)
        batches = -(-n_train // batch)
        limit = min(batches, max_batches)
        trainer = L.Trainer(max_epochs=1, accelerator="gpu" if device == "cuda" else "cpu", devices=1,
                            precision=cfg.trainer.get("precision", "32-true"), logger=False,
                            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, limit_val_batches=0, limit_train_batches=limit)
        t0 = time.perf_counter()
        trainer.fit(module, datamodule=dm)
        if device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    clips = min(n_train, limit * batch)
    return {"train_clips": n_train, "batch_size": batch, "batches": limit, "epoch_batches": batches,
            "cut": limit < batches, "clips": clips, "setup_s": round(setup_s, 2), "seconds": round(seconds, 2),
            "clips_per_s": round(clips / seconds, 1), "host_memory": mem.summary()}


def machine(device: str) -> dict:
    import torch

    m = {"device": device, "processor": platform.processor() or platform.machine(),
         "cpu_cores": len(os.sched_getaffinity(0)), "torch_threads": torch.get_num_threads(),
         "python": platform.python_version(), "torch": torch.__version__}
    if device == "cuda":
        m["gpu"] = torch.cuda.get_device_name(0)
    return m


# Report -------------------------------------------------------------------------------------------------------
def markdown(r: dict) -> str:
    m = r["machine"]
    where = f"{m['gpu']}, {m['cpu_cores']} CPU cores" if m["device"] == "cuda" else f"CPU only, {m['cpu_cores']} cores"
    lines = [f"# Scale benchmark: {where}", "",
             f"Machine: {where} ({m['processor']}), torch {m['torch']} ({m['torch_threads']} threads), Python "
             f"{m['python']}; {r['when']}; 1-minute load average before/after: {r['load']}. Command: "
             f"`{r['command']}`. Synthetic corpora (91 speakers, 6 classes, CREMA-D-like durations; see "
             f"benchmarks/scale_benchmark.py): written in {r['synthesis_s']} s for {max(r['sizes'])} clips "
             f"{r.get('synthesis_note', '')}.", "",
             f"SSL rows: {r.get('ssl_backbone', '')}.", "", "## Extraction", "",
             "| corpus | kind | clips measured | corpus check | time | clips/s | audio s per s | cache | per frame "
             "| peak RSS (anon: start -> peak) | whole corpus: time, cache |",
             "|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for size, kinds in r["runs"].items():
        for kind, v in kinds.items():
            e = v.get("extraction")
            if not e:
                continue
            hm = e["host_memory"]
            whole = (f"{e['whole_seconds']} s, {e['whole_cache_mib']} MiB (extrapolated from {e['clips']} clips)"
                     if e.get("extrapolated") else f"{e['seconds']} s, {e['cache_mib']} MiB (measured)")
            check = e["corpus_check_s"] if isinstance(e["corpus_check_s"], str) else f"{e['corpus_check_s']} s"
            lines.append(f"| {size} | {kind} | {e['clips']} | {check} | {e['seconds']} s | "
                         f"{e['clips_per_s']} | {e['audio_s_per_s']} | {e['cache_mib']} MiB | "
                         f"{e['feature_shape']} {e['dtype']} | {hm['peak_rss_mib']} ({hm['start_rss_anon_mib']} -> "
                         f"{hm['peak_rss_anon_mib']}) MiB "
                         f"| {whole} |")
    lines += ["", "## Memory-mapped training (`loader.resident=false`), fold 0, one epoch without validation", "",
              "| corpus | kind | head | training clips | batches run | setup | time | clips/s | peak RSS (anon: start -> peak) |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for size, kinds in r["runs"].items():
        for kind, v in kinds.items():
            t = v.get("training")
            if t is None:
                lines.append(f"| {size} | {kind} | - | | | | | | {v.get('training_note', '')} |")
                continue
            if "error" in t:
                lines.append(f"| {size} | {kind} | {HEADS[kind]} | failed: {t['error'][:160]} | | | | | |")
                continue
            hm = t["host_memory"]
            cut = f"{t['batches']} of {t['epoch_batches']} (cut)" if t["cut"] else f"{t['batches']} (whole epoch)"
            lines.append(f"| {size} | {kind} | {HEADS[kind]} | {t['train_clips']} | {cut} | {t['setup_s']} s | "
                         f"{t['seconds']} s | {t['clips_per_s']} | {hm['peak_rss_mib']} ({hm['start_rss_anon_mib']} -> "
                         f"{hm['peak_rss_anon_mib']}) MiB |")
    lines += ["", "Rows measured on fewer clips than the corpus ran on a subset (its own corpus folder, "
              "every speaker and class present where the cap allows 91 x 6); the whole corpus's time is extrapolated by audio seconds and its "
              "cache size by frames. A training row with `(cut)` timed that many batches of its epoch. Peak RSS is "
              "the process's resident set during that step (sampled every 20 ms; it includes the page cache of the "
              "memory-mapped features), its anonymous part in brackets (at the step's start and its peak: the process "
              "keeps what earlier steps imported and built, so the increase is the step's own); the process's lifetime maximum "
              f"(ru_maxrss) was {r['ru_maxrss_mib']} MiB. MFCC statistics have no neural head (their models are the "
              "scikit-learn baselines), so no training row."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "reports")
    ap.add_argument("--work", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "wav2emo-scale")
    ap.add_argument("--sizes", type=int, nargs="*", default=list(SIZES))
    ap.add_argument("--kinds", default="ssl,logmel,egemaps,mfcc")
    ap.add_argument("--caps", default="", help="kind=clips,... (defaults per device: see CAPS)")
    ap.add_argument("--train-batches", type=int, default=None, help="at most this many batches per epoch")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes and caps: checks the script in a minute")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    cores = len(os.sched_getaffinity(0))
    caps = dict(CAPS[args.device])
    caps.update({k: int(v) for k, v in (kv.split("=") for kv in args.caps.split(",") if kv)})
    sizes = sorted(args.sizes)
    max_batches = args.train_batches or (400 if args.device == "cuda" else 8)
    if args.smoke:
        sizes, caps, max_batches = [300, 600], {**caps, "egemaps": 60, "ssl": 60}, 2
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no GPU visible; use --device cpu")
    args.work.mkdir(parents=True, exist_ok=True)
    load = [round(os.getloadavg()[0], 1)]
    result: dict = {"machine": machine(args.device), "sizes": sizes, "caps": caps, "train_batches": max_batches,
                    "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "command": "python benchmarks/scale_benchmark.py " + " ".join(sys.argv[1:]), "runs": {}}
    log(f"synthesising {max(sizes)} clips on {cores} cores")
    reused = (args.work / "pool").is_dir()
    pool, synth_s = synthesize(args.work, max(sizes), cores)
    result["synthesis_s"] = round(synth_s, 1)
    result["ssl_backbone"] = SSL_BACKBONE[args.device]
    result["synthesis_note"] = "(clips found from an earlier run in the same --work folder)" if reused else ""
    log(f"synthesised in {synth_s:.1f} s")
    backbone = random_wav2vec2_base(args.work / "wav2vec2-base-random") if args.device == "cuda" else None
    workers = min(2, cores)  # loader.num_workers's default (memory-mapped reads in worker processes)
    stem = f"scale_{args.device}"
    work = args.work / f"run-{args.device}"
    cache_dir = work / "cache"
    for old in ("folder", "manifests"):  # every cache and corpus check from scratch (this folder is the benchmark's)
        shutil.rmtree(cache_dir / old, ignore_errors=True)
    checked: set[str] = set()
    for size in sizes:
        runs = result["runs"].setdefault(str(size), {})
        for kind in args.kinds.split(","):
            chosen = subset(size, caps[kind])
            name = f"corpus-{size}" if len(chosen) == size else f"corpus-{size}-{kind}-{len(chosen)}"
            root = linked_root(pool, args.work / name, chosen)
            cfg = compose_for(root, kind, args.device, work, backbone, workers)
            shutil.rmtree(cache_dir / "folder", ignore_errors=True)  # this kind's cache from scratch, whatever it holds
            log(f"{size} {kind}: extraction of {len(chosen)} clips")
            try:
                manifest, e = extraction(cfg, kind, args.device)
            except Exception as ex:  # one failing kind must not lose the others' numbers
                runs[kind] = {"extraction": None, "error": f"{type(ex).__name__}: {ex}"[:1000]}
                log(f"{size} {kind}: {runs[kind]['error']}")
                continue
            if name in checked:
                e["corpus_check_s"] = f"{e['corpus_check_s']} s (manifest cached)"
            checked.add(name)
            if len(chosen) < size:
                full_s = sum(clip_seconds(i) for i in range(size))
                scale = full_s / e["audio_s"]
                e.update(extrapolated=True, whole_seconds=round(e["seconds"] * scale, 1),
                         whole_cache_mib=round(e["cache_mib"] * scale, 1))
            runs[kind] = {"extraction": e}
            log(f"{size} {kind}: {e}")
            if HEADS[kind] is None:
                runs[kind]["training"] = None
                runs[kind]["training_note"] = "no neural head (scikit-learn baselines)"
            else:
                try:
                    runs[kind]["training"] = training(cfg, args.device, max_batches)
                except Exception as ex:
                    runs[kind]["training"] = {"error": f"{type(ex).__name__}: {ex}"[:1000]}
                log(f"{size} {kind} training: {runs[kind]['training']}")
            result["ru_maxrss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            result["load"] = load + [round(os.getloadavg()[0], 1)]
            write_report(args.out, stem, result, markdown(result))
    log(f"written {args.out / stem}.md")


if __name__ == "__main__":
    main()
