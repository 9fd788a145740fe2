"""Start-up of a training process whose features are cached (not a test; issue 25): process start to first step.

Runs ``python -m wav2emo.train`` for one epoch of fold 0 several times and reads the ``StartupTimer`` line
("first training step ... s after the process started"), and times ``python -c "import wav2emo.train"``, for
two ways side by side in the same run:

  * ``lean``: as shipped (torchmetrics without transformers/torchvision/matplotlib, wav2emo/startup.py);
  * ``all_backends``: ``WAV2EMO_TORCHMETRICS_ALL_BACKENDS=1``, torchmetrics as it comes (the previous way).

One untimed run first builds the caches.  ``--gpu``: the train benchmark's set-up (1440-clip synthetic corpus,
random wav2vec2-base, fe_vgg_egemaps, trainer=gpu); otherwise the offline demo's fold 0 on the CPU.  ``--profile``
adds a cProfile of one lean run (the functions that take the time before the first step).  Writes
<out>/startup_<machine>.json and .md.

    python benchmarks/startup_benchmark.py --work /tmp/sb --out benchmarks/reports [--gpu] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402

STARTUP = re.compile(r"first training step ([0-9.]+) s after the process started")
WAYS = {"lean": {}, "all_backends": {"WAV2EMO_TORCHMETRICS_ALL_BACKENDS": "1"}}
TARGET_SECONDS = 5.0


def machine_name() -> str:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores)"


def train_args(work: Path, gpu: bool) -> list[str]:
    common = ["fold=0", "trainer.max_epochs=1", "test=false", "trainer.enable_progress_bar=false"]
    if gpu:
        from benchmarks.train_benchmark import random_base_backbone

        backbone = random_base_backbone(work / "wav2vec2-base-random")
        return ["data=synthetic", "features=wav2vec2-base", f"features.ssl.backbone={backbone}",
                "model=fe_vgg_egemaps", "trainer=gpu", *common]
    return ["experiment=demo", *common]


def run_once(args: list[str], env: dict, prefix: list[str] | None = None) -> tuple[float | None, float]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, *(prefix or []), "-m", "wav2emo.train", *args], capture_output=True,
                          text=True, cwd=REPO, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed ({proc.returncode}): {proc.stderr[-2000:]}")
    found = STARTUP.search(proc.stdout + proc.stderr)
    return (float(found.group(1)) if found else None), wall


def import_seconds(env: dict) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import wav2emo.train"], check=True, cwd=REPO, env=env)
    return time.perf_counter() - t0


TRAINING_STACK = ("from wav2emo.startup import leave_out_unused_backends as leave; leave(); "
                  "import lightning.pytorch, wav2emo.training.module, wav2emo.runs.experiment")


def import_cost(env: dict, runs: int) -> dict:
    """CPU seconds (user + system; steadier than wall time on a shared machine) and wall seconds of importing
    what a cached training run imports, for each way, interleaved."""
    import resource

    out: dict = {}
    for _ in range(runs):
        for way, extra in WAYS.items():
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", TRAINING_STACK], check=True, cwd=REPO, env={**env, **extra})
            wall = time.perf_counter() - t0
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
            r = out.setdefault(way, {"cpu_s": [], "wall_s": []})
            r["cpu_s"].append(round(cpu, 2))
            r["wall_s"].append(round(wall, 2))
    for r in out.values():
        r["cpu_median_s"] = statistics.median(r["cpu_s"])
        r["wall_median_s"] = statistics.median(r["wall_s"])
    out["load_average_1min"] = round(os.getloadavg()[0], 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-startup"))
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--imports-only", action="store_true", help="only the import cost of the training stack")
    a = ap.parse_args()
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
               WAV2EMO_DATA_DIR=str(a.work / "data"), WAV2EMO_CACHE_DIR=str(a.work / "cache"),
               WAV2EMO_LOG_DIR=str(a.work / "outputs"))
    if a.imports_only:
        res = {"machine": machine_name(), "cpus": os.cpu_count(), "imports": import_cost(env, a.runs)}
        write_report(a.out, f"startup_imports_{machine_slug(res['machine'])}", res, render_imports(res))
        print(render_imports(res))
        return
    args = train_args(a.work, a.gpu)
    t0 = time.perf_counter()
    run_once(args, env)  # builds the corpus and the caches
    result: dict = {"machine": machine_name(), "cpus": os.cpu_count(), "command": "python -m wav2emo.train "
                    + " ".join(args), "cache_build_run_s": round(time.perf_counter() - t0, 1), "ways": {}}
    for _ in range(a.runs):  # interleaved, so drift in the machine's load hits both ways alike
        for way, extra in WAYS.items():
            r = result["ways"].setdefault(way, {"first_step_s": [], "process_s": [], "import_train_s": []})
            first, wall = run_once(args, {**env, **extra})
            r["first_step_s"].append(first)
            r["process_s"].append(round(wall, 2))
            r["import_train_s"].append(round(import_seconds({**env, **extra}), 3))
    for r in result["ways"].values():
        for key, median_key in (("first_step_s", "first_step_median_s"), ("import_train_s", "import_train_median_s")):
            values = [v for v in r[key] if v is not None]
            r[median_key] = round(statistics.median(values), 3) if values else None
    if a.profile:
        prof = a.work / "startup.prof"
        run_once(args, env, prefix=["-m", "cProfile", "-o", str(prof)])
        import pstats

        stats = pstats.Stats(str(prof))
        rows = [(fn, st[3]) for fn, st in stats.stats.items()  # (file, line, name) -> cumulative seconds
                if "wav2emo" in fn[0] and st[3] > 0.05]
        rows.sort(key=lambda x: -x[1])
        result["profile_lean_wav2emo_cumulative_s"] = [
            [f"{Path(f).name}:{line}({name})", round(sec, 3)] for (f, line, name), sec in rows[:25]]
    write_report(a.out, f"startup_{machine_slug(result['machine'])}", result, render(result))
    print(render(result))


def render_imports(r: dict) -> str:
    imp = r["imports"]
    lean, old = imp["lean"], imp["all_backends"]
    return "\n".join([
        f"# Import cost of a cached training run's modules: {r['machine']}, {r['cpus']} CPUs", "",
        f"`python -c \"{TRAINING_STACK}\"`, each way {len(lean['cpu_s'])} times, interleaved. CPU seconds (user +"
        " system of the process) are steadier than wall seconds on a shared machine (1-minute load average at the"
        f" end: {imp['load_average_1min']}). Regenerate: `python benchmarks/startup_benchmark.py --imports-only`.", "",
        "| way | CPU s (median) | wall s (median) | CPU s, each run |", "| --- | --- | --- | --- |",
        f"| lean (as shipped) | {lean['cpu_median_s']} | {lean['wall_median_s']} | {lean['cpu_s']} |",
        f"| all_backends (`WAV2EMO_TORCHMETRICS_ALL_BACKENDS=1`, the previous way) | {old['cpu_median_s']} | "
        f"{old['wall_median_s']} | {old['cpu_s']} |", "",
        f"Saved: {old['cpu_median_s'] - lean['cpu_median_s']:.2f} CPU s "
        f"({(old['cpu_median_s'] - lean['cpu_median_s']) / old['cpu_median_s']:.0%} of the imports).", ""])


def render(r: dict) -> str:
    lean, old = r["ways"]["lean"], r["ways"]["all_backends"]
    met = lean["first_step_median_s"] is not None and lean["first_step_median_s"] <= TARGET_SECONDS
    lines = [
        f"# Start-up of a cached training run: {r['machine']}, {r['cpus']} CPUs",
        "",
        f"Command (fold 0, one epoch, features cached by an untimed first run): `{r['command']}`",
        "Regenerate: `python benchmarks/startup_benchmark.py" + (" --gpu" if "trainer=gpu" in r["command"] else "")
        + "`. `lean` is wav2emo as shipped (wav2emo/startup.py); `all_backends` sets"
        " `WAV2EMO_TORCHMETRICS_ALL_BACKENDS=1` (torchmetrics imports transformers, torchvision, matplotlib:"
        " the previous way). Runs interleaved; medians.",
        "",
        "| way | process start to first step (s) | `import wav2emo.train` (s) | each run's first step (s) |",
        "| --- | --- | --- | --- |",
    ]
    for way, w in r["ways"].items():
        lines.append(f"| {way} | {w['first_step_median_s']} | {w['import_train_median_s']} | "
                     f"{', '.join(str(v) for v in w['first_step_s'])} |")
    lines += ["", f"Target (issue 25): <= {TARGET_SECONDS:.0f} s to the first step: "
              f"{'**met**' if met else '**missed**'} ({lean['first_step_median_s']} s) on this machine."]
    if old["first_step_median_s"] and lean["first_step_median_s"]:
        lines.append(f"Saved by leaving torchmetrics' back-ends out: "
                     f"{old['first_step_median_s'] - lean['first_step_median_s']:.2f} s.")
    if r.get("profile_lean_wav2emo_cumulative_s"):
        lines += ["", "cProfile of one lean run (wav2emo functions, cumulative seconds, profiler overhead included):",
                  "", "| function | s |", "| --- | --- |"]
        lines += [f"| `{name}` | {sec} |" for name, sec in r["profile_lean_wav2emo_cumulative_s"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
