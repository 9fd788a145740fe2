"""What a finished run writes and prints at its end: the cross-validation report of several folds (or one
fold's summary). The report's protocol section (feature normalisation, hyper-parameter selection) comes from
the folds' own results (:func:`wav2emo.reports.aggregate.declared_protocol`). Shared by the neural runs
(:mod:`wav2emo.runs.experiment`), the scikit-learn baselines (:mod:`wav2emo.baselines.runner`) and the
evaluation of published classifiers (:mod:`wav2emo.external.hf_eval`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.reports.fold_results import FOLD_RESULT


def finish_run(out: Path, folds: list[int], results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Several folds: write and print the cross-validation report, return its summary. One fold: print
    that fold's test summary (return None). Shared by the neural models and the classic baselines."""
    from wav2emo.reports.aggregate import aggregate_folds, render_markdown

    if len(folds) == 1:
        print("\n" + fold_summary(results[folds[0]], out / f"fold_{folds[0]}") + "\n", flush=True)
        return None
    report = aggregate_folds(out, expected_folds=folds)
    if report.get("protocol", {}).get("reads_test_speakers_unlabelled_audio"):
        print("Protocol: features.normalize=speaker reads the test speakers' unlabelled audio (per-speaker "
              "statistics); declared in cv_report.{json,md} and every fold_result.json", flush=True)
    files = ["cv_report.{json,md}", "confusion_matrix.png", "learning_curves.png"]
    shown = ", ".join(f"{out}/{f}" for f in files if "{" in f or (out / f).exists())
    print("\n" + render_markdown(report) + f"\n\nReport files: {shown}\n", flush=True)
    return report["summary"]


def fold_summary(result: Mapping[str, Any], fold_dir: Path) -> str:
    """A few lines on one fold's outcome: what a single-fold run prints at its end."""
    lines = [f"Fold {result['fold']} ({result.get('model')}), test actors {result['split']['test_actors']}:"]
    test = result.get("test")
    if test:
        lines.append(f"  test UA {test.get('ua', float('nan')):.4f}, WA {test.get('wa', float('nan')):.4f}, "
                     f"macro F1 {test.get('f1', float('nan')):.4f} over {result.get('test_clips')} clips")
    else:
        lines.append("  not tested (test=false)")
    dev = result.get("best_dev") or {}
    if dev.get("best_score") is not None:
        lines.append(f"  checkpoint chosen on dev actors {result['split']['dev_actors']}: "
                     f"{dev.get('monitor')} {dev['best_score']:.4f} ({result.get('best_checkpoint')})")
    lines.append(f"  results: {fold_dir / FOLD_RESULT}")
    return "\n".join(lines)


def dev_summary(results: Mapping[int, Mapping[str, Any]], metric: str, out: Path) -> str:
    """Several folds trained with ``test=false`` (e.g. a search trial): each fold's dev value and their mean."""
    values = {f: (r.get("best_dev") or {}).get(metric) for f, r in results.items()}
    lines = [f"Dev actors only (test=false), {metric} per fold:"]
    lines += [f"  fold {f}: {v:.4f}" if isinstance(v, (int, float)) else f"  fold {f}: n/a" for f, v in values.items()]
    known = [v for v in values.values() if isinstance(v, (int, float))]
    if known:
        lines.append(f"  mean over {len(known)} folds: {float(np.mean(known)):.4f}")
    lines.append(f"  results: {out}/fold_<k>/{FOLD_RESULT}")
    return "\n".join(lines)
