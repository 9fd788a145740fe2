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
UNUSED = ("transformers", "torchvision", "scipy.signal", "sklearn")


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
    assert modules_after(run, env=env, timeout=900) == {m: False for m in UNUSED}
