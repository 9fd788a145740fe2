"""The cross-corpus report of a sweep over seeds: repeats of the same fold models, as in a training sweep.

Each seed's fold models are tested and reported on their own (``seed=<s>/fold_<k>/`` and
``seed=<s>/cross_corpus.{json,md}``, :mod:`wav2emo.crosscorpus.pair_report`); ``cross_corpus.{json,md}`` beside
them is the report over the seeds that :mod:`wav2emo.reports.seeds` writes for a training sweep: each seed's
figures, the spread over seeds (each seed's fold models' predictions pooled) and the interval over the test
corpus's speakers with every seed's predictions pooled. No statistic of its own: no ensemble over seeds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wav2emo.crosscorpus.pair_report import PAIR_REPORT, label_lines, write_report_files
from wav2emo.reports.intervals import METRICS, BootstrapSettings
from wav2emo.reports.seeds import render_seeds, seeds_report
from wav2emo.runs.testing import EVAL_RESULT

KIND = "cross_corpus_seeds"
PAIR_KEYS = ("train_corpus", "test_corpus", "checkpoint", "model", "protocol", "feature_normalization",
             "narrow_speakers", "labels", "clips", "class_names")  # the same in every seed's pair report


def _as_seed_report(pair: Mapping[str, Any]) -> dict[str, Any]:
    """One seed's pair report in the shape :func:`wav2emo.reports.seeds.seeds_report` reads (fold models as folds)."""
    intervals = pair.get("intervals") or {}
    return {"folds": [m["fold"] for m in pair["models"]], "missing_folds": [], "protocol": pair["protocol"],
            "summary": {m: {"mean": s["mean"], "std": s["std"], "per_fold": s["per_model"]}
                        for m, s in pair["summary"].items()},
            "pooled": {m: (intervals.get(m) or {}).get("estimate") for m in METRICS}}


def write_seeds_pair_report(out: Path, per_seed: Mapping[str, Mapping[str, Any]],
                            repeats: Mapping[str, Mapping[int, Path]], bootstrap: BootstrapSettings | None
                            ) -> dict[str, Any]:
    """``out/cross_corpus.{json,md}`` over the seeds' pair reports ``per_seed`` (seed -> report written under
    ``out/seed=<s>``); ``repeats``: seed -> fold -> the directory of that fold model's ``eval_result.json``."""
    first = next(iter(per_seed.values()))
    name = f"{first['train_corpus']} -> {first['test_corpus']}"
    report = seeds_report(out, name, {s: _as_seed_report(r) for s, r in per_seed.items()}, repeats, bootstrap,
                          write=False, result_file=EVAL_RESULT, per_seed_report=f"{PAIR_REPORT}.md")
    report.update({k: first.get(k) for k in PAIR_KEYS}, kind=KIND,
                  models=[{"seed": s, **m} for s, r in per_seed.items() for m in r["models"]])
    write_report_files(out, report, render_seed_pairs(report))
    return report


def render_seed_pairs(report: Mapping[str, Any]) -> str:
    title = f"Cross-corpus: {report['train_corpus']} -> {report['test_corpus']},"
    note = (f"\nEvery seed's {len(report['folds'])} fold model(s) tested on the same clips; each seed's own report "
            "(per fold model, per-class recall, confusion matrix) is linked in the table above.\n")
    return "\n".join([render_seeds(report, title=title), note, *label_lines(report)])
