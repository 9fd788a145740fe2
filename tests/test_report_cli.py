"""``python -m wav2emo.report``: reports of finished runs, re-aggregated without training."""

from __future__ import annotations

import json
from pathlib import Path

from wav2emo.report import main

RESULTS = Path(__file__).resolve().parents[1] / "experiments" / "results" / "ravdess_augment"


def test_missing_directory_is_a_user_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_a_folder_without_fold_results_says_so_and_writes_nothing(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "nothing finished to report" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_committed_comparison_lists_every_configuration_with_five_folds():
    """The committed augmentation comparison is complete: five configurations, five folds each."""
    comparison = json.loads((RESULTS / "comparison.json").read_text())
    rows = comparison["configurations"]
    assert len(rows) == 5 and all(r["n_folds"] == 5 and r["complete"] for r in rows)
    for r in rows:
        assert (RESULTS / r["report"] / "cv_report.md").exists()
