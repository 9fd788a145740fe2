"""Where a cached training run's start-up goes, phase by phase (issue 25; not a test).

Runs ``python -m wav2emo.train`` for fold 0 with ``WAV2EMO_STARTUP_TRACE=<json>`` (wav2emo/startup_trace.py)
after one untimed run that builds the corpus and the feature caches, and reports per phase (imports, install
check, Hydra's compose, fold count, manifest, caches opened, data module set-up, fold upload, model, Trainer,
CUDA initialisation, first step) the median start, end and duration in seconds since the process started.
Six ways, interleaved, in the same run on the same machine:

  * ``lean``: wav2emo as it is;
  * ``reference``: the way before the start-up branch, as far as it can be switched back: what main imported
    is imported first (pandas, scikit-learn's model selection, scipy.stats: ``train.py`` asked
    ``baselines.runner`` whether the model is a baseline, ``reports``/``runs.testing`` imported pandas and
    scipy.stats at the top), and a resident split is padded on the host and copied whole to the GPU
    (``feeding.batches.COLLATE_ON_DEVICE = False``; the new way pads on the device, clip by clip).  main's other
    difference, the ``StartupTimer``'s clock (``btime`` in whole seconds: up to 1 s too many), is not
    reproduced; every way is timed by the trace's clock (``/proc/uptime``, 10 ms);
  * ``unstreamed``: the way before feeding/streamed_upload.py: a resident split read whole, each clip made
    contiguous by the reading threads, then padded on the device clip by clip
    (``feeding.batches.STREAMED_UPLOAD = False``);
  * ``hashed``: wav2emo as it is, but without the digest memo (``features.digests_remembered`` a no-op): a local
    backbone's weight files hashed again by every process, the way before;
  * ``rowwise``: wav2emo as it is, but a resident split streamed row by row through its strategies
    (``streamed_upload.STORED_BYTES = False``), the way before the stored bytes;
  * ``MPI asked``: wav2emo as it is, but Lightning chooses the cluster environment itself, asking mpi4py (where
    installed) for MPI's world size (``distributed.cluster_plugins`` gives nothing), the way before.

``--profile``: then one more ``lean`` run under cProfile, its slowest calls in ``startup_profile_<machine>.txt``.

``--gpu``: the train benchmark's set-up (1440-clip synthetic corpus, random wav2vec2-base, fe_vgg_egemaps,
trainer=gpu), ~2 minutes on one H100 with ``--runs 2``; otherwise (``--cpu-smoke``) the offline demo's fold 0
on the CPU with 8 clips per actor, held resident in host memory (the upload's code path, no GPU).
``--bytecode``: ``found`` runs Python as the environment comes; ``compiled`` with compiled bytecode for every module
(``PYTHONDONTWRITEBYTECODE`` unset, ``PYTHONPYCACHEPREFIX`` in the work folder, written by one untimed run per
way), as a pip install or any writable install has it; ``both`` measures the two, interleaved.  An image built
without ``__pycache__`` and run with ``PYTHONDONTWRITEBYTECODE=1`` compiles torch's, sympy's and Lightning's Python
from source in every process (``python -m wav2emo.env`` says so).
Writes <out>/startup_phases_<machine>.json and .md, naming the machine.

    python benchmarks/startup_phases.py OUT_DIR [--gpu | --cpu-smoke] [--runs 2] [--bytecode found|compiled|both]
        [--work /tmp/wav2emo-phases]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.report_files import machine_slug, write_report  # noqa: E402
from benchmarks.startup_benchmark import machine_name  # noqa: E402
from benchmarks.startup_benchmark import train_args as startup_train_args  # noqa: E402

TARGET_SECONDS = 5.0
REFERENCE_IMPORTS = ("pandas", "sklearn.model_selection", "scipy.stats")
WAYS = ("lean", "reference", "unstreamed", "hashed", "rowwise", "MPI asked")
PRELOADS = {  # what each way runs before wav2emo.train
    "lean": "",
    # main's imports, and a resident split padded on the host and copied whole
    "reference": (f"import {', '.join(REFERENCE_IMPORTS)}\n"
                  "import wav2emo.feeding.batches as batches\nbatches.COLLATE_ON_DEVICE = False\n"),
    # the way before the streamed upload: every clip read whole (made contiguous in the reading threads), then
    # padded on the device clip by clip
    "unstreamed": ("import wav2emo.feeding.batches as batches\nbatches.STREAMED_UPLOAD = False\n"
                   "import wav2emo.feeding.input_strategies as strategies\n"
                   "_load = strategies.CachedFeatures.load\n"
                   "strategies.CachedFeatures.load = lambda self, i: {k: v.contiguous() for k, v in _load(self, i).items()}\n"),
    # the way before the digest memo: a local backbone's weights hashed again by every process
    "hashed": ("import contextlib, wav2emo.features as features\n"
               "features.digests_remembered = lambda cache_dir: contextlib.nullcontext()\n"),
    # the way before the stored bytes: every row of a resident split read through its strategy
    "rowwise": "import wav2emo.feeding.streamed_upload as streamed\nstreamed.STORED_BYTES = False\n",
    # the way before cluster_plugins: Lightning asks MPI (mpi4py, where installed) inside Trainer(...)
    "MPI asked": "import wav2emo.training.distributed as distributed\ndistributed.cluster_plugins = lambda trainer_cfg: {}\n",
}
FIRST_STEP = "first training step starts"
STEP_DONE = "first training step (forward"


def train_args(work: Path, gpu: bool) -> list[str]:
    """startup_benchmark's fold-0 run; on the CPU a smaller demo held resident (the upload's code path)."""
    args = startup_train_args(work, gpu)
    if gpu:
        return args
    return [*args, "data.corpus.clips_per_actor=8", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1",
            "loader.resident=true"]


def command(way: str, args: list[str], profile: Path | None = None) -> list[str]:
    run = ("import runpy, sys\n"
           f"sys.argv = ['wav2emo.train', *{args!r}]\n"
           "runpy.run_module('wav2emo.train', run_name='__main__', alter_sys=True)\n")
    if profile is not None:  # the whole process under cProfile, written when the run ends
        run = (f"import cProfile\ncProfile.run({run!r}, {str(profile)!r})\n")
    return [sys.executable, "-c", "".join(PRELOADS[w] for w in way.split("+")) + run]


def bytecode_env(env: dict, bytecode: str, work: Path) -> dict:
    """``found``: the environment as it is; ``compiled``: bytecode written once into the work folder, then read."""
    if bytecode == "found":
        return env
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return out


def way_name(way: str, bytecode: str) -> str:
    return way if bytecode == "found" else f"{way}, compiled bytecode"


def run_once(way: str, args: list[str], env: dict, trace: Path | None, profile: Path | None = None) -> dict:
    run_env = dict(env, **({"WAV2EMO_STARTUP_TRACE": str(trace)} if trace else {}))
    t0 = time.perf_counter()
    proc = subprocess.run(command(way, args, profile), capture_output=True, text=True, cwd=REPO, env=run_env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"training run failed ({proc.returncode}): {proc.stderr[-3000:]}")
    if trace is None:
        return {"process_s": round(wall, 2)}
    report = json.loads(trace.read_text())
    return {"process_s": round(wall, 2), "trace": report}


def phase_table(traces: list[dict]) -> list[dict]:
    """Per phase (in the order of the first trace): median start, end and duration over the runs."""
    rows: dict[str, dict] = {}
    for t in traces:
        for p in t["phases"]:
            if p["start_s"] is None or p["end_s"] is None:
                continue
            name = p["phase"] + (" (still running at the first step's end)" if p.get("open") else "")
            r = rows.setdefault(name, {"phase": name, "depth": p["depth"], "start": [], "end": []})
            r["start"].append(p["start_s"])
            r["end"].append(p["end_s"])
    out = []
    for r in rows.values():
        start, end = statistics.median(r["start"]), statistics.median(r["end"])
        out.append({"phase": r["phase"], "depth": r["depth"], "start_s": round(start, 3), "end_s": round(end, 3),
                    "took_s": round(statistics.median(e - s for s, e in zip(r["start"], r["end"], strict=True)), 3),
                    "runs": len(r["start"])})
    return sorted(out, key=lambda r: r["start_s"])


def first_step(trace: dict, prefix: str = FIRST_STEP) -> float | None:
    p = next((p for p in trace["phases"] if p["phase"].startswith(prefix)), None)
    return None if p is None else (p["start_s"] if prefix == FIRST_STEP else p["end_s"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path, help="folder for startup_phases_<machine>.json and .md")
    ap.add_argument("--work", type=Path, default=Path("/tmp/wav2emo-phases"))
    ap.add_argument("--runs", type=int, default=2)
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--gpu", action="store_true", help="the train benchmark's corpus and wav2vec2-base on the GPU")
    mode.add_argument("--cpu-smoke", action="store_true", help="the demo's fold 0, small, on the CPU (default)")
    ap.add_argument("--bytecode", choices=["found", "compiled", "both"], default="found",
                    help="Python's bytecode as the environment has it, compiled once, or both side by side")
    ap.add_argument("--ways", default=",".join(WAYS), help=f"which of {', '.join(WAYS)} (lean always); "
                    "'a+b' is the ways a and b at once (e.g. every way before a session's changes)")
    ap.add_argument("--profile", action="store_true",
                    help="then one more lean run under cProfile: startup_profile_<machine>.txt, its slowest calls")
    a = ap.parse_args()
    ways = ["lean", *[w for w in a.ways.split(",") if w and w != "lean"]]
    unknown = {p for w in ways for p in w.split("+")} - set(WAYS)
    if unknown:
        ap.error(f"--ways: unknown {sorted(unknown)}; expected some of {', '.join(WAYS)}")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
               WAV2EMO_DATA_DIR=str(a.work / "data"), WAV2EMO_CACHE_DIR=str(a.work / "cache"),
               WAV2EMO_LOG_DIR=str(a.work / "outputs"))
    env.pop("WAV2EMO_TORCHMETRICS_ALL_BACKENDS", None)
    args = train_args(a.work, a.gpu)
    t0 = time.perf_counter()
    run_once("lean", args, env, None)  # builds the corpus and the caches
    conditions = ["found", "compiled"] if a.bytecode == "both" else [a.bytecode]
    envs = {b: bytecode_env(env, b, a.work) for b in conditions}
    if "compiled" in envs:
        for way in ways:  # writes the bytecode of everything each way imports
            run_once(way, args, envs["compiled"], None)
    from wav2emo.env import bytecode_cache

    result: dict = {"machine": machine_name(), "cpus": os.cpu_count(), "load_average_1min_start":
                    round(os.getloadavg()[0], 1), "command": "python -m wav2emo.train " + " ".join(args),
                    "cache_build_run_s": round(time.perf_counter() - t0, 1), "ways": {},
                    "bytecode_found": bytecode_cache(), "pythondontwritebytecode": env.get("PYTHONDONTWRITEBYTECODE")}
    for i in range(a.runs):  # interleaved: drift in the machine's load hits every way alike
        for bytecode in conditions:
            for way in ways:
                name = way_name(way, bytecode)
                r = run_once(way, args, envs[bytecode], a.work / f"trace_{way}_{bytecode}_{i}.json")
                w = result["ways"].setdefault(name, {"runs": [], "bytecode": bytecode})
                w["runs"].append({"process_s": r["process_s"], "first_step_s": first_step(r["trace"]),
                                  "first_step_done_s": first_step(r["trace"], STEP_DONE),
                                  "imported_at_first_step": r["trace"].get("imported_at_report"),
                                  "phases": r["trace"]["phases"], "calls": r["trace"]["calls"]})
    for w in result["ways"].values():
        for key in ("first_step_s", "first_step_done_s", "process_s"):
            values = [r[key] for r in w["runs"] if r[key] is not None]
            w[f"{key}_median"] = round(statistics.median(values), 3) if values else None
        w["phases"] = phase_table([{"phases": r["phases"]} for r in w["runs"]])
    result["load_average_1min_end"] = round(os.getloadavg()[0], 1)
    write_report(a.out, f"startup_phases_{machine_slug(result['machine'])}", result, render(result))
    if a.profile:
        stats = a.work / "startup.prof"
        run_once("lean", args, envs[conditions[-1]], None, profile=stats)
        (a.out / f"startup_profile_{machine_slug(result['machine'])}.txt").write_text(
            profile_text(stats, f"{result['machine']}, {way_name('lean', conditions[-1])}, {result['command']}"))
    print(render(result))


def profile_text(stats: Path, title: str) -> str:
    """The profiled run's calls by cumulative and by own time (cProfile inflates Python-heavy calls)."""
    import io
    import pstats

    buf = io.StringIO()
    buf.write(f"cProfile of one cached training run, process start to end (one epoch): {title}\n")
    p = pstats.Stats(str(stats), stream=buf)
    p.sort_stats("cumulative").print_stats(120)
    p.sort_stats("tottime").print_stats(60)
    return buf.getvalue()


def render(r: dict) -> str:
    conditions = list(dict.fromkeys(w.get("bytecode", "found") for w in r["ways"].values()))
    lean = r["ways"][way_name("lean", conditions[0])]
    gpu = "trainer=gpu" in r["command"]
    lines = [
        f"# Start-up of a cached training run, phase by phase: {r['machine']}, {r['cpus']} CPUs", "",
        f"Command (fold 0, features cached by an untimed first run of {r['cache_build_run_s']} s): `{r['command']}`, "
        f"{len(lean['runs'])} runs per way, interleaved; 1-minute load average {r['load_average_1min_start']} at the "
        f"start, {r['load_average_1min_end']} at the end. Regenerate: `python benchmarks/startup_phases.py OUT"
        + (" --gpu" if gpu else " --cpu-smoke")
        + ("" if conditions == ["found"] else f" --bytecode {'both' if len(conditions) == 2 else conditions[0]}")
        + "`.", "",
        *bytecode_lines(r, conditions),
        "Times are seconds since the process started (`/proc/uptime`, 10 ms), from `WAV2EMO_STARTUP_TRACE`"
        " (wav2emo/startup_trace.py). `lean`: wav2emo as it is; `reference`: the same with what main imported"
        f" before the cuts imported first ({', '.join(REFERENCE_IMPORTS)}) and a resident fold padded on the host"
        " and copied whole (`COLLATE_ON_DEVICE = False`); `unstreamed`: the way before the streamed upload, a"
        " resident split read whole (each clip made contiguous by the reading threads), then padded on the device"
        " clip by clip (`STREAMED_UPLOAD = False`); `hashed`: wav2emo as it is, but a local backbone's weights"
        " hashed again in every process (no digest memo, the way before); `rowwise`: wav2emo as it is, but a resident"
        " split streamed row by row through its strategies (`STORED_BYTES = False`, the way before the stored bytes);"
        " `MPI asked`: Lightning chooses the cluster environment itself, asking mpi4py where it is installed"
        " (`cluster_plugins` gives nothing, the way before).",
        "",
        "| way | to the first step (s, median) | first step done (s) | process (s) | each run to the first step |",
        "| --- | --- | --- | --- | --- |",
    ]
    for way, w in r["ways"].items():
        lines.append(f"| {way} | {w['first_step_s_median']} | {w['first_step_done_s_median']} | "
                     f"{w['process_s_median']} | {', '.join(str(x['first_step_s']) for x in w['runs'])} |")
    lines.append("")
    for bytecode in conditions:
        new = r["ways"][way_name("lean", bytecode)]
        label = "" if len(conditions) == 1 else f" ({way_name('', bytecode).lstrip(', ') or 'bytecode as found'})"
        for other, ref in r["ways"].items():
            if ref is new or ref.get("bytecode", "found") != bytecode:
                continue
            if new["first_step_s_median"] is not None and ref["first_step_s_median"] is not None:
                lines.append(f"Saved, lean vs {other}: {ref['first_step_s_median'] - new['first_step_s_median']:.2f} s.")
        met = new["first_step_s_median"] is not None and new["first_step_s_median"] <= TARGET_SECONDS
        lines.append(f"Target (issue 25) <= {TARGET_SECONDS:.0f} s to the first step{label}: "
                     f"{'**met**' if met else '**missed**'} ({new['first_step_s_median']} s) on this machine.")
    lines.append("")
    for bytecode in conditions:
        w = r["ways"][way_name("lean", bytecode)]
        heavy = sorted({m for x in w["runs"] for m, v in (x["imported_at_first_step"] or {}).items() if v})
        name = way_name("lean", bytecode)
        lines += [f"Heavy modules imported by the first step ({name}): {', '.join(heavy) if heavy else 'none'}.", "",
                  f"Phases of the `{name}` way (medians; indented phases run inside the one above; a phase is the"
                  " first call of its function):", "", "| start | end | took | phase |", "| --- | --- | --- | --- |"]
        for p in w["phases"]:
            lines.append(f"| {p['start_s']:.3f} | {p['end_s']:.3f} | {p['took_s']:.3f} | "
                         f"{'&nbsp;&nbsp;' * p['depth']}{p['phase']} |")
        lines.append("")
    return "\n".join(lines)


def bytecode_lines(r: dict, conditions: list[str]) -> list[str]:
    found = r.get("bytecode_found") or {}
    state = ("none for " + ", ".join(found["not_compiled"]) if found.get("not_compiled")
             else "found for torch, torch._dynamo, sympy and lightning")
    lines = [f"Python bytecode in this environment: {state}; PYTHONDONTWRITEBYTECODE="
             f"{r.get('pythondontwritebytecode') or '(unset)'}."]
    if "compiled" in conditions:
        lines.append("`compiled bytecode` ways: PYTHONDONTWRITEBYTECODE unset and PYTHONPYCACHEPREFIX in the work "
                     "folder, written by one untimed run per way, as a pip install or any writable install has it.")
    return [*lines, ""]


if __name__ == "__main__":
    main()
