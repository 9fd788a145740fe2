"""eGeMAPS part of ``benchmarks/extract_benchmark.py``: openSMILE per core, our pool on N cores, SSL beside it.

What it measures (every number on the machine it runs on, the same corpus as the SSL part):
  1. per core: a bare loop in this one process over decoded clips, through ``opensmile.Smile.process_signal``
     (opensmile-python's interface) and through :class:`wav2emo.features.smile_api.SmileEngine` (the same
     values without pandas), and the engine with decoding (what one of our workers does per clip);
  2. the hardware's N-core bound: N fresh processes, each running that bare loop on 1/N of the clips;
  3. ours: ``get_features`` of the eGeMAPS functionals with N worker processes (N = cores), from audio files to
     a finished cache (durable), in a fresh process (as ``python -m wav2emo.extract only=[egemaps]`` would) and
     in this process; the pool's start-up alone;
  4. SSL hidden states and eGeMAPS, one after the other and overlapped (:func:`get_features_many`), each in a
     fresh process with fresh caches.
``--child`` runs one of the fresh processes (called by this module, not by hand).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

EGEMAPS_SPEC = {"kind": "egemaps_functionals", "name": "egemaps-v02-functionals", "feature_set": "eGeMAPSv02"}


def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _spread(items: list, k: int) -> list:
    """``k`` items spread over the list (short and long clips alike)."""
    if k >= len(items):
        return list(items)
    step = len(items) / k
    return [items[int(i * step)] for i in range(k)]


# 1. One core -----------------------------------------------------------------------------------------------
def per_core(paths: list[str], k: int, reps: int = 2) -> dict[str, Any]:
    import numpy as np
    import opensmile

    from wav2emo.data.audio import load_audio
    from wav2emo.features.smile_api import SmileEngine

    picks = _spread(paths, k)
    waves = [load_audio(p) for p in picks]
    audio_s = sum(len(w) for w in waves) / 16000
    t0 = time.perf_counter()
    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    construct_s = time.perf_counter() - t0
    engine = SmileEngine()
    smile.process_signal(waves[0], 16000), engine.process(waves[0], 16000)  # warm caches, lazy imports

    def timed(fn, items) -> float:
        t = time.perf_counter()
        for x in items:
            fn(x)
        return time.perf_counter() - t

    variants = {"process_signal": (lambda w: smile.process_signal(w, 16000).to_numpy(), waves),
                "engine": (lambda w: engine.process(w, 16000), waves),
                "engine_with_decoding": (lambda p: engine.process(load_audio(p), 16000), picks)}
    best: dict[str, float] = {}
    for _ in range(reps):  # interleaved, best of ``reps``: a busy neighbour or a frequency dip slows one pass
        for name, (fn, items) in variants.items():
            best[name] = min(best.get(name, float("inf")), timed(fn, items))
    out: dict[str, Any] = {"clips": len(picks), "audio_s": round(audio_s, 1), "mean_clip_s": round(audio_s / len(picks), 2),
                           "smile_construct_s": round(construct_s, 3), "reps": reps}
    for name, dt in best.items():
        out[name] = {"seconds": round(dt, 3), "clips_per_s": round(len(picks) / dt, 2),
                     "x_real_time": round(audio_s / dt, 1), "ms_per_clip": round(1000 * dt / len(picks), 2)}
    same = all(np.array_equal(engine.process(w, 16000), smile.process_signal(w, 16000).to_numpy().astype(np.float32))
               for w in waves[:5])
    out["engine_equals_process_signal"] = bool(same)
    return out


# Fresh processes -------------------------------------------------------------------------------------------
def _run_child(payload: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(payload)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": os.pathsep.join(
                              filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"child {payload.get('mode')} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    res = json.loads(lines[-1][len("RESULT "):])
    res["process_s"] = round(time.perf_counter() - t0, 2)
    return res


def child(payload: dict[str, Any]) -> None:
    start = time.perf_counter()
    mode = payload["mode"]
    if mode == "bare_share":  # one of N bare loops: imports, one engine, its share of the clips
        from wav2emo.data.audio import load_audio
        from wav2emo.features.smile_api import SmileEngine

        engine = SmileEngine()
        t0 = time.perf_counter()
        for p in payload["paths"]:
            engine.process(load_audio(p), 16000)
        res = {"loop_s": round(time.perf_counter() - t0, 3), "ready_s": round(t0 - start, 3)}
    else:
        from wav2emo.data.manifest import Manifest
        from wav2emo.features.overlap import get_features_many

        manifest = Manifest.from_csv(payload["manifest"], name=payload["name"])
        cache_dir = Path(payload["cache_dir"])
        shutil.rmtree(cache_dir, ignore_errors=True)
        seconds: dict[str, float] = {}
        t0 = time.perf_counter()
        caches = get_features_many(manifest, payload["specs"], cache_dir, seconds=seconds,
                                   overlap=payload.get("overlap", True), device=payload.get("device", "auto"),
                                   progress=False)
        total = time.perf_counter() - t0
        res = {"wall_s": round(total, 3), "seconds": {k: round(v, 3) for k, v in seconds.items()},
               "imports_s": round(t0 - start, 3),
               "build": {k: {b: v for b, v in c.meta["build"].items() if not isinstance(v, list)}
                         for k, c in caches.items()}}
        shutil.rmtree(cache_dir, ignore_errors=True)
    print("RESULT " + json.dumps(res), flush=True)


# 2. N bare loops at once -----------------------------------------------------------------------------------
def bare_parallel(paths: list[str], n: int) -> dict[str, Any]:
    """N processes, each a bare loop over every N-th clip: the most N cores give with openSMILE as it is."""
    shares = [paths[k::n] for k in range(n)]
    t0 = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, __file__, "--child", json.dumps({"mode": "bare_share", "paths": s})],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
             for s in shares]
    outs = [p.communicate() for p in procs]
    wall = time.perf_counter() - t0
    res = [json.loads([ln for ln in o.splitlines() if ln.startswith("RESULT ")][-1][7:]) for o, _ in outs]
    return {"processes": n, "wall_s": round(wall, 3), "clips_per_s": round(len(paths) / wall, 1),
            "slowest_loop_s": max(r["loop_s"] for r in res), "slowest_ready_s": max(r["ready_s"] for r in res)}


# 3. Ours ---------------------------------------------------------------------------------------------------
def ours_in_process(manifest, cache_dir: Path, n: int) -> dict[str, Any]:
    from wav2emo.features import get_features

    shutil.rmtree(cache_dir, ignore_errors=True)
    t0 = time.perf_counter()
    cache = get_features(manifest, {**EGEMAPS_SPEC, "num_workers": n}, cache_dir, progress=False)
    total = time.perf_counter() - t0
    b = cache.meta["build"]
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {"total_s": round(total, 3), "build_s": b["seconds"], "ready_s": b.get("ready_s"),
            "num_workers": b["num_workers"], "clips_per_s": round(len(manifest) / total, 1)}


def pool_start(n: int) -> dict[str, Any]:
    from wav2emo.features.smile_pool import SmilePool

    t0 = time.perf_counter()
    with SmilePool(n, "eGeMAPSv02", "functionals") as pool:
        pool.feature_names()
        ready = time.perf_counter() - t0
    return {"workers": n, "ready_s": round(ready, 3)}


def run_all(manifest, work: Path, ssl_spec: dict | None, device: str, *, per_core_clips: int = 40,
            log=print, save=lambda: None, r: dict | None = None) -> dict[str, Any]:
    """Every measurement above; ``r`` is filled as it goes (``save`` after each step keeps partial results)."""
    r = {} if r is None else r
    n = cores()
    paths = [c.path for c in manifest]
    csv = manifest.to_csv(work / "manifest.csv")
    steps = [
        ("per_core", lambda: per_core(paths, per_core_clips)),
        ("pool_start", lambda: pool_start(n)),
        ("bare_parallel", lambda: bare_parallel(paths, n)),
        ("ours_fresh_process", lambda: _run_child({"mode": "build", "manifest": str(csv), "name": manifest.name,
                                                   "specs": {"egemaps": {**EGEMAPS_SPEC, "num_workers": n}},
                                                   "cache_dir": str(work / "cache-egemaps-child")})),
        ("ours_in_process", lambda: ours_in_process(manifest, work / "cache-egemaps", n)),
    ]
    if ssl_spec is not None:
        for name, overlap in (("ssl_and_egemaps_sequential", False), ("ssl_and_egemaps_overlapped", True)):
            steps.append((name, lambda overlap=overlap: _run_child({
                "mode": "build", "manifest": str(csv), "name": manifest.name, "overlap": overlap, "device": device,
                "specs": {"ssl": ssl_spec, "egemaps": {**EGEMAPS_SPEC, "num_workers": n}},
                "cache_dir": str(work / "cache-both")}, timeout=600)))
    for name, fn in steps:
        try:
            r[name] = fn()
        except Exception as e:  # keep what was measured so far
            r[name] = {"error": f"{type(e).__name__}: {e}"}
        log(f"egemaps {name}: {r[name]}")
        save()
    r["summary"] = summary(r, len(manifest), n)
    save()
    return r


def summary(r: dict[str, Any], clips: int, n: int) -> dict[str, Any]:
    out: dict[str, Any] = {"clips": clips, "cores": n}
    pc = r.get("per_core", {})
    if "engine_with_decoding" in pc:
        rate = pc["engine_with_decoding"]["clips_per_s"]
        out["per_core_clips_per_s"] = rate
        out["ideal_n_cores_s"] = round(clips / (n * rate), 2)
        ours = r.get("ours_in_process", {}).get("total_s")
        if ours:
            out["ours_s"] = ours
            out["ours_vs_ideal"] = round(out["ideal_n_cores_s"] / ours, 3)
        bare = r.get("bare_parallel", {}).get("wall_s")
        if bare:
            out["bare_parallel_vs_ideal"] = round(out["ideal_n_cores_s"] / bare, 3)
        out["estimate_1440_on_16_cores_s"] = round(1440 / (16 * rate) + (r.get("pool_start", {}).get("ready_s") or 0), 2)
    seq, ovl = r.get("ssl_and_egemaps_sequential", {}), r.get("ssl_and_egemaps_overlapped", {})
    if "wall_s" in seq and "wall_s" in ovl:
        out.update(sequential_s=seq["wall_s"], overlapped_s=ovl["wall_s"], ssl_alone_s=seq["seconds"].get("ssl"),
                   egemaps_alone_s=seq["seconds"].get("egemaps"), overlap_saves_s=round(seq["wall_s"] - ovl["wall_s"], 2))
    return out


def markdown(r: dict[str, Any]) -> list[str]:
    s, pc = r.get("summary", {}), r.get("per_core", {})
    n = s.get("cores")
    lines = ["## eGeMAPS (openSMILE eGeMAPSv02 functionals)", ""]
    if "engine" in pc:
        lines += [
            f"Per core: a bare loop in one process over {pc['clips']} decoded clips ({pc['mean_clip_s']} s mean, "
            f"best of {pc.get('reps', 1)} interleaved passes, "
            f"16 kHz). Engine = openSMILE's C API called directly (`features/smile_api.py`; values equal to "
            f"process_signal: {pc['engine_equals_process_signal']}).",
            "",
            "| one core | clips/s | x real time | ms per clip |",
            "| --- | ---: | ---: | ---: |",
        ]
        for k in ("process_signal", "engine", "engine_with_decoding"):
            v = pc[k]
            lines.append(f"| {k.replace('_', ' ')} | {v['clips_per_s']} | {v['x_real_time']} | {v['ms_per_clip']} |")
        lines.append("")
    rows = [("N bare loops in N fresh processes (the hardware's bound)", r.get("bare_parallel", {}), "wall_s"),
            ("ours, get_features in a fresh process (whole process)", r.get("ours_fresh_process", {}), "process_s"),
            ("ours, get_features in a fresh process (the call)", r.get("ours_fresh_process", {}), "wall_s"),
            ("ours, get_features in this process", r.get("ours_in_process", {}), "total_s"),
            ("pool start-up alone (N workers ready)", r.get("pool_start", {}), "ready_s")]
    lines += [f"{s.get('clips')} clips on N = {n} cores:", "", "| run | seconds |", "| --- | ---: |"]
    lines += [f"| {name} | {v.get(key, v.get('error', '-'))} |" for name, v, key in rows]
    if "ideal_n_cores_s" in s:
        lines += ["", f"- N x per core (engine with decoding, {s['per_core_clips_per_s']} clips/s per core): "
                  f"{s['ideal_n_cores_s']} s ideal; ours reaches {100 * s.get('ours_vs_ideal', 0):.0f} % of it, "
                  f"N bare loops {100 * s.get('bare_parallel_vs_ideal', 0):.0f} %.",
                  f"- At this per-core speed, 1440 clips on 16 cores would take ~{s['estimate_1440_on_16_cores_s']} s "
                  "(pool start-up included)."]
        if s.get("ours_s") and s["clips"] == 1440:
            verdict = "met" if s["ours_s"] <= 5 and n >= 16 else "missed" if n >= 16 else "not measurable here"
            lines.append(f"- Target (1440 clips in <= 5 s on 16 cores): {verdict} ({s['ours_s']} s on {n} cores).")
    if "sequential_s" in s:
        seq, ovl = r["ssl_and_egemaps_sequential"], r["ssl_and_egemaps_overlapped"]
        lines += ["", "## SSL hidden states + eGeMAPS: one after the other vs overlapped", "",
                  "Each in a fresh process with fresh caches (`get_features_many`, as `python -m wav2emo.extract` "
                  "with both feature sets runs them).", "",
                  "| run | both caches s | SSL s | eGeMAPS s | whole process s |", "| --- | ---: | ---: | ---: | ---: |",
                  f"| sequential | {seq['wall_s']} | {seq['seconds'].get('ssl')} | {seq['seconds'].get('egemaps')} | "
                  f"{seq['process_s']} |",
                  f"| overlapped | {ovl['wall_s']} | {ovl['seconds'].get('ssl')} | {ovl['seconds'].get('egemaps')} | "
                  f"{ovl['process_s']} |",
                  "", f"- Overlap saves {s['overlap_saves_s']} s (SSL alone {s['ssl_alone_s']} s, eGeMAPS alone "
                  f"{s['egemaps_alone_s']} s)."]
    return lines


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--child":
    child(json.loads(sys.argv[2]))
