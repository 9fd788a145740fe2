"""Aggregate the folds of a cross-validation run into one report.

Reads every ``fold_result.json`` and ``predictions.csv`` under a run or sweep directory (folds may have
run in one process, as Hydra multirun jobs, or in parallel on several machines), and writes
``cv_report.json``, ``cv_report.md``, ``confusion_matrix.png`` and ``learning_curves.png`` beside them.
A missing or failed fold is reported as missing; what exists is still aggregated.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support, recall_score

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("wa", "ua", "f1")
KEY_PACKAGES = ("torch", "torchaudio", "transformers", "lightning", "torchmetrics", "opensmile", "numpy")


def find_fold_results(root: str | Path) -> dict[int, Path]:
    """fold -> directory holding its ``fold_result.json`` (the newest if a fold ran twice)."""
    found: dict[int, Path] = {}
    for p in sorted(Path(root).rglob("fold_result.json"), key=lambda p: p.stat().st_mtime):
        try:
            fold = int(json.loads(p.read_text())["fold"])
        except Exception as e:  # a half-written or foreign file: say so, do not guess
            log.warning("ignoring unreadable fold result %s (%s)", p, e)
            continue
        found[fold] = p.parent
    return found


def aggregate_folds(
    root: str | Path, expected_folds: Iterable[int] | None = None, *, write: bool = True
) -> dict[str, Any]:
    """The cross-validation report of the folds under ``root``; ``write=False`` only reads (e.g. a notebook)."""
    root = Path(root)
    dirs = find_fold_results(root)
    results = {f: json.loads((d / "fold_result.json").read_text()) for f, d in sorted(dirs.items())}
    tested = {f: r for f, r in results.items() if "test" in r}
    expected = sorted(set(expected_folds)) if expected_folds is not None else None
    missing = sorted(set(expected) - set(tested)) if expected is not None else []
    report: dict[str, Any] = {"root": str(root), "folds": sorted(tested), "missing_folds": missing}
    if not tested:
        report["summary"] = {}
        if write:
            _write(root, report, None, None)
        log.warning("no finished folds under %s", root)
        return report

    per_fold = []
    for f, r in tested.items():
        row = {"fold": f, "test_actors": r["split"]["test_actors"], "test_clips": r.get("test_clips")}
        row.update({m: r["test"].get(m) for m in SUMMARY_METRICS})
        row["dev_" + str(r.get("best_dev", {}).get("monitor", "score")).replace("/", "_")] = r.get(
            "best_dev", {}
        ).get("best_score")
        row["model"] = r.get("model")
        per_fold.append(row)
    summary = {}
    for m in SUMMARY_METRICS:
        vals = np.array([row[m] for row in per_fold if row[m] is not None], dtype=float)
        summary[m] = {
            "mean": float(vals.mean()),
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,  # sample std over folds
            "per_fold": vals.tolist(),
        }
    report["per_fold"] = per_fold
    report["summary"] = summary

    class_names = tested[next(iter(tested))]["class_names"]
    preds = _pooled_predictions(dirs, tested)
    pooled = None
    if preds is not None:
        y, p = preds["label"].to_numpy(), preds["pred"].to_numpy()
        labels = list(range(len(class_names)))
        pooled_cm = confusion_matrix(y, p, labels=labels)
        prec, rec, f1, support = precision_recall_fscore_support(y, p, labels=labels, zero_division=0)
        pooled = {
            "clips": int(len(preds)),
            "wa": float((y == p).mean()),
            "ua": float(recall_score(y, p, labels=labels, average="macro", zero_division=0)),
            "f1": float(f1_score(y, p, labels=labels, average="macro", zero_division=0)),
            "confusion_matrix": pooled_cm.tolist(),
            "per_class": [
                {"class": c, "precision": float(a), "recall": float(b), "f1": float(d), "support": int(s)}
                for c, a, b, d, s in zip(class_names, prec, rec, f1, support, strict=True)
            ],
        }
        report["pooled"] = pooled
    report["class_names"] = class_names
    report["environment"] = _environments(dirs, tested)
    if write:
        _write(root, report, class_names, dirs)
    return report


def _environments(dirs: dict[int, Path], tested: dict[int, Any]) -> dict[str, Any] | None:
    """What the folds ran with (versions, GPUs): one entry when all folds agree, else per fold."""
    envs = {}
    for f in tested:
        p = dirs[f] / "environment.json"
        if p.exists():
            envs[f] = json.loads(p.read_text())
    if not envs:
        return None
    first = next(iter(envs.values()))
    if all(e == first for e in envs.values()):
        return first
    return {"per_fold": {str(f): e for f, e in envs.items()}}


def _pooled_predictions(dirs: dict[int, Path], tested: dict[int, Any]) -> pd.DataFrame | None:
    frames = []
    for f in tested:
        p = dirs[f] / "predictions.csv"
        if p.exists():
            df = pd.read_csv(p)
            df["fold"] = f
            frames.append(df)
        else:
            log.warning("fold %d has no predictions.csv in %s", f, dirs[f])
    return pd.concat(frames, ignore_index=True) if frames else None


def _write(root: Path, report: dict[str, Any], class_names, dirs) -> None:
    (root / "cv_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "cv_report.md").write_text(render_markdown(report) + "\n")
    if class_names and "pooled" in report:
        from wav2emo.reports.plots import plot_confusion_matrix, plot_learning_curves

        plot_confusion_matrix(
            np.asarray(report["pooled"]["confusion_matrix"]), class_names, root / "confusion_matrix.png",
            title=f"Pooled test confusion over folds {report['folds']}",
        )
        if dirs:
            plot_learning_curves({f: d for f, d in dirs.items() if f in report["folds"]}, root / "learning_curves.png")


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# Cross-validation report\n\nFolds: {report['folds']}"]
    if report["missing_folds"]:
        lines.append(f"\n**Missing folds: {report['missing_folds']}** (failed, still running or not run).")
    if not report.get("summary"):
        return "\n".join(lines + ["\nNo finished folds."])
    s = report["summary"]
    lines += [
        "\n## Summary (test actors; checkpoint chosen on dev actors)\n",
        "| metric | mean | std (over folds) |",
        "| --- | --- | --- |",
    ]
    for m, name in (("wa", "WA (accuracy)"), ("ua", "UA (macro recall)"), ("f1", "macro F1")):
        lines.append(f"| {name} | {s[m]['mean']:.4f} | {s[m]['std']:.4f} |")
    lines += ["\n## Per fold\n", "| fold | test actors | clips | WA | UA | macro F1 |", "| --- | --- | --- | --- | --- | --- |"]
    for r in report["per_fold"]:
        lines.append(
            f"| {r['fold']} | {', '.join(map(str, r['test_actors']))} | {r['test_clips']} | "
            f"{r['wa']:.4f} | {r['ua']:.4f} | {r['f1']:.4f} |"
        )
    if "pooled" in report:
        p = report["pooled"]
        lines += [
            f"\n## Pooled over all {p['clips']} test clips\n",
            f"WA {p['wa']:.4f} · UA {p['ua']:.4f} · macro F1 {p['f1']:.4f}\n",
            "| class | precision | recall | F1 | support |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in p["per_class"]:
            lines.append(f"| {r['class']} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |")
        names = report["class_names"]
        lines += ["\nConfusion matrix (rows = true, columns = predicted):\n",
                  "| | " + " | ".join(n[:4] for n in names) + " |",
                  "| --- " * (len(names) + 1) + "|"]
        for n, row in zip(names, p["confusion_matrix"], strict=True):
            lines.append(f"| {n} | " + " | ".join(map(str, row)) + " |")
    env = report.get("environment")
    if env and "packages" in env:
        pk = env["packages"]
        stack = ", ".join(f"{k} {v}" for k, v in pk.items() if v and k in KEY_PACKAGES)
        lines += [f"\n## Environment\n\nPython {env['python']}, {stack}; torch build {env['torch_build']}; "
                  f"{', '.join(env['gpus']) if env['gpus'] else 'no GPU'}."]
    elif env:
        lines += ["\n## Environment\n\nThe folds ran with different environments: see cv_report.json."]
    return "\n".join(lines)
