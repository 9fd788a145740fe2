"""``Trainer(...)``'s construction with and without ``cluster_plugins`` (issue 25; not a test).

Lightning chooses a cluster environment in every ``Trainer(...)``; where mpi4py is installed it asks MPI for its world
size, which initialises MPI (wav2emo/training/distributed.py ``cluster_plugins`` passes Lightning's default
environment instead where Lightning would choose it anyway).  Each way runs in fresh processes (MPI is initialised
once a process), interleaved, ``--runs`` times: a one-GPU trainer (a one-CPU trainer without a GPU), the time of
``L.Trainer(...)`` alone, after Lightning's import.  Writes <out>/cluster_env_<machine>.json and .md.

    python benchmarks/cluster_env_benchmark.py OUT_DIR [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402

CHILD = """
import importlib.util, json, time, torch
import lightning as L
from wav2emo.training.distributed import cluster_plugins
gpu = torch.cuda.is_available()
plugins = cluster_plugins({{}}) if {way!r} == "cluster_plugins" else {{}}
t0 = time.perf_counter()
trainer = L.Trainer(accelerator="gpu" if gpu else "cpu", devices=1, logger=False, enable_progress_bar=False,
                    enable_checkpointing=False, enable_model_summary=False, **plugins)
took = time.perf_counter() - t0
print(json.dumps({{"trainer_s": round(took, 4), "environment": type(trainer._accelerator_connector.cluster_environment).__name__,
                  "mpi4py": importlib.util.find_spec("mpi4py") is not None,
                  "device": torch.cuda.get_device_name(0) if gpu else "cpu"}}))
"""
WAYS = ("Lightning asks MPI", "cluster_plugins")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p))
    runs: dict[str, list[dict]] = {w: [] for w in WAYS}
    for _ in range(a.runs):
        for way in WAYS:
            proc = subprocess.run([sys.executable, "-c", CHILD.format(way=way)], capture_output=True, text=True,
                                  cwd=REPO, env=env, check=True)
            runs[way].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    first = runs[WAYS[0]][0]
    result = {"machine": first["device"], "cpus": os.cpu_count(), "mpi4py_installed": first["mpi4py"], "runs": runs,
              "median_s": {w: statistics.median(r["trainer_s"] for r in v) for w, v in runs.items()}}
    write_report(a.out, f"cluster_env_{machine_slug(result['machine'])}", result, render(result))
    print(render(result))


def render(r: dict) -> str:
    lines = [f"# `Trainer(...)` with and without cluster_plugins: {r['machine']}, {r['cpus']} CPUs", "",
             f"mpi4py installed: {r['mpi4py_installed']}. Each way in fresh processes, interleaved; the seconds of "
             "`L.Trainer(accelerator=<gpu or cpu>, devices=1, ...)` alone. Regenerate: "
             "`python benchmarks/cluster_env_benchmark.py OUT`.", "",
             "| way | median (s) | each run (s) | cluster environment |", "| --- | ---: | --- | --- |"]
    for way, v in r["runs"].items():
        lines.append(f"| {way} | {r['median_s'][way]:.3f} | {', '.join(str(x['trainer_s']) for x in v)} | "
                     f"{', '.join(sorted({x['environment'] for x in v}))} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
