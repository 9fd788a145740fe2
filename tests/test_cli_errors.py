"""A user's mistake on the command line is one line naming the value and what was expected, exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WAV2EMO_DATA_DIR": str(tmp_path / "data"),
           "WAV2EMO_CACHE_DIR": str(tmp_path / "cache"), "WAV2EMO_LOG_DIR": str(tmp_path / "out")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)


@pytest.mark.parametrize(("args", "expected"), [
    (("wav2emo.train", "experiment=demo", "fold=abc"), "wav2emo.train: error: fold='abc': 'abc' is not a fold index"),
    (("wav2emo.train", "experiment=demo", "data.corpus.root=/nonexistent/corpus"),
     "wav2emo.train: error: data.corpus.root=/nonexistent/corpus does not exist"),
    (("wav2emo.eval", "ckpt_path=/nonexistent/best.ckpt"), "wav2emo.eval: error: "),
])
def test_user_errors_are_one_line_without_a_traceback(tmp_path, args, expected):
    proc = _run(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and errors[0].startswith(expected), proc.stderr[-3000:]
    if "eval" in args[0]:
        assert "/nonexistent/best.ckpt" in errors[0]
    assert not Path("/nonexistent").exists()  # nothing was created for a path the user mistyped
