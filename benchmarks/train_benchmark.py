"""Training speed benchmark (not a test): seconds per epoch and per 100-epoch fold from the feature cache.

Measures, in one process on one GPU:
  * the reference's way: wav2vec2-base run inside every training step, float32, batch 25, 263-frame
    fe_vgg; timed over a number of steps and scaled to an epoch of the same training clips;
  * wav2emo from the cache: fe_vgg and fe_vgg_egemaps, memory-mapped loading with workers and the
    GPU-resident fold, seconds per epoch; and a whole 100-epoch fe_vgg_egemaps fold (train, dev-chosen
    checkpoint, test) with the resident fold;
  * optionally (--cpu-ram) the peak memory of a CPU training process reading a memory-mapped cache.

A randomly initialised wav2vec2-base has the real compute cost, so no pretrained weights are needed.
The corpus is the 1440-clip synthetic RAVDESS-shaped corpus.  Writes <out>/train_<gpu>.json and .md.

    python benchmarks/train_benchmark.py --work /tmp/bench --out benchmarks/reports
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def random_base_backbone(folder: Path) -> Path:
    """A randomly initialised wav2vec2-base saved like a hub checkpoint (same compute as the real one)."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if (folder / "config.json").exists():
        return folder
    torch.manual_seed(0)
    model = Wav2Vec2Model(Wav2Vec2Config())
    tmp = folder.with_name(folder.name + ".tmp")
    model.save_pretrained(tmp)
    (tmp / "preprocessor_config.json").write_text(json.dumps({
        "do_normalize": True, "feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
        "padding_side": "right", "padding_value": 0.0, "return_attention_mask": False, "sampling_rate": 16000,
    }))
    tmp.rename(folder)
    return folder


def compose(overrides: list[str], out: Path, work: Path):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hcompose(config_name="train", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.paths.data_dir = str(work / "data")
        cfg.paths.cache_dir = str(work / "cache")
        cfg.paths.output_dir = str(out)
        cfg.hydra.runtime.output_dir = str(out)
    HydraConfig.instance().set_config(cfg)
    return cfg


def base_overrides(backbone: Path, model: str, epochs: int, resident: bool, workers: int,
                   buckets: bool = False) -> list[str]:
    return [
        "data=synthetic", "features=wav2vec2_base", f"features.ssl.backbone={backbone}", f"model={model}",
        "trainer=gpu", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false",
        f"loader.resident={str(resident).lower()}", f"loader.num_workers={workers}", "logger=csv",
        f"loader.bucket_by_length={str(buckets).lower()}",
    ]


def time_reference_way(n_train: int, steps: int = 15, warmup: int = 3) -> dict:
    """The reference notebook's step: frozen wav2vec2-base forward in float32 on 25 zero-padded 5.27 s
    clips, the 12 transformer layers stacked, fe_vgg (263-frame flatten) forward/backward, Adam."""
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    from benchmarks.step_profile import seconds_per_call
    from wav2emo.models.fe_vgg import FeVGG

    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    w2v = Wav2Vec2Model(Wav2Vec2Config()).to(dev).eval()
    net = FeVGG(in_channels=12, feature_dim=768, head="reference", input_frames=263).to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    wave = torch.randn(25, 84351, device=dev)
    labels = torch.randint(0, 8, (25,), device=dev)

    def step():
        with torch.no_grad():
            hs = w2v(wave, output_hidden_states=True).hidden_states
            x = torch.stack(hs[1:], dim=1)  # (B, 12, 263, 768)
        loss = torch.nn.functional.cross_entropy(net({"ssl": x}), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 10)
        opt.step()

    per_step = seconds_per_call(step, steps, warmup)
    steps_per_epoch = -(-n_train // 25)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return {"seconds_per_step": per_step, "steps_per_epoch": steps_per_epoch,
            "seconds_per_epoch": per_step * steps_per_epoch, "train_clips": n_train}


def run(cfg_overrides, out: Path, work: Path, fold: int = 0) -> dict:
    from wav2emo.training.experiment import run_fold

    cfg = compose(cfg_overrides, out, work)
    t0 = time.perf_counter()
    res = run_fold(cfg, fold, out / f"fold_{fold}")
    res["wall_seconds"] = time.perf_counter() - t0
    return res


def steady(epoch_seconds: list[float]) -> float:
    """Median epoch time after the first (which pays for start-up and, when resident, the device upload)."""
    tail = epoch_seconds[1:] or epoch_seconds
    return statistics.median(tail)


def cpu_ram_check(backbone: Path, work: Path, out: Path, batches: int) -> dict:
    """Train on the CPU from the memory-mapped cache in a child process and read its peak memory."""
    import subprocess

    code = f"""
import resource, sys, json, os
sys.path.insert(0, {str(REPO)!r})
sys.argv = ['x']
from benchmarks.train_benchmark import compose, base_overrides
from wav2emo.training.experiment import run_fold
ov = [o for o in base_overrides({str(backbone)!r}, 'fe_vgg', 1, False, 2) if not o.startswith('trainer=')]
ov += ['trainer=cpu', 'trainer.limit_train_batches={batches}', 'trainer.limit_val_batches=4', 'trainer.limit_test_batches=4', 'loader.eval_batch_size=25']
cfg = compose(ov, __import__('pathlib').Path({str(out / 'cpu')!r}), __import__('pathlib').Path({str(work)!r}))
run_fold(cfg, 0, __import__('pathlib').Path({str(out / 'cpu' / 'fold_0')!r}))
self_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
child_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({{"peak_rss_main_gb": self_kb / 2**20, "peak_rss_largest_worker_gb": child_kb / 2**20}}))
"""
    # The GPU stays visible only so the cache key (which records the precision extraction ran in) finds
    # the bf16 cache built above; training itself runs on the CPU (trainer=cpu).
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        return {"error": proc.stderr[-2000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-bench"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--probe-epochs", type=int, default=4)
    ap.add_argument("--cpu-ram", action="store_true")
    ap.add_argument("--cpu-batches", type=int, default=30)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lightning
    import transformers

    from wav2emo.data.corpora import load_corpus
    from wav2emo.features import get_features

    backbone = random_base_backbone(args.work / "wav2vec2-base-random")
    cfg = compose(base_overrides(backbone, "fe_vgg_egemaps", 1, True, 0), args.work / "runs", args.work)
    t0 = time.perf_counter()
    manifest = load_corpus(cfg.data.corpus, cache_dir=cfg.paths.cache_dir)
    t_corpus = time.perf_counter() - t0
    t0 = time.perf_counter()
    for name in ("ssl", "egemaps"):
        get_features(manifest, dict(cfg.features[name]), cfg.paths.cache_dir)
    t_feat = time.perf_counter() - t0

    results: dict = {
        "machine": {
            "gpu": torch.cuda.get_device_name(0), "cpu_cores": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
            "lightning": lightning.__version__,
        },
        "corpus": {"clips": len(manifest), "seconds_to_prepare": t_corpus, "features_seconds": t_feat},
    }
    runs = {}
    for model in ("fe_vgg", "fe_vgg_egemaps"):
        for resident, workers, buckets in ((False, 8, False), (True, 0, False), (True, 0, True)):
            key = f"{model}/{'resident' if resident else 'memmap'}{'+length-buckets' if buckets else ''}"
            r = run(base_overrides(backbone, model, args.probe_epochs, resident, workers, buckets),
                    args.work / key, args.work)
            runs[key] = {"seconds_per_epoch": steady(r["epoch_seconds"]), "epoch_seconds": r["epoch_seconds"],
                         "train_clips": r["split"]["clips"]["train"], "test_ua": r["test"]["ua"]}
            print(key, runs[key], flush=True)
    fulls = {}
    for buckets in (False, True):
        r = run(base_overrides(backbone, "fe_vgg_egemaps", args.epochs, True, 0, buckets),
                args.work / f"full-buckets{int(buckets)}", args.work)
        fulls["resident+length-buckets" if buckets else "resident"] = {
            "epochs": args.epochs, "fold_seconds_train_select_test": r["wall_seconds"],
            "seconds_per_epoch": steady(r["epoch_seconds"]), "test_ua": r["test"]["ua"],
            "train_clips": r["split"]["clips"]["train"]}
        print("full fold", buckets, fulls, flush=True)
    n_train = r["split"]["clips"]["train"]
    ref = time_reference_way(n_train)
    print("reference way", ref, flush=True)
    results.update({"runs": runs, "full_fold": fulls, "reference_way": ref})
    results["speedup_per_epoch_vs_reference"] = {
        k: ref["seconds_per_epoch"] / v["seconds_per_epoch"] for k, v in runs.items()
    }
    if args.cpu_ram:
        results["cpu_ram"] = cpu_ram_check(backbone, args.work, args.work / "cpu", args.cpu_batches)
        print("cpu ram", results["cpu_ram"], flush=True)
    name = "train_" + torch.cuda.get_device_name(0).replace(" ", "_").lower()
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(render(results) + "\n")
    print(render(results))


def render(r: dict) -> str:
    m = r["machine"]
    lines = [
        "# Training speed: fe_vgg / fe_vgg_egemaps from the feature cache vs the reference's way",
        "",
        f"Machine: {m['gpu']}, {m['cpu_cores']} CPU cores; torch {m['torch']} (CUDA {m['cuda']}), "
        f"transformers {m['transformers']}, lightning {m['lightning']}, Python {m['python']}.",
        f"Corpus: {r['corpus']['clips']} synthetic RAVDESS-shaped clips; randomly initialised wav2vec2-base "
        "(real compute cost); fold 0 (train/dev/test actors 17/2/5); batch 25; bf16-mixed for wav2emo.",
        "Regenerate: `python benchmarks/train_benchmark.py --cpu-ram` on the GPU machine.",
        "",
        "| what | seconds per epoch | speed-up vs reference |",
        "| --- | --- | --- |",
        f"| reference's way (wav2vec2 in every step, fp32, batch 25, {r['reference_way']['train_clips']} clips) | "
        f"{r['reference_way']['seconds_per_epoch']:.2f} | 1x |",
    ]
    for k, v in r["runs"].items():
        lines.append(f"| wav2emo {k} | {v['seconds_per_epoch']:.3f} | {r['speedup_per_epoch_vs_reference'][k]:.1f}x |")
    lines += ["", "A whole fe_vgg_egemaps fold (train, dev-chosen checkpoint, test), GPU-resident:", ""]
    for k, f in r["full_fold"].items():
        lines.append(f"- {k}: {f['epochs']} epochs in **{f['fold_seconds_train_select_test']:.1f} s** "
                     f"({f['seconds_per_epoch']:.3f} s per epoch; test UA {f['test_ua']:.3f} on random-weight features)")
    lines += [
        f"- the reference's way: {r['reference_way']['seconds_per_epoch'] * 100 / 60:.1f} min per 100 epochs.",
        "",
        f"Feature extraction (wav2vec2 all layers + eGeMAPS) before training: {r['corpus']['features_seconds']:.1f} s "
        "(0 when the cache exists).",
    ]
    if "cpu_ram" in r:
        lines += ["", f"CPU training from the memory-mapped cache: {json.dumps(r['cpu_ram'])}"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
