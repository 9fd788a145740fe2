"""Published reports say what they ran with: every fold records its environment, the CV report carries it."""

from __future__ import annotations

import json

import pandas as pd

from wav2emo.reports.aggregate import aggregate_folds, render_markdown
from wav2emo.runs.run_info import ENVIRONMENT_FILE, environment_info


def _fake_fold(root, fold, env):
    d = root / f"fold_{fold}"
    d.mkdir(parents=True)
    names = ["neutral", "calm"]
    (d / "fold_result.json").write_text(json.dumps({
        "fold": fold, "model": "m", "split": {"test_actors": [fold + 1]}, "test_clips": 4, "class_names": names,
        "test": {"wa": 0.5, "ua": 0.5, "f1": 0.5}, "best_dev": {"monitor": "val/ua", "best_score": 0.5},
    }))
    pd.DataFrame({"clip_id": list("abcd"), "label": [0, 0, 1, 1], "pred": [0, 1, 1, 0]}).to_csv(d / "predictions.csv")
    (d / ENVIRONMENT_FILE).write_text(json.dumps(env))


def test_environment_info_names_the_stack():
    env = environment_info()
    for name in ("torch", "torchaudio", "transformers", "lightning", "opensmile"):
        assert env["packages"][name], name
    assert env["python"].count(".") == 2 and isinstance(env["gpus"], list)


def test_cv_report_records_the_environment_of_its_folds(tmp_path):
    env = environment_info()
    for fold in (0, 1):
        _fake_fold(tmp_path / "same", fold, env)
    report = aggregate_folds(tmp_path / "same", write=False)
    assert report["environment"] == env
    md = render_markdown(report)
    assert "## Environment" in md and f"torch {env['packages']['torch']}" in md
    assert not (tmp_path / "same" / "cv_report.json").exists()  # write=False only reads

    other = {**env, "packages": {**env["packages"], "torch": "0.0.1"}}
    _fake_fold(tmp_path / "mixed", 0, env)
    _fake_fold(tmp_path / "mixed", 1, other)
    mixed = aggregate_folds(tmp_path / "mixed", write=False)
    assert set(mixed["environment"]["per_fold"]) == {"0", "1"}
    assert "different environments" in render_markdown(mixed)
