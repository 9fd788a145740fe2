"""Prediction speed (not a test; issue 25): ``python -m wav2emo.predict`` on one 30-minute recording, start-up included.

Trains a checkpoint of fe_vgg_egemaps and of fe_vgg (one short epoch each: speed does not depend on the weights),
writes a 30-minute 16 kHz recording made of the synthetic corpus's clips one after another, and times the whole
command (process start to the CSV written; 4 s windows every 2 s, 899 windows) for each way side by side:

  * ``egemaps_workers=0``: eGeMAPS one window after another in the predicting process (the previous way; since
    issue 25 through openSMILE's C API instead of ``opensmile.Smile``, same values);
  * ``egemaps_workers=auto``: one openSMILE worker process per usable core, each window queued when it is read,
    computed while the backbone runs (wav2emo/features/smile_waves.py), with ``torch_threads=<cores>`` (every
    core for the network too: the way before ``torch_threads``) and ``torch_threads=auto`` (half of them).

Each run reports its CPU seconds (user + sys of the command and its worker processes) and the load average:
on a shared machine the wall time measures the other jobs too.

``--backbone base``: a randomly initialised wav2vec2-base (the real compute; what train_benchmark uses), the
device the machine has; ``--backbone tiny``: the offline tiny random wav2vec2 (features=tiny).  ``--cpus 0,1``
pins the predicting commands to those cores and hides the GPU (the "2 CPU cores without a GPU" case).
Writes <out>/predict_<machine>_<backbone>.json and .md.

    python benchmarks/predict_benchmark.py --work /tmp/pb --backbone tiny --cpus 0,1
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402

RECORDING_S = 1800.0
SR = 16_000
TARGETS = {"gpu": 200.0, "cpu": 20.0}  # times real time, start-up included (issue 25)
PREVIOUS = "previous code: "  # the label of the ways timed with ``--previous``'s checkout
PACKAGES = "other packages: "  # the label of the ways timed with ``--packages`` in front of the environment


def _installed(name: str) -> bool:
    from importlib.metadata import PackageNotFoundError, version

    try:
        version(name)
    except PackageNotFoundError:
        return False
    return True


def package_versions(folder: Path) -> dict[str, str]:
    """The distributions installed in ``folder`` (``pip install --target``) and their versions."""
    return {d.name.split("-")[0]: d.name[:-len(".dist-info")].split("-", 1)[1] for d in sorted(folder.glob("*.dist-info"))}


def env_for(work: Path, tree: Path = REPO, packages: Path | None = None) -> dict:
    """The commands' environment: ``tree``'s code first, then ``packages`` (other versions of installed packages,
    e.g. ``pip install --target``), then the caller's PYTHONPATH."""
    path = (str(tree), *([] if packages is None else [str(packages)]), os.environ.get("PYTHONPATH"))
    return dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(p for p in path if p),
                WAV2EMO_DATA_DIR=str(work / "data"), WAV2EMO_CACHE_DIR=str(work / "cache"),
                WAV2EMO_LOG_DIR=str(work / "outputs"))


def train_checkpoint(work: Path, model: str, backbone: str, gpu: bool) -> Path:
    """One short epoch of fold 0; its fold directory (predict takes the dev-chosen checkpoint from it)."""
    out = work / f"run_{model}_{backbone}"
    found = sorted(out.rglob("fold_result.json")) if out.exists() else []
    if found:
        return found[0].parent
    if backbone == "base":
        from benchmarks.train_benchmark import random_base_backbone

        path = random_base_backbone(work / "wav2vec2-base-random")
        feats = ["features=wav2vec2-base", f"features.ssl.backbone={path}"]
    else:
        feats = ["features=tiny"]
    args = ["data=synthetic", *feats, f"model={model}", "fold=0", "trainer.max_epochs=1", "test=false",
            "trainer.limit_train_batches=2", "trainer.enable_progress_bar=false", "logger=none",
            f"trainer={'gpu' if gpu else 'cpu'}", f"hydra.run.dir={out}"]
    if backbone == "tiny":
        args.append("model.module.net.widths=[8,16,32,64]")  # the demo's width for the tiny features
    subprocess.run([sys.executable, "-m", "wav2emo.train", *args], check=True, cwd=REPO, env=env_for(work))
    return sorted(out.rglob("fold_result.json"))[0].parent


def recording(work: Path) -> Path:
    """30 minutes of the synthetic corpus's clips one after another (speech-like, voiced and silent parts)."""
    import soundfile as sf

    path = work / "recording_30min.wav"
    if path.exists():
        return path
    clips = sorted((work / "data").rglob("*.wav"))[:200] or sorted((work / "data").rglob("*.flac"))[:200]
    if not clips:
        raise SystemExit(f"no clips under {work / 'data'} (train a checkpoint first)")
    parts, total = [], 0
    while total < RECORDING_S * SR:
        for c in clips:
            x, sr = sf.read(c, dtype="float32", always_2d=True)
            if sr != SR:
                raise SystemExit(f"{c}: {sr} Hz, expected {SR}")
            parts.append(x.mean(axis=1))
            total += len(parts[-1])
            if total >= RECORDING_S * SR:
                break
    sf.write(path, np.concatenate(parts)[: int(RECORDING_S * SR)], SR, subtype="PCM_16")
    return path


def time_predict(work: Path, ckpt: Path, rec: Path, workers: str, cpus: str | None, device: str,
                 threads: str = "auto", tree: Path = REPO, nice: str | None = None, packages: Path | None = None
                 ) -> dict:
    """One timed command, with the code of ``tree`` (this checkout, or ``--previous``'s) and ``packages`` in front
    of the environment's (``--packages``); ``nice``: its ``egemaps_nice`` (None: the config's)."""
    tag = (f"{workers}_{threads}{'' if nice is None else '_nice' + nice}{'' if tree == REPO else '_previous'}"
           f"{'' if packages is None else '_packages'}")
    out = work / f"pred_{ckpt.parent.name}_{tag}.csv"
    cmd = [sys.executable, "-m", "wav2emo.predict", f"ckpt_path={ckpt}", f"inputs=[{rec}]", f"output={out}",
           f"egemaps_workers={workers}", f"device={device}", "progress=false", f"torch_threads={threads}",
           *([] if nice is None else [f"egemaps_nice={nice}"])]
    env = env_for(work, tree, packages)
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["OMP_NUM_THREADS"] = str(len(cpus.split(",")))
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = round(os.getloadavg()[0], 1)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its worker processes, all waited for
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-2000:]}")
    import pandas as pd

    rows = pd.read_csv(out, keep_default_na=False)
    windows = int((rows["segment"] != "file").sum())
    return {"seconds": round(wall, 2), "x_real_time": round(RECORDING_S / wall, 1), "windows": windows,
            "cpu_seconds": round(cpu, 1), "user_s": round(after.ru_utime - before.ru_utime, 1),
            "sys_s": round(after.ru_stime - before.ru_stime, 1), "load_average_1min_before": load_before,
            "load_average_1min": round(os.getloadavg()[0], 1),
            "x_real_time_idle_cores_bound": round(RECORDING_S / max(wall_floor(cpu, cpus), 1e-9), 1),
            "csv": str(out),
            "csv_sha_prefix": __import__("hashlib").sha1(out.read_bytes()).hexdigest()[:12]}


def wall_floor(cpu_seconds: float, cpus: str | None) -> float:
    """The least wall time ``cpu_seconds`` of work can take on the cores given (all busy all the time)."""
    cores = len(cpus.split(",")) if cpus else os.cpu_count() or 1
    return cpu_seconds / cores


def max_abs_difference(a: Path, b: Path) -> float:
    """Largest difference between two prediction CSVs' probabilities (same rows in the same order)."""
    import pandas as pd

    x, y = pd.read_csv(a, keep_default_na=False), pd.read_csv(b, keep_default_na=False)
    cols = [c for c in x.columns if c.startswith("prob_")]
    if list(x["segment"]) != list(y["segment"]) or list(x["label"]) != list(y["label"]):
        return float("inf")
    return float(np.abs(x[cols].to_numpy(float) - y[cols].to_numpy(float)).max())


def machine_name(cpus: str | None) -> str:
    import torch

    if cpus:
        return f"cpu cores {cpus} of a {os.cpu_count()}-core machine, no GPU"
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-predict"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--backbone", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--cpus", default=None, help="e.g. 0,1: pin to these cores, no GPU")
    ap.add_argument("--warm-up", action="store_true",
                    help="one untimed fe_vgg_egemaps prediction first (writes Python's bytecode where it may)")
    ap.add_argument("--previous", type=Path, default=None,
                    help="a checkout of the code before a change (e.g. `git archive`): its pooled ways are timed "
                         "beside this checkout's, on the same checkpoints and recording")
    ap.add_argument("--packages", type=Path, default=None,
                    help="a folder of other versions of installed packages (pip install --target DIR, e.g. the "
                         "lock's): every way of this checkout is timed again with DIR in front of the environment")
    ap.add_argument("--workers", default="",
                    help="more egemaps_workers counts to time for fe_vgg_egemaps (torch_threads=auto), e.g. 8,12")
    ap.add_argument("--nice", default="",
                    help="egemaps_nice values to time for fe_vgg_egemaps (egemaps_workers=auto), e.g. 0,10")
    ap.add_argument("--no-serial", action="store_true",
                    help="leave out the serial way (about a minute); the CSVs are compared with the first pooled way's")
    ap.add_argument("--repeats", type=int, default=1, help="time every way this many times, interleaved")
    ap.add_argument("--models", default="fe_vgg_egemaps,fe_vgg",
                    help="which models' ways to time (fe_vgg_egemaps always: its checkpoint is the comparison's)")
    a = ap.parse_args()
    import torch

    gpu = torch.cuda.is_available() and not a.cpus
    device = "cuda" if gpu else "cpu"
    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    models = ["fe_vgg_egemaps", *[m for m in a.models.split(",") if m and m != "fe_vgg_egemaps"]]
    ckpts = {m: train_checkpoint(a.work, m, a.backbone, torch.cuda.is_available()) for m in models}
    rec = recording(a.work)
    if a.warm_up:
        time_predict(a.work, ckpts["fe_vgg_egemaps"], rec, "auto", a.cpus, device)
    from wav2emo.env import bytecode_cache

    result: dict = {"machine": machine_name(a.cpus), "cpus": a.cpus, "cores": os.cpu_count(),
                    "backbone": a.backbone, "device": device,
                    "recording_s": RECORDING_S, "setup_s": round(time.perf_counter() - t0, 1), "runs": {},
                    "warm_up": a.warm_up, "bytecode": bytecode_cache(),
                    "pythondontwritebytecode": os.environ.get("PYTHONDONTWRITEBYTECODE"),
                    "pycache_prefix": os.environ.get("PYTHONPYCACHEPREFIX")}
    cores = str(len(a.cpus.split(",")) if a.cpus else os.cpu_count() or 1)
    # (model, egemaps_workers, torch_threads): torch_threads=<cores> is the way before torch_threads existed
    ways = [*([] if a.no_serial else [("fe_vgg_egemaps", "0", "auto", None)]), ("fe_vgg_egemaps", "auto", cores, None),
            ("fe_vgg_egemaps", "auto", "auto", None),
            *[("fe_vgg_egemaps", w, "auto", None) for w in a.workers.split(",") if w],
            *[("fe_vgg_egemaps", "auto", "auto", n) for n in a.nice.split(",") if n],
            *[(m, "auto", "auto", None) for m in models[1:]]]
    for i in range(a.repeats):  # interleaved: drift in the machine's load hits every way alike
        again = f" #{i + 1}" if i else ""
        for model, workers, threads, nice in ways:
            niced = "" if nice is None else f" egemaps_nice={nice}"
            result["runs"][f"{model} egemaps_workers={workers} torch_threads={threads}{niced}{again}"] = time_predict(
                a.work, ckpts[model], rec, workers, a.cpus, device, threads, nice=nice)
            if a.packages is not None:
                result["runs"][f"{PACKAGES}{model} egemaps_workers={workers} torch_threads={threads}{niced}{again}"] = \
                    time_predict(a.work, ckpts[model], rec, workers, a.cpus, device, threads, nice=nice,
                                 packages=a.packages.resolve())
            if a.previous is not None and workers == "auto" and threads == "auto" and nice is None:
                result["runs"][f"{PREVIOUS}{model} egemaps_workers={workers} torch_threads={threads}{again}"] = \
                    time_predict(a.work, ckpts[model], rec, workers, a.cpus, device, threads, tree=a.previous.resolve())
    for flag in ("nice", "workers", "models", "repeats"):  # what the report's Regenerate line names
        if getattr(a, flag) != ap.get_default(flag):
            result[flag] = getattr(a, flag)
    if a.previous is not None:
        result["previous"] = str(a.previous)
    if a.packages is not None:
        from importlib.metadata import version

        mine = package_versions(a.packages)
        result["packages"] = {"folder": str(a.packages), "versions": mine,
                              "environment_versions": {k: version(k) for k in mine if _installed(k)}}
    runs = result["runs"]
    first = "fe_vgg_egemaps egemaps_workers=" + ("auto torch_threads=" + cores if a.no_serial else "0 torch_threads=auto")
    result["compared_with"] = first
    result["same_csv"] = runs[first]["csv_sha_prefix"] == runs[f"fe_vgg_egemaps egemaps_workers=auto torch_threads={cores}"][
        "csv_sha_prefix"] if not a.no_serial else None
    result["max_abs_prob_difference_to_serial"] = {
        k: max_abs_difference(Path(runs[first]["csv"]), Path(v["csv"])) for k, v in runs.items() if "fe_vgg_egemaps" in k}
    write_report(a.out, f"predict_{machine_slug(result['machine'], limit=40)}_{a.backbone}", result, render(result))
    print(render(result))


def bytecode_line(r: dict) -> str:
    """What Python's bytecode was: an image without it compiles torch's and Lightning's Python in every process."""
    if "bytecode" not in r:
        return "Python bytecode: not recorded."
    b = r["bytecode"]
    state = (f"none for {', '.join(b['not_compiled'])}" if b["not_compiled"]
             else "compiled bytecode found for torch, torch._dynamo, sympy and lightning")
    return (f"Python bytecode when the commands ran: {state}; PYTHONDONTWRITEBYTECODE="
            f"{r.get('pythondontwritebytecode') or '(unset)'}, PYTHONPYCACHEPREFIX={r.get('pycache_prefix') or '(unset)'}"
            + ("; one untimed prediction ran first (`--warm-up`)." if r.get("warm_up") else "."))


def code_lines(r: dict) -> list[str]:
    """What code was timed: this checkout (``code``, when recorded), ``--previous``'s checkout beside it, and the
    packages ``--packages`` put in front of the environment."""
    lines = []
    if r.get("previous"):
        lines += ["", f"Code timed: {r.get('code') or 'this checkout'}; the `previous code:` ways ran {r['previous']} "
                      "beside it, on the same checkpoints and recording."]
    if r.get("packages"):
        versions = ", ".join(f"{k} {v}" for k, v in r["packages"]["versions"].items())
        before = ", ".join(f"{k} {v}" for k, v in r["packages"].get("environment_versions", {}).items())
        lines += ["", f"The `{PACKAGES.strip()}` ways ran the same code with these packages in front of the "
                      f"environment's ({r['packages']['folder']}): {versions}. The other ways ran the environment's: "
                      f"{before}."]
    return lines


def render(r: dict) -> str:
    target = TARGETS["gpu" if r["device"] == "cuda" else "cpu"]
    backbone = ("a randomly initialised wav2vec2-base (real compute)" if r["backbone"] == "base"
                else "the tiny random wav2vec2 (features=tiny; toy compute)")
    lines = [
        f"# Prediction of one 30-minute recording: {r['machine']}",
        "",
        f"`python -m wav2emo.predict` on a {r['recording_s'] / 60:.0f}-minute 16 kHz recording (synthetic corpus clips "
        f"one after another), 4 s windows every 2 s, device {r['device']}, checkpoints on {backbone}. "
        "Seconds are the whole command: process start, model restore, reading, features, network, CSV.",
        "Regenerate: `python benchmarks/predict_benchmark.py --backbone " + r["backbone"]
        + (f" --cpus {r['cpus']}" if r.get("cpus") else "") + (" --warm-up" if r.get("warm_up") else "")
        + (" --previous <checkout of the code before>" if r.get("previous") else "")
        + (" --packages <folder>" if r.get("packages") else "")
        + "".join(f" --{flag} {r[flag]}" for flag in ("nice", "workers", "models", "repeats") if r.get(flag))
        + (" --no-serial" if r.get("compared_with", "").endswith(f"auto torch_threads={r.get('cores')}") else "") + "`.",
        "", bytecode_line(r), *code_lines(r), "",
        "| model, way | seconds | times real time | windows | CPU seconds, all processes (user + sys) | times real"
        " time on idle cores at best (CPU s / cores) | load average before -> after |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for way, v in r["runs"].items():
        note = " (eGeMAPS in the process, one window after another)" if "workers=0" in way else ""
        lines.append(f"| {way}{note} | {v['seconds']} | {v['x_real_time']}x | {v['windows']} | {v.get('cpu_seconds')} "
                     f"({v.get('user_s')} + {v.get('sys_s')}) | {v.get('x_real_time_idle_cores_bound')}x | "
                     f"{v.get('load_average_1min_before')} -> {v.get('load_average_1min')} |")
    best = r["runs"]["fe_vgg_egemaps egemaps_workers=auto torch_threads=auto"]["x_real_time"]
    loads = [v.get("load_average_1min") or 0 for v in r["runs"].values()]
    cores = len(r["cpus"].split(",")) if r.get("cpus") else r.get("cores") or os.cpu_count() or 1
    if max(loads) > cores:
        cpu = {k: v.get("cpu_seconds") for k, v in r["runs"].items()}
        lines += ["", f"**The machine was shared** (1-minute load average up to {max(loads)} on {cores} cores): the wall "
                  "seconds measure the other processes as much as wav2emo. The CPU seconds (all processes of a "
                  f"command) measure the work: {cpu}. On {cores} otherwise idle cores the wall time is at least the "
                  f"CPU seconds / {cores}."]
    compared = r.get("compared_with", "the serial way")
    lines += ["", f"Same CSV from the serial and the pooled eGeMAPS way (same threads): {r['same_csv']}; largest"
              f" probability difference to `{compared}`: {r.get('max_abs_prob_difference_to_serial')}.",
              "`torch_threads=auto` gives the network half the usable cores beside the eGeMAPS workers on the CPU"
              " (the way before it used every core for both); on a GPU it leaves torch's default.",
              f"Target (issue 25) for fe_vgg_egemaps on this machine: >= {target:.0f}x real time, start-up included: "
              f"{'**met**' if best >= target else '**missed**'} ({best}x)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
