"""Prediction speed on the CPU: ``wav2emo.predict`` (PyTorch) beside ``backend=onnx`` (onnxruntime) (not a test).

A wav2vec2-BASE-shaped backbone (12 layers, 768 wide, randomly initialised: speed does not depend on the weight
values, and the hub is not needed) is saved as a local folder; fe_vgg_egemaps and layer_weighted are trained
for one batch on the synthetic corpus with it, exported (``python -m wav2emo.export``), and both backends
predict the same real clips (RAVDESS when found, else synthetic) through the same code path
(:func:`wav2emo.inference.runner.predict_files`: reading, windows, openSMILE for eGeMAPS). Times exclude loading.

    python benchmarks/onnx_benchmark.py --threads 2 --clips 24 --out benchmarks/reports
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import write_report  # noqa: E402

RAVDESS = Path(os.environ.get("WAV2EMO_TEST_RAVDESS", REPO.parent / "shared" / "data" / "ravdess16k"))
MODELS = ("fe_vgg_egemaps", "layer_weighted")


def base_backbone(folder: Path) -> Path:
    """A randomly initialised wav2vec2-base (transformers' default Wav2Vec2Config is base) with its
    feature extractor (zero-mean unit-variance normalisation, as facebook/wav2vec2-base)."""
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=False).save_pretrained(folder)
    return folder


def train(model: str, backbone: Path, work: Path) -> Path:
    run = work / f"run_{model}"
    if list(run.rglob("fold_result.json")):
        return run
    cmd = [sys.executable, "-m", "wav2emo.train", f"model={model}", "data=synthetic", "data.corpus.clips_per_actor=3",
           "features=tiny", f"features.ssl.backbone={backbone}", "features.ssl.build_tiny=false",
           "features.ssl.name=w2v2-base-random", "trainer=cpu", "trainer.max_epochs=1", "trainer.limit_train_batches=1",
           "debug=fast", "logger=none", "loader.num_workers=0", "fold=0", f"hydra.run.dir={run}"]
    env = {**os.environ, "WAV2EMO_DATA_DIR": str(work / "data"), "WAV2EMO_CACHE_DIR": str(work / "cache"),
           "WAV2EMO_LOG_DIR": str(work / "logs"), "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return run


def clips(n: int, work: Path) -> list[Path]:
    found = sorted(RAVDESS.glob("Actor_*/*.*")) if RAVDESS.is_dir() else sorted((work / "data").rglob("*.wav"))
    return [found[i] for i in np.linspace(0, len(found) - 1, n).astype(int)]


def timed(predictors: dict, files, settings, repeats: int) -> dict[str, tuple[list[float], list]]:
    """Each predictor warmed up once, then ``repeats`` rounds that time every predictor in turn (on a shared
    machine, the load then falls on all of them alike)."""
    from wav2emo.inference.runner import predict_files

    out = {name: ([], list(predict_files(files, p, settings))) for name, p in predictors.items()}
    for _ in range(repeats):
        for name, p in predictors.items():
            t0 = time.perf_counter()
            results = list(predict_files(files, p, settings))
            out[name][0].append(time.perf_counter() - t0)
            out[name] = (out[name][0], results)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clips", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-onnx-bench"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from omegaconf import OmegaConf

    from wav2emo.export.cli import run as export
    from wav2emo.inference.onnx_model import OnnxPredictor, load_onnx
    from wav2emo.inference.reader import WindowSettings
    from wav2emo.inference.restore import checkpoints_of, restore
    from wav2emo.inference.runner import Predictor

    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    backbone = base_backbone(args.work / "w2v2-base-random")
    files = clips(args.clips, args.work)
    audio_s = sum(__import__("soundfile").info(str(f)).duration for f in files)
    settings = WindowSettings()
    rows = []
    for model in MODELS:
        run = train(model, backbone, args.work)
        onnx_path = args.work / f"{model}.onnx"
        t0 = time.perf_counter()
        export(OmegaConf.create({"ckpt_path": str(run), "output": str(onnx_path), "overwrite": True, "per_fold": False,
                                 "opset": 17, "check": True}))
        export_s = time.perf_counter() - t0
        restored = [restore(p, device="cpu") for p in checkpoints_of(run)]
        variants = {  # the first is the reference of the probability column (the graph runs one clip a call)
            "torch, batch 1": Predictor(restored, batch_size=1),
            "torch, batch = checkpoint's eval_batch_size": Predictor(restored),
            "onnxruntime (batch 1)": OnnxPredictor([load_onnx(onnx_path, threads=args.threads)]),
        }
        reference = None
        for name, (times, results) in timed(variants, files, settings, args.repeats).items():
            predictor = variants[name]
            probs = np.stack([r.mean for r in results])
            if reference is None:
                reference = probs
            med = statistics.median(times)
            rows.append({"model": model, "backend": name, "seconds": med, "all_seconds": times,
                         "ms_per_clip": 1000 * med / len(files), "real_time_factor": med / audio_s,
                         "max_abs_diff_vs_torch_batch_1": float(np.abs(probs - reference).max()),
                         "batch_size": predictor.batch_size, "export_s": export_s,
                         "onnx_mb": onnx_path.stat().st_size / 1e6})
            print(json.dumps(rows[-1]), flush=True)
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    machine = {"cpu": cpu, "cores": os.cpu_count(), "threads": args.threads, "platform": platform.platform(),
               "python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
               "load_average_at_end": os.getloadavg(), "clips": len(files), "audio_s": audio_s,
               "clips_from": "RAVDESS" if RAVDESS.is_dir() else "synthetic", "repeats": args.repeats}
    lines = ["# Prediction on the CPU: PyTorch (`wav2emo.predict`) beside ONNX (`backend=onnx`)", "",
             f"Machine: {cpu}, {os.cpu_count()} cores, {args.threads} threads for both backends; torch "
             f"{torch.__version__}, onnxruntime {onnxruntime.__version__}, Python {platform.python_version()}. "
             f"Load average at the end {tuple(round(x, 1) for x in os.getloadavg())} (the machine is shared).",
             f"Backbone: wav2vec2-BASE shape (12 layers x 768, random weights), one fold. {len(files)} "
             f"{machine['clips_from']} clips, {audio_s:.1f} s of audio, 4 s windows (a clip up to 4 s is one window); eGeMAPS by openSMILE in both "
             f"backends; times exclude loading, median of {args.repeats} rounds after a warm-up, the backends taking turns within each round.",
             f"Regenerate: `python benchmarks/onnx_benchmark.py --threads {args.threads} --clips {args.clips} "
             f"--repeats {args.repeats}`.", "",
             "| model | backend | s for all clips | ms per clip | real-time factor | max abs prob diff vs torch batch 1 |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['backend']} | {r['seconds']:.2f} | {r['ms_per_clip']:.0f} | "
                     f"{r['real_time_factor']:.3f} | {r['max_abs_diff_vs_torch_batch_1']:.1e} |")
    lines += ["", "Export: " + ", ".join(f"{m} {next(r['export_s'] for r in rows if r['model'] == m):.0f} s, "
                                        f"{next(r['onnx_mb'] for r in rows if r['model'] == m):.0f} MB" for m in MODELS)]
    write_report(args.out, "onnx_predict_cpu", {"machine": machine, "rows": rows}, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
