"""`--help` of every entry point is a short, resolved header with the README's commands, not Hydra's dump."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("module", "must_show"), [
    ("wav2emo.train", ["python -m wav2emo.train experiment=demo", "model=fe_vgg_egemaps fold=3", "WAV2EMO_CACHE_DIR",
                       "finetune: full, none, top_k", "augment: gain, noise, none", "fe_vgg_egemaps, fe_vgg_logmel",
                       "--cfg job"]),
    ("wav2emo.eval", ["python -m wav2emo.eval ckpt_path=", "allow_other_fold", "WAV2EMO_CACHE_DIR"]),
    ("wav2emo.eval_hf", ["python -m wav2emo.eval_hf hf_model=", "label_map", "may have been seen", "HF_HUB_OFFLINE"]),
    ("wav2emo.extract", ["python -m wav2emo.extract data=ravdess features=wav2vec2-base", "WAV2EMO_DATA_DIR"]),
    ("wav2emo.baselines", ["python -m wav2emo.baselines model=svm data=ravdess", "hist_gb, logreg, random_forest, svm",
                           "WAV2EMO_CACHE_DIR", "--cfg job"]),
    ("wav2emo.export", ["python -m wav2emo.export ckpt_path=", "per_fold=true", "egemaps",
                        "python -m wav2emo.predict backend=onnx"]),
])
def test_help_is_a_short_header_with_examples(module, must_show):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    for text in must_show:
        assert text in out, (text, out)
    assert "${" not in out and "powered by Hydra" not in out
    assert len(out.splitlines()) < 60
