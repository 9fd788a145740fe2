"""The report of one configuration run with several seeds (``seed=0,1,2`` in a multirun): repeats, not rivals.

Each seed keeps its own cross-validation report (``<out>/seed=<s>/cv_report.md``); ``<out>/cv_report.{json,md}``
puts them side by side: the spread over seeds (how much the result moves with the initialisation and data
order) beside the interval over speakers of all seeds' predictions pooled per speaker (how much it would move
with other speakers).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.reports.aggregate import bootstrap_settings_of
from wav2emo.reports.comparison import configuration_stats, load_run
from wav2emo.reports.fold_results import FOLD_RESULT, FoldResultError, jsonable
from wav2emo.reports.formatting import fmt, interval_lines
from wav2emo.reports.intervals import METRICS, BootstrapSettings, seed_spread

SEED_DIR = "seed={}"


def seeds_report(out: Path, name: str, per_seed: Mapping[str, Mapping[str, Any]],
                 repeats: Mapping[str, Mapping[int, Path]], bootstrap: BootstrapSettings | None = None, *,
                 write: bool = True, result_file: str = FOLD_RESULT, per_seed_report: str = "cv_report.md"
                 ) -> dict[str, Any]:
    """The configuration's report over its seeds (the keys the comparison and the sweep log read included).

    ``per_seed``: each seed's report with ``folds``, ``missing_folds``, ``summary`` (``per_fold`` values) and
    ``pooled``; ``repeats``: seed -> fold -> directory of ``predictions.csv`` and ``result_file``;
    ``per_seed_report``: the file each seed's row links to under ``seed=<s>/``."""
    first = next(iter(per_seed.values()))
    settings = bootstrap or bootstrap_settings_of(next(iter(repeats.values())))
    report: dict[str, Any] = {
        "root": str(out), "kind": "seeds", "configuration": first.get("configuration"),
        "seeds": list(per_seed), "folds": sorted(set().union(*(r["folds"] for r in per_seed.values()))),
        "missing_folds": sorted(set().union(*(r["missing_folds"] for r in per_seed.values()))),
        "protocol": first.get("protocol", {}),
        "per_seed": {s: {"summary": {m: (r.get("summary") or {}).get(m, {}).get("mean") for m in METRICS},
                         "pooled": {m: (r.get("pooled") or {}).get(m) for m in METRICS},
                         "report": f"{SEED_DIR.format(s)}/{per_seed_report}"} for s, r in per_seed.items()},
    }
    report["summary"] = {m: _over_folds(per_seed, m) for m in METRICS
                         if all((r.get("summary") or {}).get(m) for r in per_seed.values())}
    devs = [(r.get("dev_summary") or {}).get("ua") for r in per_seed.values()]
    devs = [d["mean"] for d in devs if d]
    report["dev_summary"] = {"ua": {"mean": float(np.mean(devs)), "std": seed_spread(devs)["std"],
                                    "per_fold": devs}} if devs else {}
    try:
        stats = configuration_stats(load_run(name, repeats, result_file), settings)
        report["intervals"] = stats["intervals"]
        report["seed_spread"] = stats.get("seed_spread")
    except FoldResultError as e:
        report["intervals"] = {"unavailable": str(e)}
    if write:
        out.mkdir(parents=True, exist_ok=True)
        (out / "cv_report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
        (out / "cv_report.md").write_text(render_seeds(report) + "\n")
    return report


def _over_folds(per_seed: Mapping[str, Mapping[str, Any]], metric: str) -> dict[str, Any]:
    """Mean ± std over folds of the metric averaged over seeds per fold (the same "std over folds" as a one-seed
    report; the spread over seeds is reported apart)."""
    by_fold: dict[int, list[float]] = {}
    for r in per_seed.values():
        for fold, value in zip(r["folds"], r["summary"][metric]["per_fold"], strict=False):
            by_fold.setdefault(int(fold), []).append(float(value))
    values = np.array([np.mean(v) for _, v in sorted(by_fold.items())], dtype=float)
    return {"mean": float(values.mean()) if len(values) else float("nan"),
            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0, "per_fold": values.tolist(),
            "over": "folds, each fold's metric averaged over the seeds"}


def render_seeds(report: Mapping[str, Any], title: str = "Cross-validation report") -> str:
    conf = report.get("configuration") or {}
    lines = [f"# {title} over {len(report['seeds'])} seeds\n",
             *(["Configuration: `" + " ".join(f"{k}={v}" for k, v in conf["overrides"].items()) + "`\n"]
               if conf.get("overrides") else []),
             f"Folds: {report['folds']}" + (f"; **missing folds: {report['missing_folds']}**" if report["missing_folds"]
                                            else ""),
             *([f"\nUA {fmt(report['summary']['ua']['mean'])} ± {fmt(report['summary']['ua']['std'])} (mean ± std over "
                "folds, each fold's UA averaged over the seeds)"] if report.get("summary", {}).get("ua") else []),
             "\n## Per seed (mean over folds, and pooled over all test clips)\n",
             "| seed | UA | WA | macro F1 | pooled UA | report |", "| --- | --- | --- | --- | --- | --- |"]
    for s, r in report["per_seed"].items():
        lines.append(f"| {s} | {fmt(r['summary']['ua'])} | {fmt(r['summary']['wa'])} | {fmt(r['summary']['f1'])} | "
                     f"{fmt(r['pooled']['ua'])} | [{r['report']}]({r['report']}) |")
    sp = report.get("seed_spread")
    if sp:
        lines += ["\n## Spread over seeds (pooled metrics of each seed)\n", "| metric | mean | std | min | max |",
                  "| --- | --- | --- | --- | --- |"]
        lines += [f"| {m.upper()} | {fmt(sp[m]['mean'])} | {fmt(sp[m]['std'])} | {fmt(sp[m]['min'])} | "
                  f"{fmt(sp[m]['max'])} |" for m in METRICS]
    lines += interval_lines(report.get("intervals"), "intervals over test speakers (every seed's predictions pooled)")
    return "\n".join(lines)
