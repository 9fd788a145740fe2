"""Cost per backbone family on one GPU (issue 19, item 6): randomly initialised models of the REAL sizes, built
from their transformers configs on the GPU (no downloads), run through wav2emo's one Backbone contract.

    PYTHONPATH=$PWD python benchmarks/backbone_benchmark.py --out $OUT --budget-s 380

Measures, in one process, on 1440 RAVDESS-shaped clips (2.94-5.26 s at 16 kHz, random noise: compute does not
depend on the values):
  1. extraction: clips/s and peak GPU memory of ``Backbone.extract_batch`` (bf16 autocast, batch invariance, all
     hidden states to pinned host memory as float16) for base and large of wav2vec2, HuBERT, WavLM, data2vec-audio
     and Whisper's encoders tiny..large-v3 (batches planned as extraction plans them: longest first, at most
     ``max_batch_s`` seconds of padded audio);
  2. the whole ``get_features`` (WAV files -> finished cache, with weight hashing, loading, decoding and writing)
     for wavlm-large and whisper-large-v3 with their conf/features defaults (every other / every 4th hidden state);
  3. fine-tuning epochs on 1020 training clips, batch 25, bf16 autocast, AdamW, a mean-pool + linear head:
     top_k (k=4, from cached hidden states), full (front end frozen) without and with gradient checkpointing;
     seconds per epoch and peak GPU memory.
Items are skipped (and say so) once ``--budget-s`` is spent.  Writes ``backbones_<gpu>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from wav2emo.backbones import wrap_model  # noqa: E402
from wav2emo.backbones.family import frame_mask  # noqa: E402

DEV = os.environ.get("BENCH_DEVICE", "cuda")  # cpu: a dry run of the code paths (with --only and --clips)
LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
STABLE = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
WHISPER = {  # d_model, encoder layers, heads, ffn, mel bins
    "whisper-tiny": (384, 4, 6, 1536, 80), "whisper-base": (512, 6, 8, 2048, 80),
    "whisper-small": (768, 12, 12, 3072, 80), "whisper-medium": (1024, 24, 16, 4096, 80),
    "whisper-large-v3": (1280, 32, 20, 5120, 128),
}
EXTRACT = ["wav2vec2-base", "wav2vec2-large", "hubert-base-ls960", "hubert-large-ll60k", "wavlm-base", "wavlm-large",
           "data2vec-audio-base", "data2vec-audio-large", *WHISPER]
FINETUNE = ["wav2vec2-base", "wavlm-large", "whisper-large-v3", "wavlm-base", "hubert-large-ll60k",
            "data2vec-audio-large", "wav2vec2-large", "whisper-small", "whisper-medium"]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def config_of(name: str) -> Any:
    import transformers as tf

    if name in WHISPER:
        d, layers, heads, ffn, mels = WHISPER[name]
        return tf.WhisperConfig(d_model=d, encoder_layers=layers, encoder_attention_heads=heads, encoder_ffn_dim=ffn,
                                decoder_layers=1, decoder_attention_heads=heads, decoder_ffn_dim=ffn, num_mel_bins=mels,
                                max_source_positions=1500)
    cls = {"wav2vec2": tf.Wav2Vec2Config, "hubert": tf.HubertConfig, "wavlm": tf.WavLMConfig,
           "data2vec": tf.Data2VecAudioConfig}[name.split("-")[0]]
    if "large" not in name:
        return cls()  # the defaults are the base architectures
    return cls(**LARGE, **({} if name.startswith("data2vec") else STABLE))


def build(name: str, trainable: bool = False):
    """The model of ``name`` with random weights, built on the GPU, as its family's Backbone."""
    cfg = config_of(name)
    cfg.layerdrop = 0.0
    if hasattr(cfg, "mask_time_prob"):
        cfg.mask_time_prob = 0.0
    with torch.device(DEV):
        torch.manual_seed(0)
        if name in WHISPER:
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            model = WhisperEncoder(cfg)
        else:
            from transformers import AutoModel

            model = AutoModel.from_config(cfg)
    model.requires_grad_(trainable)
    model.eval()
    pre = {"feature_size": cfg.num_mel_bins} if name in WHISPER else None
    return wrap_model(model, normalize=name not in WHISPER, device=DEV, precision="bf16", preprocessor=pre)


def corpus_lengths(n: int = 1440, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(s * 16000) for s in rng.uniform(2.94, 5.26, n)]


def plan(lengths: list[int], batch_size: int, max_batch_s: float) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches, cur = [], []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) >= batch_size or (len(cur) + 1) * width > max_batch_s * 16000):
            batches.append(cur)
            cur = []
        cur.append(i)
    return batches + ([cur] if cur else [])


def sync() -> None:
    if DEV == "cuda":
        torch.cuda.synchronize()


def reset_peak() -> None:
    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak() -> float:
    return float(torch.cuda.max_memory_allocated()) if DEV == "cuda" else 0.0


def empty_cache() -> None:
    if DEV == "cuda":
        torch.cuda.empty_cache()


def gib(x: float) -> float:
    return round(x / 2**30, 2)


def time_extraction(name: str, waves: list[np.ndarray]) -> dict:
    large = "large" in name or "medium" in name
    bb = build(name)
    sync()
    reset_peak()
    batches = plan([len(w) for w in waves], 16 if large else 32, 100.0 if large else 200.0)
    prepared = [bb.prepare(w) for w in waves]
    host = None
    t0 = t_warm = time.perf_counter()
    n_warm = 0
    for k, b in enumerate(batches):
        if k == 2:  # the first batches pay for kernel selection: timed apart
            sync()
            t_warm, n_warm = time.perf_counter(), sum(len(x) for x in batches[:2])
        x, lengths = bb.pad([prepared[i] for i in b], multiple=8000)
        res, frames = bb.extract_batch(x, lengths, torch.float16)
        if host is None or host.numel() < res.numel():
            host = torch.empty(res.numel() * 2, dtype=torch.float16, pin_memory=DEV == "cuda")
        host[: res.numel()].view(res.shape).copy_(res, non_blocking=True)
    sync()
    total = time.perf_counter() - t0
    steady = time.perf_counter() - t_warm
    frames_total = sum(bb.num_frames(len(w)) for w in waves)
    out = {"model": name, "family": bb.family, "layers": bb.num_layers, "width": bb.hidden_size,
           "params_m": round(sum(p.numel() for p in bb.model.parameters()) / 1e6, 1),
           "clips_per_s": round(len(waves) / total, 1), "steady_clips_per_s": round((len(waves) - n_warm) / steady, 1),
           "seconds": round(total, 2), "peak_gpu_gib": gib(peak()),
           "all_states_cache_gb": round(frames_total * bb.num_hidden_states * bb.hidden_size * 2 / 1e9, 2)}
    del bb, host
    empty_cache()
    return out


def save_folder(name: str, folder: Path) -> Path:
    """A save_pretrained folder of ``name`` (random weights), loadable by wav2emo like a hub checkpoint."""
    import transformers as tf

    cfg = config_of(name)
    with torch.device(DEV):
        torch.manual_seed(0)
        model = tf.WhisperModel(cfg) if name in WHISPER else tf.AutoModel.from_config(cfg)
    model.save_pretrained(folder)
    if name in WHISPER:
        tf.WhisperFeatureExtractor(feature_size=cfg.num_mel_bins).save_pretrained(folder)
    else:
        tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    del model
    empty_cache()
    return folder


def time_get_features(name: str, manifest, work: Path) -> dict:
    from omegaconf import OmegaConf

    from wav2emo.features import get_features

    folder = save_folder(name, work / f"model-{name}")
    conf = REPO / "conf" / "features"  # the hub-id configs extend wav2vec2-base (their Hydra defaults list)
    merged = OmegaConf.merge(OmegaConf.load(conf / "wav2vec2-base.yaml").ssl, OmegaConf.load(conf / f"{name}.yaml").ssl)
    spec = dict(OmegaConf.to_container(merged))
    spec.update(backbone=str(folder), num_workers=12)
    reset_peak()
    t0 = time.perf_counter()
    cache = get_features(manifest, spec, work / "cache", device=DEV, progress=False)
    seconds = time.perf_counter() - t0
    b = cache.meta["build"]
    size = sum(p.stat().st_size for p in Path(cache.path).rglob("*") if p.is_file())
    return {"model": name, "layers_stored": cache.meta["layer_indices"], "get_features_s": round(seconds, 2),
            "model_load_s": b.get("model_load_s"), "excl_model_load_s": round(seconds - float(b.get("model_load_s", 0)), 2),
            "cache_gb": round(size / 1e9, 2), "peak_gpu_gib": gib(peak())}


def time_finetune(name: str, waves: list[np.ndarray], mode: str, checkpointing: bool = False) -> dict:
    from wav2emo.models.upstream import SSLUpstream

    bb = build(name, trainable=True)
    up = SSLUpstream(bb, mode=mode, k=4 if mode == "top_k" else None, gradient_checkpointing=checkpointing).train()
    head = torch.nn.Linear(bb.hidden_size, 8, device=DEV)
    params = [p for p in up.parameters() if p.requires_grad] + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-5)
    train = waves[: min(1020, len(waves))]
    batches = [train[i:i + 25] for i in range(0, len(train), 25)]
    rng = torch.Generator(device=DEV).manual_seed(0)
    sync()
    reset_peak()

    def step(ws: list[np.ndarray]) -> None:
        lengths = torch.tensor([len(w) for w in ws], device=DEV)
        if mode == "top_k":
            frames = [bb.num_frames(len(w)) for w in ws]
            mask = frame_mask(frames, max(frames), DEV)
            ssl = torch.randn(len(ws), bb.num_hidden_states, max(frames), bb.hidden_size, device=DEV,
                              dtype=torch.float16, generator=rng)
            batch = {"ssl": ssl, "ssl_mask": mask}
        else:
            x = torch.zeros(len(ws), int(lengths.max()), device=DEV)
            for i, w in enumerate(ws):
                x[i, : len(w)] = torch.from_numpy(w).to(DEV, non_blocking=True)
            batch = {"wave": x, "wave_lengths": lengths}
        with torch.autocast(DEV, dtype=torch.bfloat16):
            out = up(batch)
            m = out["ssl_mask"][:, :, None].to(torch.bfloat16)
            pooled = (out["ssl"][:, -1] * m).sum(1) / m.sum(1)
            loss = torch.nn.functional.cross_entropy(head(pooled).float(), torch.zeros(len(ws), dtype=torch.long,
                                                                                         device=DEV))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:2]:  # warm-up: kernel selection, optimizer state
        step(b)
    sync()
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    sync()
    out = {"model": name, "mode": mode + (" + checkpointing" if checkpointing else ""),
           "epoch_s": round(time.perf_counter() - t0, 2), "steps": len(batches),
           "peak_gpu_gib": gib(peak()),
           "trained_params_m": round(sum(p.numel() for p in params) / 1e6, 1)}
    return out  # the models go with this frame; the caller empties the CUDA cache


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = [f"# Backbone families on one GPU: {m['gpu']}", "",
             f"Generated by `benchmarks/backbone_benchmark.py` on {r['date']}. Randomly initialised models of the real "
             "sizes built from their transformers configs (no downloads); 1440 RAVDESS-shaped clips (2.94-5.26 s, "
             f"{r['audio_s']:.0f} s of audio). torch {m['torch']}, CUDA {m['cuda']}, transformers {m['transformers']}, "
             f"{m['cpu_cores']} CPUs.", "",
             "## Extraction (`Backbone.extract_batch`: bf16, batch-invariant, every hidden state to pinned host memory)",
             "", "| model | family | layers x width | params M | clips/s | clips/s after 2 batches | s (1440 clips) | "
             "peak GPU GiB | all-states cache GB |", "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for e in r["extraction"]:
        lines.append(f"| {e['model']} | {e['family']} | {e['layers']} x {e['width']} | {e['params_m']} | "
                     f"{e['clips_per_s']} | {e['steady_clips_per_s']} | {e['seconds']} | {e['peak_gpu_gib']} | "
                     f"{e['all_states_cache_gb']} |")
    lines += ["", "## Audio files -> finished cache (`get_features`, conf/features defaults, writing included)", "",
              "| model | hidden states stored | get_features s | model load s | excl. load s | cache GB | peak GPU GiB |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for g in r["get_features"]:
        lines.append(f"| {g['model']} | {len(g['layers_stored'])} | {g['get_features_s']} | {g['model_load_s']} | "
                     f"{g['excl_model_load_s']} | {g['cache_gb']} | {g['peak_gpu_gib']} |")
    lines += ["", "## Fine-tuning epochs (1020 clips, batch 25, bf16 autocast, AdamW; top_k k=4 from cached states)", "",
              "| model | mode | epoch s | steps | peak GPU GiB | trained params M |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for f in r["finetune"]:
        lines.append(f"| {f['model']} | {f['mode']} | {f['epoch_s']} | {f['steps']} | {f['peak_gpu_gib']} | "
                     f"{f['trained_params_m']} |")
    if r["skipped"]:
        lines += ["", "Skipped (time budget spent): " + ", ".join(r["skipped"])]
    if r["errors"]:
        lines += ["", "Errors: " + "; ".join(r["errors"])]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("/tmp/backbone-bench"))
    ap.add_argument("--budget-s", type=float, default=380.0)
    ap.add_argument("--clips", type=int, default=1440)
    ap.add_argument("--only", nargs="*", default=None, help="model names to run (default: all)")
    args = ap.parse_args()
    import transformers

    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0) if DEV == "cuda" else "cpu"
    r: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M"), "extraction": [], "get_features": [],
                         "finetune": [], "skipped": [], "errors": [],
                         "machine": {"gpu": gpu, "cpu_cores": os.cpu_count(), "torch": torch.__version__,
                                     "cuda": torch.version.cuda, "transformers": transformers.__version__,
                                     "python": platform.python_version()}}
    slug = machine_slug(gpu)
    lengths = corpus_lengths(args.clips)

    def keep(name: str) -> bool:
        return args.only is None or name in args.only

    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]
    r["audio_s"] = sum(lengths) / 16000

    def save() -> None:
        write_report(args.out, f"backbones_{slug}", r, markdown(r))

    def within(share: float) -> bool:
        return time.perf_counter() - start < share * args.budget_s

    def attempt(what: str, fn, *a, share: float = 1.0, into: str | None = None):
        if not within(share):
            r["skipped"].append(what)
            return None
        log(what)
        try:
            res = fn(*a)
            if into is not None:
                r[into].append(res)  # before save(): a crash later keeps this row
            return res
        except Exception as e:  # noqa: BLE001 - a report names what failed and goes on
            r["errors"].append(f"{what}: {type(e).__name__}: {str(e)[:300]}")
            log(f"FAILED {what}: {e}")
            empty_cache()
            return None
        finally:
            save()

    for name in filter(keep, EXTRACT):
        attempt(f"extract {name}", time_extraction, name, waves, share=0.4, into="extraction")
    manifest = None
    if within(0.45):
        try:  # needs soundfile (wav2emo decodes with it): without it, get_features is skipped, the rest runs
            from tests.test_cache import make_manifest

            t0 = time.perf_counter()
            manifest = make_manifest(args.work / "audio", lengths, name="bench")
            log(f"wrote {len(lengths)} WAV files in {time.perf_counter() - t0:.1f} s")
        except ImportError as e:
            r["errors"].append(f"get_features skipped: {e}")
    for name in filter(keep, ("wavlm-large", "whisper-large-v3", "whisper-tiny")):
        if manifest is not None:
            attempt(f"get_features {name}", time_get_features, name, manifest, args.work, share=0.6,
                    into="get_features")
    for name in filter(keep, FINETUNE):
        for mode, ckpt in (("top_k", False), ("full", False), ("full", True)):
            attempt(f"finetune {name} {mode}{' ckpt' if ckpt else ''}", time_finetune, name, waves, mode, ckpt,
                    into="finetune")
            empty_cache()
    r["total_s"] = round(time.perf_counter() - start, 1)
    save()
    log(f"done in {r['total_s']} s")


if __name__ == "__main__":
    main()
