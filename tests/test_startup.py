"""Start-up: a training process with cached features imports no model code it does not run (issue 25).

Each check runs in a fresh interpreter (``sys.modules`` of this test process is shared by every test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# not needed before a cached run's first step: model code, the baselines' and the reports' libraries, plots
UNUSED = ("transformers", "torchvision", "scipy.signal", "sklearn", "pandas", "scipy.stats", "matplotlib")


def modules_after(code: str, env: dict | None = None, timeout: int = 300) -> dict:
    """Run ``code`` in a fresh interpreter from the repository root; which of UNUSED it left in sys.modules."""
    probe = (
        f"{code}\nimport json, sys\n"
        f"print('MODULES=' + json.dumps({{m: m in sys.modules for m in {UNUSED!r}}}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                          env=env or dict(os.environ), timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("MODULES="))
    return json.loads(line[len("MODULES="):])


def test_import_of_the_training_entry_point_imports_no_transformers_or_torchvision():
    assert modules_after("import wav2emo.train") == {m: False for m in UNUSED}


def test_lightning_and_the_training_code_come_without_torchmetrics_backends():
    """What a cached run imports (Lightning, the module, the runner): torchmetrics reads transformers and
    torchvision as absent, where plain Lightning would import transformers when it is installed."""
    plain = modules_after("import lightning.pytorch")
    if not any(plain.values()):
        pytest.skip("torchmetrics imports none of transformers/torchvision here: nothing to leave out")
    lean = modules_after(
        "from wav2emo.startup import leave_out_unused_backends\n"
        "leave_out_unused_backends()\n"
        "import lightning.pytorch, torchmetrics\n"
        "import wav2emo.training.module, wav2emo.runs.experiment\n"
        "from torchmetrics.utilities.imports import _TRANSFORMERS_GREATER_EQUAL_4_4 as t\n"
        "assert not t and 'wav2emo/startup.py' in t.message\n"
        "from torchmetrics.classification import MulticlassAccuracy\n"  # what wav2emo computes still works
        "import torch\n"
        "acc = MulticlassAccuracy(num_classes=3, average='macro')\n"
        "assert abs(float(acc(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 2, 1]))) - 2.5 / 3) < 1e-6\n"
    )
    assert lean == {m: False for m in UNUSED}


def test_transformers_stays_importable_after_the_backends_are_left_out():
    """Feature extraction imports transformers itself: only torchmetrics' view of it changes."""
    out = modules_after(
        "from wav2emo.startup import leave_out_unused_backends\n"
        "leave_out_unused_backends()\n"
        "import lightning.pytorch\n"
        "import transformers\n"
    )
    assert out["transformers"] is True


@pytest.mark.slow
def test_a_cached_training_run_imports_no_transformers(tmp_path):
    """The whole ``python -m wav2emo.train`` of a fold whose features are cached: no transformers, no torchvision
    (the first run builds the caches with the tiny backbone, which does import transformers)."""
    env = dict(os.environ, WAV2EMO_DATA_DIR=str(tmp_path / "data"), WAV2EMO_CACHE_DIR=str(tmp_path / "cache"),
               WAV2EMO_LOG_DIR=str(tmp_path / "outputs"), OMP_NUM_THREADS="1")
    args = ["experiment=demo", "fold=0", "data.corpus.clips_per_actor=8", "trainer.max_epochs=1", "test=false",
            "trainer.limit_train_batches=2", "trainer.limit_val_batches=1"]
    run = f"import runpy, sys\nsys.argv = ['wav2emo.train', *{args!r}]\n" \
          "try:\n    runpy.run_module('wav2emo.train', run_name='__main__', alter_sys=True)\n" \
          "except SystemExit as e:\n    assert not e.code, e.code\n"
    first = modules_after(run, env=env, timeout=900)
    assert first["transformers"] is True  # control: extraction ran the backbone
    trace = tmp_path / "trace.json"
    after = modules_after(run, env=dict(env, WAV2EMO_STARTUP_TRACE=str(trace)), timeout=900)
    assert {m: v for m, v in after.items() if m not in ("pandas", "scipy.stats", "matplotlib")} == {
        m: False for m in UNUSED if m not in ("pandas", "scipy.stats", "matplotlib")}  # the reports come after
    # By the first step (the phase trace's record of sys.modules then): none of the heavy modules at all.
    report = json.loads(trace.read_text())
    assert report["imported_at_report"] and not any(report["imported_at_report"].values()), report["imported_at_report"]
    phases = [p["phase"] for p in report["phases"]]
    for phase in ("install check", "Hydra compose", "data module set-up", "feature cache opened", "model built",
                  "Trainer constructed", "first training step (forward"):
        assert any(p.startswith(phase) for p in phases), (phase, phases)
    ends = {p["phase"]: p["end_s"] for p in report["phases"]}
    first_step = next(v for k, v in ends.items() if k.startswith("first training step (forward"))
    assert all(0 <= p["start_s"] <= p["end_s"] <= first_step for p in report["phases"]), report["phases"]
    still_running = sorted(p["phase"].split(" ")[0] for p in report["phases"] if p.get("open"))  # around the step
    assert still_running == ["Hydra", "Trainer.fit", "train(cfg):"], still_running


def test_the_startup_trace_times_phases_only_when_asked(tmp_path):
    """``WAV2EMO_STARTUP_TRACE=<file>``: the traced functions' first calls and the big imports become phases in
    seconds since the process started; unset, nothing is patched or hooked."""
    code = (
        "import sys\n"
        "from wav2emo.startup_trace import trace_startup\n"
        "hooks = len(sys.meta_path)\n"
        "trace = trace_startup()\n"
        "from wav2emo.compat import require_compatible\n"
        "require_compatible()\n"
        "require_compatible()\n"
        "if trace is None:\n"
        "    assert len(sys.meta_path) == hooks and not hasattr(require_compatible, '__wrapped__')\n"
        "else:\n"
        "    assert hasattr(require_compatible, '__wrapped__')\n"
        "    trace.finish()\n"
    )
    off = dict(os.environ)
    off.pop("WAV2EMO_STARTUP_TRACE", None)
    modules_after(code, env=off)
    out = tmp_path / "trace.json"
    modules_after(code, env=dict(os.environ, WAV2EMO_STARTUP_TRACE=str(out)))
    report = json.loads(out.read_text())
    phases = {p["phase"]: p for p in report["phases"]}
    check = phases["install check (wav2emo.compat)"]
    assert 0 < check["start_s"] <= check["end_s"]
    assert report["calls"]["install check (wav2emo.compat)"]["calls"] == 2  # one phase, both calls counted
    torch_import = phases["import torch"]  # torch is first imported inside the install check: nested in it
    assert check["start_s"] <= torch_import["start_s"] <= torch_import["end_s"] <= check["end_s"]
    assert torch_import["depth"] > check["depth"]
