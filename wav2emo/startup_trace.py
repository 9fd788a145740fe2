"""Where a training process's start-up goes: an opt-in phase trace (``WAV2EMO_STARTUP_TRACE``), issue 25.

``WAV2EMO_STARTUP_TRACE=1 python -m wav2emo.train ...`` logs, when the first training step ends, one line per
phase with its start and end in seconds since the process started (``/proc``; the interpreter's own start-up
is the first row) and its duration: the imports of the big packages, Hydra's compose, the fold count, the
corpus manifest, the feature caches opened, the data module's set-up, the fold's upload to the GPU, the model
built, the Trainer constructed, CUDA's initialisation, and the first step.  ``WAV2EMO_STARTUP_TRACE=<file>.json``
also writes the phases there (``benchmarks/startup_phases.py`` reads it).  Unset (the default), nothing of this
module runs beyond one environment look-up.

How: the traced functions are named below by module and qualified name (nothing is imported to trace it);
an import hook wraps each one right after its module has run, before anything imports it by name, and times
every ``import`` of the packages in :data:`IMPORTS`.  A function that is not found (renamed, or its module
never imported) is listed as such, never an error.  Only the process's first call of each function is a
phase; later calls are counted in ``calls`` and ``total_s``.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path

from wav2emo.process_clock import process_age_seconds

ENV = "WAV2EMO_STARTUP_TRACE"
log = logging.getLogger(__name__)

# (module, qualified name, phase): the functions whose first call is a phase of a cached training run
TRACED: tuple[tuple[str, str, str], ...] = (
    ("wav2emo.compat", "require_compatible", "install check (wav2emo.compat)"),
    ("hydra._internal.hydra", "Hydra.compose_config", "Hydra compose (config search path, defaults, overrides)"),
    ("hydra.core.utils", "run_job", "Hydra job (output dir, logging, then the task)"),
    ("wav2emo.runs.experiment", "train", "train(cfg): every fold"),
    ("wav2emo.runs.plan", "run_plan", "config resolved into the run plan (run_plan: trial, launch, folds)"),
    ("wav2emo.runs.plan", "fold_plan", "config resolved into the fold plan (fold_plan)"),
    ("wav2emo.data.corpora", "num_folds", "fold count (manifest if needed)"),
    ("wav2emo.data.corpora", "load_corpus", "corpus manifest (load_corpus)"),
    ("wav2emo.data.folds", "build_folds", "folds (build_folds)"),
    ("wav2emo.data.folds", "assemble_fold", "fold split (assemble_fold)"),
    ("wav2emo.runs.run_info", "save_run_info", "run info written (config, git, environment)"),
    ("wav2emo.feeding.feed", "resolve_inputs", "inputs resolved (resolve_inputs)"),
    ("wav2emo.runs.build", "build_datamodule", "data module built"),
    ("wav2emo.feeding.datamodule", "EmotionDataModule.setup", "data module set-up (manifest, folds, caches)"),
    ("wav2emo.features", "get_features", "feature cache opened (get_features)"),
    ("wav2emo.feeding.datamodule", "EmotionDataModule._place", "fold placement (upload to the GPU when resident)"),
    ("wav2emo.feeding.batches", "ResidentSplit.__init__", "a resident split built (read, collate, copy to the GPU)"),
    ("wav2emo.feeding.placement", "read_items", "fold rows read from the cache"),
    ("wav2emo.feeding.input_strategies", "collate", "rows collated into padded tensors"),
    ("wav2emo.runs.build", "build_module", "model built (build_module)"),
    ("wav2emo.runs.build", "build_loggers", "loggers built"),
    ("wav2emo.runs.build", "build_callbacks", "callbacks built"),
    ("wav2emo.training.fast_path", "configure_trainer", "fast path decided (precision, CUDA graphs)"),
    ("lightning.pytorch.trainer.trainer", "Trainer.__init__", "Trainer constructed"),
    ("lightning.pytorch.trainer.trainer", "Trainer.fit", "Trainer.fit (to the end of the run)"),
    ("torch.cuda", "_lazy_init", "CUDA initialised"),
    ("wav2emo.training.callbacks", "StartupTimer.on_train_batch_start", "first training step starts"),
)
# packages whose first import is a phase (the whole import, what they import included)
IMPORTS = ("torch", "torchaudio", "lightning", "hydra", "omegaconf", "pandas", "sklearn", "scipy", "torchmetrics",
           "transformers", "torchvision", "matplotlib", "opensmile", "wandb", "tensorboard", "tensorboardX")
FIRST_STEP_END = ("wav2emo.training.callbacks", "StartupTimer.on_train_batch_end")
# modules a cached training run should not have imported by its first step (tests/test_startup.py checks them)
HEAVY = ("transformers", "torchvision", "matplotlib", "sklearn", "pandas", "scipy.stats", "scipy.signal",
         "opensmile", "tensorboard", "tensorboardX", "wandb", "librosa", "onnx", "onnxruntime", "optuna")


class Trace:
    """Phases as (name, start, end) in seconds since the process started, the first call of each."""

    def __init__(self, target: str) -> None:
        self.target = target
        age = max(process_age_seconds() or 0.0, 0.0)
        self.t0 = time.time() - age  # the process's start as a time.time() value
        self.perf0 = time.perf_counter() - age  # perf_counter's value at the process start
        self.phases: list[dict] = [{"phase": "interpreter start-up (until the trace began)", "start_s": 0.0,
                                    "end_s": round(age, 3), "depth": 0}]
        self.calls: dict[str, dict] = {}
        self.patched: set[tuple[str, str]] = set()
        self.depth = 0
        self.reported = False
        self.lock = threading.Lock()

    def now(self) -> float:
        return time.perf_counter() - self.perf0

    def timed(self, name: str, fn, *args, **kwargs):
        """Run ``fn``; its first call becomes the phase ``name`` (nested phases are indented in the report)."""
        first = name not in self.calls
        entry = self.calls.setdefault(name, {"calls": 0, "total_s": 0.0})
        phase = None
        if first:
            phase = {"phase": name, "start_s": round(self.now(), 3), "end_s": None, "depth": self.depth}
            self.phases.append(phase)
        start = self.now()
        self.depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            self.depth -= 1
            end = self.now()
            entry["calls"] += 1
            entry["total_s"] = round(entry["total_s"] + end - start, 3)
            if phase is not None:
                phase["end_s"] = round(end, 3)

    def mark(self, name: str) -> None:
        self.phases.append({"phase": name, "start_s": round(self.now(), 3), "end_s": round(self.now(), 3),
                            "depth": self.depth})

    def wrap(self, module, qualname: str, phase: str) -> bool:
        """Replace ``module.<qualname>`` by a timed wrapper (once); False when it is not there."""
        key = (module.__name__, qualname)
        if key in self.patched:
            return True
        *owner_path, attr = qualname.split(".")
        owner = module
        for part in owner_path:
            owner = getattr(owner, part, None)
            if owner is None:
                return False
        fn = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr, None)
        if fn is None or not callable(fn):
            return False
        trace = self

        @functools.wraps(fn)
        def traced(*args, **kwargs):
            return trace.timed(phase, fn, *args, **kwargs)

        setattr(owner, attr, traced)
        self.patched.add(key)
        return True

    def report(self) -> str:
        traced_names = {p for _, _, p in TRACED} | {f"import {m}" for m in IMPORTS}
        missing = sorted(traced_names - set(self.calls) - {FIRST_STEP_PHASE})
        lines = [f"start-up trace (s since the process started; {ENV}):",
                 f"{'start':>8} {'end':>8} {'took':>7}  phase"]
        for p in sorted(self.phases, key=lambda p: p["start_s"]):
            end = p["end_s"] if p["end_s"] is not None else self.now()
            still = " (still running)" if p.get("open") else ""
            lines.append(f"{p['start_s']:8.3f} {end:8.3f} {end - p['start_s']:7.3f}  {'  ' * p['depth']}{p['phase']}"
                         f"{still}")
        if missing:
            lines.append("not seen before the first step: " + "; ".join(missing))
        heavy = [m for m, seen in getattr(self, "imported", {}).items() if seen]
        lines.append("heavy modules imported by then: " + (", ".join(heavy) if heavy else "none"))
        return "\n".join(lines)

    def as_json(self) -> dict:
        return {"phases": self.phases, "calls": self.calls, "process_start_unix": self.t0,
                "imported_at_report": self.imported,
                "traced": [f"{m}.{q}" for m, q, _ in TRACED], "patched": sorted(".".join(k) for k in self.patched)}

    def finish(self) -> None:
        """Log the report and write the JSON file (once: at the end of the first step, or at exit)."""
        with self.lock:
            if self.reported:
                return
            self.reported = True
        self.imported = {m: m in sys.modules for m in HEAVY}
        now = round(self.now(), 3)
        for p in self.phases:  # the phases around the first step (Hydra's job, train, fit) are still running
            if p["end_s"] is None:
                p.update(end_s=now, open=True)
        if logging.getLogger().handlers:
            log.info("%s", self.report())
        else:  # no logging set up (at exit before Hydra's, or a script of one's own)
            print(self.report(), file=sys.stderr, flush=True)
        if self.target not in ("1", "true", "yes"):
            path = Path(self.target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(self.as_json(), indent=2))


FIRST_STEP_PHASE = "first training step (forward, backward, optimiser)"


class _Loader(importlib.abc.Loader):
    """The real loader, timed for :data:`IMPORTS` and followed by the patches of its module's functions."""

    def __init__(self, loader, trace: Trace, name: str) -> None:
        self.loader, self.trace, self.name = loader, trace, name

    def __getattr__(self, name: str):
        return getattr(self.loader, name)

    def create_module(self, spec):  # noqa: ANN001
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:  # noqa: ANN001
        if self.name in IMPORTS:
            self.trace.timed(f"import {self.name}", self.loader.exec_module, module)
        else:
            self.loader.exec_module(module)
        _patch_module(self.trace, module)


class _Finder(importlib.abc.MetaPathFinder):
    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.modules = {m for m, _, _ in TRACED} | {FIRST_STEP_END[0]} | set(IMPORTS)
        self.busy = threading.local()

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname not in self.modules or getattr(self.busy, "on", False):
            return None
        self.busy.on = True
        try:  # the spec every other finder would give (sys.meta_path without this finder)
            for finder in list(sys.meta_path):
                if finder is self or not hasattr(finder, "find_spec"):
                    continue
                spec = finder.find_spec(fullname, path, target)
                if spec is not None:
                    break
            else:
                return None
        finally:
            self.busy.on = False
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _Loader(spec.loader, self.trace, fullname)
        return spec


def _patch_module(trace: Trace, module) -> None:  # noqa: ANN001
    for mod_name, qualname, phase in TRACED:
        if mod_name == module.__name__:
            trace.wrap(module, qualname, phase)
    if module.__name__ == FIRST_STEP_END[0]:
        _patch_first_step_end(trace, module)


def _patch_first_step_end(trace: Trace, module) -> None:  # noqa: ANN001
    timer = getattr(module, "StartupTimer", None)
    if timer is None or (module.__name__, FIRST_STEP_END[1]) in trace.patched:
        return
    original = timer.__dict__.get("on_train_batch_end")

    def on_train_batch_end(self, *args, **kwargs):
        if original is not None:
            original(self, *args, **kwargs)
        if not trace.reported:
            start = next((p for p in trace.phases if p["phase"].startswith("first training step starts")), None)
            trace.phases.append({"phase": FIRST_STEP_PHASE, "start_s": start["start_s"] if start else None,
                                 "end_s": round(trace.now(), 3), "depth": 0})
            trace.finish()

    timer.on_train_batch_end = on_train_batch_end
    trace.patched.add((module.__name__, FIRST_STEP_END[1]))


_TRACE: Trace | None = None


def trace_startup() -> Trace | None:
    """Start the trace when ``WAV2EMO_STARTUP_TRACE`` is set (idempotent); the entry point calls it first."""
    global _TRACE
    target = os.environ.get(ENV, "").strip()
    if not target or target == "0" or _TRACE is not None:
        return _TRACE
    _TRACE = Trace(target)
    for name in list(sys.modules):  # modules imported before the trace began are patched now
        if name in {m for m, _, _ in TRACED} | {FIRST_STEP_END[0]}:
            _patch_module(_TRACE, sys.modules[name])
    sys.meta_path.insert(0, _Finder(_TRACE))
    atexit.register(_TRACE.finish)
    return _TRACE


def mark(name: str) -> None:
    """A point in the trace (nothing when tracing is off)."""
    if _TRACE is not None:
        _TRACE.mark(name)
