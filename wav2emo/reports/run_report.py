"""What a finished run writes and prints at its end: the cross-validation report of several folds (or one
fold's summary), and the protocol section a run adds to that report. Shared by the neural runs
(:mod:`wav2emo.runs.experiment`), the scikit-learn baselines (:mod:`wav2emo.baselines.runner`) and the
evaluation of published classifiers (:mod:`wav2emo.external.hf_eval`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wav2emo.features.normalize import protocol_markdown
from wav2emo.reports.fold_results import FOLD_RESULT, jsonable


def finish_run(out: Path, folds: list[int], results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Several folds: write and print the cross-validation report, return its summary. One fold: print
    that fold's test summary (return None). Shared by the neural models and the classic baselines."""
    from wav2emo.reports.aggregate import aggregate_folds, render_markdown

    if len(folds) == 1:
        print("\n" + fold_summary(results[folds[0]], out / f"fold_{folds[0]}") + "\n", flush=True)
        return None
    report = aggregate_folds(out, expected_folds=folds)
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


def declare_protocol(out: Path, protocol: Mapping[str, Any]) -> None:
    """Add the protocol section (feature, per-speaker normalisation) to the CV report this run just wrote."""
    path = out / "cv_report.json"
    if not path.is_file():
        return
    report = json.loads(path.read_text())
    report["protocol"] = {**report.get("protocol", {}), **protocol}
    path.write_text(json.dumps(jsonable(report), indent=2) + "\n")
    md = out / "cv_report.md"
    if md.is_file() and "- feature normalisation:" not in md.read_text():
        md.write_text(md.read_text().rstrip("\n") + "\n\n" + protocol_markdown(report["protocol"]) + "\n")
    if protocol.get("reads_test_speakers_unlabelled_audio"):
        print("Protocol: features.normalize=speaker reads the test speakers' unlabelled audio (per-speaker "
              "statistics); declared in cv_report.{json,md} and every fold_result.json", flush=True)


def declare_normalization(out: Path, protocol: Mapping[str, Any]) -> None:
    """Per-speaker normalisation on (a fold result's ``protocol``): say so in the CV report's protocol section
    (as the baselines do)."""
    if not protocol.get("feature_normalization"):
        return
    keys = ("feature_normalization", "reads_test_speakers_unlabelled_audio", "note")
    declare_protocol(out, {k: protocol[k] for k in keys if k in protocol})
