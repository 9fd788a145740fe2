"""``hpsearch.{json,md}`` in a search's sweep directory: every trial (state, objective, dev value per fold,
parameters), the best one, and the test metrics of its final run, the search's only test."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wav2emo.hpsearch.study import best_trial, final_dir_name, final_overrides, states, trial_dir_name
from wav2emo.reports.formatting import fmt
from wav2emo.reports.fold_results import FOLD_RESULT, FoldResultError, jsonable, read_fold_result

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

SUMMARY = "hpsearch"


def fold_dev_values(trial_dir: Path, metric: str) -> dict[int, float | None]:
    """fold -> the dev value of ``metric`` in each fold result under a trial's folder."""
    out: dict[int, float | None] = {}
    for path in sorted(trial_dir.glob(f"fold_*/{FOLD_RESULT}")):
        try:
            result = read_fold_result(path)
        except FoldResultError as e:
            log.warning("ignoring unusable fold result: %s", e)
            continue
        value = (result.get("best_dev") or {}).get(metric)
        out[int(result["fold"])] = float(value) if isinstance(value, (int, float)) else None
    return dict(sorted(out.items()))


def final_result(sweep_dir: Path, number: int) -> dict[str, Any] | None:
    """The final run's cross-validation report of trial ``number`` (None before it ran)."""
    folder = sweep_dir / final_dir_name(number)
    path = folder / "cv_report.json"
    if not path.is_file():
        return None
    report = json.loads(path.read_text())
    return {"dir": str(folder), "folds": report.get("folds"), "missing_folds": report.get("missing_folds"),
            "test": {m: report["summary"][m] for m in ("ua", "wa", "f1") if m in (report.get("summary") or {})},
            "dev_ua": (report.get("dev_summary") or {}).get("ua"), "report": str(folder / "cv_report.md")}


def summarize(sweep_dir: Path, study: optuna.Study, metric: str) -> dict[str, Any]:
    trials = []
    for t in study.get_trials(deepcopy=False):
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        trials.append({"number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                       "dev_per_fold": fold_dev_values(sweep_dir / trial_dir_name(t.number), metric),
                       "intermediate": t.intermediate_values, "seconds": seconds,
                       "dir": str(sweep_dir / trial_dir_name(t.number))})
    best = best_trial(study)
    return {
        "study": study.study_name, "sweep_dir": str(sweep_dir), "direction": study.direction.name,
        "objective": f"mean over folds of the dev actors' {metric} (test=false in every trial)",
        "states": states(study.get_trials(deepcopy=False)),
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params,
                                           "overrides": final_overrides(best)},
        "final": None if best is None else final_result(sweep_dir, best.number),
        "trials": trials,
    }


def write_summary(sweep_dir: Path, study: optuna.Study, metric: str) -> dict[str, Any]:
    """Write ``hpsearch.json`` and ``hpsearch.md`` into the sweep directory and return the summary."""
    summary = summarize(Path(sweep_dir), study, metric)
    (Path(sweep_dir) / f"{SUMMARY}.json").write_text(json.dumps(jsonable(summary), indent=2) + "\n")
    (Path(sweep_dir) / f"{SUMMARY}.md").write_text(render(summary, metric) + "\n")
    log.info("search summary -> %s", Path(sweep_dir) / f"{SUMMARY}.md")
    return summary


def _pm(stat: dict[str, Any] | None) -> str:
    return "n/a" if not stat else f"{fmt(stat.get('mean'))} ± {fmt(stat.get('std'))}"


def render(summary: dict[str, Any], metric: str) -> str:
    lines = [f"# Hyper-parameter search `{summary['study']}`\n",
             f"Objective: {summary['objective']}, {summary['direction'].lower()}d. Trials: "
             + ", ".join(f"{n} {s.lower()}" for s, n in sorted(summary["states"].items())) + ".\n"]
    best, final = summary["best"], summary["final"]
    if best is None:
        lines.append("No complete trial yet.\n")
    else:
        lines.append(f"**Best: trial {best['number']}**, mean dev {metric} {fmt(best['value'])}: `"
                     + " ".join(f"{k}={v}" for k, v in best["params"].items()) + "`\n")
        if final is None:
            lines.append("Not tested yet: `python -m wav2emo.hpsearch_best " + summary["sweep_dir"] + "`\n")
        else:
            t = final["test"]
            lines.append(f"Final run (every fold again, tested once; [{final['report']}]({final['report']})): "
                         f"test UA {_pm(t.get('ua'))}, WA {_pm(t.get('wa'))}, macro F1 {_pm(t.get('f1'))}; "
                         f"dev UA {_pm(final['dev_ua'])}"
                         + (f"; **missing folds {final['missing_folds']}**" if final.get("missing_folds") else "")
                         + "\n")
    lines += [f"| trial | state | mean dev {metric} | per fold | parameters |", "| --- | --- | --- | --- | --- |"]
    order = sorted(summary["trials"], key=lambda t: (t["value"] is None, -(t["value"] or 0.0), t["number"]))
    for t in order:
        folds = ", ".join(f"{f}: {fmt(v)}" for f, v in t["dev_per_fold"].items()) or "-"
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items())
        value = fmt(t["value"])
        if t["state"] == "PRUNED" and t["intermediate"]:  # the running mean it was stopped at
            step = max(t["intermediate"])
            value = f"pruned at {fmt(t['intermediate'][step])} after {step + 1} fold(s)"
        lines.append(f"| {t['number']} | {t['state'].lower()} | {value} | {folds} | {params} |")
    return "\n".join(lines)
