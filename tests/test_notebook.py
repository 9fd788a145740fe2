"""The exploration notebook runs top to bottom on a committed report, and writes nothing into it."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "explore_cv_report.ipynb"
REPORT = REPO / "experiments" / "results" / "demo"


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def test_notebook_runs_on_the_committed_demo_report(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="the dev extra installs nbformat")
    nbclient = pytest.importorskip("nbclient", reason="the dev extra installs nbclient")
    pytest.importorskip("ipykernel", reason="the dev extra installs ipykernel")

    run = tmp_path / "demo"
    shutil.copytree(REPORT, run)
    before = _digest(run)
    # A kernel spec for this very interpreter, so the notebook sees the wav2emo under test whatever `python` is.
    spec = tmp_path / "jupyter" / "kernels" / "wav2emo-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "wav2emo test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("WAV2EMO_RUN", str(run))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    monkeypatch.setenv("MPLBACKEND", "Agg")

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, kernel_name="wav2emo-test", timeout=180, resources={"metadata": {"path": str(REPO)}}).execute()

    outputs = ["".join(o.get("text", "")) + json.dumps(o.get("data", {})) for c in nb.cells if c.cell_type == "code"
               for o in c.outputs]
    text = "\n".join(outputs)
    assert str(run) in text
    assert "surprised" in text  # the per-class table and the confusion matrix name the classes
    assert "image/png" in text  # both figures are shown
    assert "no fold directories under" in text  # a committed report holds no per-fold predictions
    assert _digest(run) == before  # read only
