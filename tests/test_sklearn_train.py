"""``python -m wav2emo.train model=sklearn_*``: the scikit-learn baselines through the training entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["data=synthetic", "data.corpus.clips_per_actor=8", "features=tiny"]
_SHARED: dict[str, tuple[Path, Path]] = {}


def shared_dirs(tmp_path_factory) -> tuple[Path, Path]:
    """One synthetic corpus and eGeMAPS/MFCC cache for the tests of the sklearn models, per session."""
    if "dirs" not in _SHARED:
        root = tmp_path_factory.mktemp("sklearn_shared")
        _SHARED["dirs"] = (root / "data", root / "cache")
    return _SHARED["dirs"]


@pytest.fixture
def dirs(tmp_path_factory) -> tuple[Path, Path]:
    return shared_dirs(tmp_path_factory)


def _run(tmp_path: Path, dirs: tuple[Path, Path], *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "WAV2EMO_DATA_DIR": str(dirs[0]),
           "WAV2EMO_CACHE_DIR": str(dirs[1]), "WAV2EMO_LOG_DIR": str(tmp_path / "logs")}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=600)


@pytest.mark.parametrize("model", ["svm", "logreg", "random_forest", "hist_gb"])
def test_every_sklearn_model_config_composes_to_its_baseline(tmp_path, model):
    from tests.helpers import compose_cfg
    from wav2emo.baselines.model_kind import is_baseline_model
    from wav2emo.baselines.runner import command_line_overrides

    train = compose_cfg([f"model=sklearn_{model}", "features=egemaps"], tmp_path, tmp_path / "d", tmp_path / "c")
    base = compose_cfg(command_line_overrides([f"model={model}"]), tmp_path, tmp_path / "d", tmp_path / "c",
                       config_name="baselines")
    assert is_baseline_model(train.model) and train.model == base.model
    assert list(train.features) == ["normalize", "egemaps"] and train.features.normalize is None
    # python -m wav2emo.baselines also knows the sklearn_ names.
    assert command_line_overrides([f"model=sklearn_{model}"]) == [f"baseline_model@model={model}"]
    assert not is_baseline_model(compose_cfg(["model=egemaps_mlp"], tmp_path, tmp_path / "d", tmp_path / "c").model)


def test_train_routes_sklearn_models_to_the_baseline_runner(tmp_path, dirs):
    """Same folds, same numbers and the same report files as python -m wav2emo.baselines."""
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines

    out = tmp_path / "train_run"
    proc = _run(tmp_path, dirs, "wav2emo.train", "model=sklearn_logreg", *SMALL, "fold=[0,1]", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Cross-validation report" in proc.stdout and "Traceback" not in proc.stderr
    report = json.loads((out / "cv_report.json").read_text())
    assert report["folds"] == [0, 1] and report["protocol"]["feature"] == "egemaps"
    assert report["protocol"]["feature_normalization"] is None
    for fold in (0, 1):
        for name in ("fold_result.json", "predictions.csv", "config.yaml", "git.json", "environment.json"):
            assert (out / f"fold_{fold}" / name).exists(), name
    # The baselines entry point on the same corpus and cache gives the same per-fold results.
    ref = tmp_path / "baselines_run"
    ref.mkdir()
    run_baselines(baseline_cfg(ref, dirs, "model=logreg", "fold=[0,1]"))
    for fold in (0, 1):
        a = json.loads((out / f"fold_{fold}" / "fold_result.json").read_text())
        b = json.loads((ref / f"fold_{fold}" / "fold_result.json").read_text())
        assert a["model"] == "logreg" and a["split"] == b["split"]
        assert a["hyperparameters"] == b["hyperparameters"] and a["test"] == b["test"]
        assert a["dev_scores"] == b["dev_scores"]


def test_speaker_normalisation_where_the_model_computes_its_features_is_refused_not_ignored(tmp_path):
    """A neural model normalises its cached inputs (tests/test_speaker_norm_neural.py); with finetune=full it
    computes features from audio, which normalisation never reaches: refused before any corpus is built."""
    proc = _run(tmp_path, (tmp_path / "data", tmp_path / "cache"), "wav2emo.train", "model=layer_weighted", *SMALL,
                "finetune=full", "features.normalize=speaker", f"hydra.run.dir={tmp_path / 'x'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "features.normalize=speaker" in errors[0] and "finetune=full" in errors[0]
    assert not (tmp_path / "data").exists()  # refused before any corpus was built
