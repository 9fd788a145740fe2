"""The report of one training corpus's fold models tested on every clip of another corpus: ``cross_corpus.{json,md}``
and ``confusion_matrix.png`` (UA, WA, macro F1 over the shared emotions, with intervals over the test speakers)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.reports.fold_results import FoldResultError, jsonable, read_predictions
from wav2emo.reports.formatting import interval_lines
from wav2emo.reports.intervals import BootstrapSettings, speaker_intervals
from wav2emo.reports.speakers import SPEAKER_COLUMN

PAIR_REPORT = "cross_corpus"


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if len(v) else float("nan"), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "per_model": v.tolist()}


def write_pair_report(out: Path, results: list[dict[str, Any]], labels, *, train_corpus: str, test_corpus: str,
                      total_clips: int, unscored: dict[str, int], ckpt_path: str,
                      bootstrap: BootstrapSettings | None = None) -> dict[str, Any]:
    """``cross_corpus.{json,md}`` and ``confusion_matrix.png`` of one training corpus's models on another corpus.

    Its intervals pool every fold model's predictions (``fold_<k>/predictions.csv``) and resample the test
    corpus's speakers: how the models as a group would fare on other speakers of that corpus."""
    shared = list(labels.shared)
    confusion = np.sum([np.asarray(r["test_confusion"]) for r in results], axis=0)
    per_class = {c: _mean_std([r["test_per_class"][i]["recall"] for r in results]) for i, c in enumerate(shared)}
    report = {
        "kind": "cross_corpus",
        "train_corpus": train_corpus,
        "test_corpus": test_corpus,
        "checkpoint": ckpt_path,
        "model": results[0]["model"],
        "protocol": (f"every fold model trained on {train_corpus} tested on all {total_clips} clips of {test_corpus}; "
                     f"scored on the {len(shared)} shared emotions; argmax restricted to them"),
        "feature_normalization": results[0]["cross_corpus"].get("feature_normalization"),
        "narrow_speakers": results[0]["cross_corpus"].get("narrow_speakers") or {},
        "labels": labels.describe(),
        "clips": {"total": total_clips, "scored": int(results[0]["test_clips"]), "unscored_by_class": unscored},
        "models": [{"fold": r["fold"], **{k: r["test"][k] for k in ("wa", "ua", "f1")},
                    "unrestricted_argmax_outside_shared": r["cross_corpus"]["unrestricted_argmax_outside_shared"]}
                   for r in results],
        "summary": {k: _mean_std([r["test"][k] for r in results]) for k in ("wa", "ua", "f1")},
        "per_class_recall": per_class,
        "class_names": shared,
        "confusion_summed": confusion.tolist(),
        "intervals": _pooled_intervals(out, results, shared, bootstrap),
    }
    from wav2emo.reports.plots import plot_confusion_matrix

    out.mkdir(parents=True, exist_ok=True)
    plot_confusion_matrix(confusion, shared, out / "confusion_matrix.png",
                          title=f"{train_corpus} -> {test_corpus}, summed over {len(results)} fold model(s)")
    write_report_files(out, report, render_pair(report))
    return report


def write_report_files(out: Path, report: dict[str, Any], text: str) -> None:
    """``out/cross_corpus.json`` (``report``) and ``out/cross_corpus.md`` (``text``, its rendering), and ``text``
    shown on the terminal."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{PAIR_REPORT}.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    (out / f"{PAIR_REPORT}.md").write_text(text + "\n")
    print("\n" + text + f"\n\nReport files: {out}/{PAIR_REPORT}.{{json,md}}\n", flush=True)


def _pooled_intervals(out: Path, results: list[dict[str, Any]], shared: list[str],
                      bootstrap: BootstrapSettings | None) -> dict[str, Any]:
    """Speaker-bootstrap intervals of the fold models' pooled predictions, or why there are none."""
    import pandas as pd

    try:
        frames = [read_predictions(out / f"fold_{r['fold']}") for r in results]
    except FoldResultError as e:
        return {"unavailable": str(e)}
    preds = pd.concat(frames, ignore_index=True)
    if SPEAKER_COLUMN not in preds or not len(preds):
        return {"unavailable": f"the predictions under {out} carry no {SPEAKER_COLUMN!r} column or no clips"}
    iv = speaker_intervals(preds[SPEAKER_COLUMN].astype(str), preds["label"], preds["pred"], shared, bootstrap)
    iv["method"] += f"; the {len(results)} fold models' predictions pooled (each clip counted once per model)"
    return iv


def label_lines(report: dict[str, Any]) -> list[str]:
    """The model, the protocol, the normalisation and the label sets of a cross-corpus report (markdown lines)."""
    lab = report["labels"]
    return [
        f"Model `{report['model']}` from `{report['checkpoint']}`. {report['protocol']}.\n",
        *([f"**Per-speaker normalisation**: the test corpus's features are standardised with each of its speakers' own "
           f"statistics (label-free; reads its unlabelled audio). Speakers with clips of only one or two emotions: "
           f"{report['narrow_speakers'] or 'none'}.\n"] if report.get("feature_normalization") == "speaker" else []),
        "## Label sets\n",
        f"- {report['train_corpus']} (the model's classes): {', '.join(lab['model_classes'])}",
        f"- {report['test_corpus']}: {', '.join(lab['test_classes'])}",
        f"- mapping: {lab['mapping']}",
        f"- **scored (shared) classes**: {', '.join(lab['shared_classes'])}",
        f"- model outputs left out of the argmax: {', '.join(lab['unscored_model_classes']) or 'none'}",
        "- test clips counted but not scored (emotion not shared): "
        + (", ".join(f"{c} {n}" for c, n in report["clips"]["unscored_by_class"].items()) or "none")
        + f" — {report['clips']['scored']} of {report['clips']['total']} clips scored",
        f"- argmax: {lab['argmax']}",
    ]


def render_pair(report: dict[str, Any]) -> str:
    from wav2emo.reports.formatting import fmt

    s = report["summary"]
    lines = [
        f"# Cross-corpus: {report['train_corpus']} -> {report['test_corpus']}\n",
        *label_lines(report),
        "\n## Summary (mean ± std over the fold models)\n",
        "| metric | mean | std |", "| --- | --- | --- |",
    ]
    for k, name in (("wa", "WA (accuracy)"), ("ua", "UA (macro recall)"), ("f1", "macro F1")):
        lines.append(f"| {name} | {fmt(s[k]['mean'])} | {fmt(s[k]['std'])} |")
    lines += interval_lines(report.get("intervals"), "intervals over the test corpus's speakers (fold models pooled)")
    lines += ["\n## Per fold model\n", "| fold | WA | UA | macro F1 | unrestricted argmax outside the shared classes |",
              "| --- | --- | --- | --- | --- |"]
    for r in report["models"]:
        lines.append(f"| {r['fold']} | {fmt(r['wa'])} | {fmt(r['ua'])} | {fmt(r['f1'])} | "
                     f"{r['unrestricted_argmax_outside_shared']} of {report['clips']['scored']} |")
    lines += ["\n## Per-class recall (mean ± std over fold models)\n", "| class | recall |", "| --- | --- |"]
    for c, v in report["per_class_recall"].items():
        lines.append(f"| {c} | {fmt(v['mean'])} ± {fmt(v['std'])} |")
    names = report["class_names"]
    lines += ["\nConfusion matrix summed over fold models (rows = true, columns = predicted):\n",
              "| | " + " | ".join(n[:4] for n in names) + " |", "| --- " * (len(names) + 1) + "|"]
    for n, row in zip(names, report["confusion_summed"], strict=True):
        lines.append(f"| {n} | " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines)
