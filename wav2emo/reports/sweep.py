"""Reports of a Hydra multirun: one cross-validation report per configuration and a comparison across them.

``python -m wav2emo.train -m model=fe_vgg_egemaps fold=0,1,2,3,4 finetune=none,top_k augment=none,standard``
writes numbered job directories into one sweep directory, each with ``.hydra/overrides.yaml`` and one
``fold_<k>`` folder (or several, for a ``fold=all`` job). A *configuration* is a job's overrides without
``fold``: jobs that differ only in the fold are folds of one cross-validation. Each configuration's report
goes to ``<sweep>/reports/<name>/`` (the name is built from the overrides that differ between
configurations), and ``comparison.{json,md,png}`` in the sweep directory puts them side by side. A sweep
with a single configuration (folds only) keeps its report in the sweep directory itself, as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wav2emo.reports.aggregate import (
    aggregate_fold_dirs,
    aggregate_folds,
    bootstrap_settings_of,
    find_fold_results,
)
from wav2emo.reports.comparison import configuration_statistics, plot_intervals, render_statistics
from wav2emo.reports.fold_results import FOLD_RESULT, FoldResultError, jsonable, read_fold_result
from wav2emo.reports.formatting import fmt
from wav2emo.reports.intervals import BootstrapSettings
from wav2emo.reports.seeds import seeds_report

log = logging.getLogger(__name__)

FOLD_KEY = "fold"
SEED_KEY = "seed"  # jobs that differ only in the seed are repeats of one configuration
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"
REPORTS_DIR = "reports"
COMPARISON = "comparison"
MAX_NAME = 100


@dataclass
class Configuration:
    """Jobs of one configuration (same overrides apart from ``fold`` and ``seed``) and the folds they produced.

    ``repeats``: seed (``""`` when not swept) -> fold -> directory; ``fold_dirs`` is the first seed's folds.
    """

    overrides: dict[str, str]
    jobs: list[Path] = field(default_factory=list)
    fold_dirs: dict[int, Path] = field(default_factory=dict)
    asked_folds: set[int] = field(default_factory=set)
    name: str = ""
    repeats: dict[str, dict[int, Path]] = field(default_factory=dict)


def parse_override(text: str) -> tuple[str, str]:
    """``key=value`` of one Hydra override (``+key``/``++key`` count as ``key``; ``~key`` as a deletion)."""
    key, sep, value = str(text).partition("=")
    if not sep:
        return str(text).strip(), ""
    return key.strip().lstrip("+"), value.strip()


def read_overrides(job_dir: Path) -> list[str]:
    """A job's command-line overrides from its ``.hydra/overrides.yaml``."""
    path = job_dir / OVERRIDES_FILE
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise FoldResultError(f"{path}: not readable as YAML ({e})") from None
    if data is None:
        return []
    if not isinstance(data, list):
        raise FoldResultError(f"{path}: expected a list of overrides such as ['fold=0'], got {type(data).__name__}")
    return [str(v) for v in data]


def fold_values(value: str) -> list[int] | None:
    """The folds a ``fold=`` override value names (``3``, ``[0,2]``, ``0,1``, ``range(5)``); None for ``all``."""
    value = value.strip()
    if value.startswith("range(") and value.endswith(")"):
        try:
            return list(range(*[int(v) for v in value[6:-1].split(",")]))
        except ValueError:
            return None
    try:
        return [int(v) for v in value.strip("[]").split(",") if v.strip()]
    except ValueError:
        return None


def _saved_config(fold_dirs: Iterable[Path]) -> dict[str, Any]:
    """The first readable ``config.yaml`` of a job's folds (the resolved config the job ran with)."""
    for d in fold_dirs:
        try:
            cfg = yaml.safe_load((d / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            continue
        if isinstance(cfg, dict):
            return cfg
    return {}


def asked_folds(fold_value: str | None, fold_dirs: Iterable[Path]) -> list[int]:
    """The folds a job was asked to run: its ``fold=`` override, else the ``fold`` of its saved config
    (the config's default); ``all`` means every fold the saved config's ``folds`` defines."""
    cfg = _saved_config(fold_dirs)
    if fold_value is None and "fold" in cfg:
        fold_value = str(cfg["fold"])
    if fold_value is None:
        return []
    values = fold_values(fold_value)
    if values is not None:
        return values
    folds = cfg.get("folds") or {}
    try:
        return list(range(len(folds["test_actors"]) if "test_actors" in folds else int(folds["k"])))
    except (KeyError, TypeError, ValueError):  # unknown fold count: expected folds come from the other jobs
        return []


def _job_sort_key(p: Path) -> tuple:
    return (0, int(p.name), "") if p.name.isdigit() else (1, 0, str(p))


def find_jobs(sweep_dir: Path) -> list[Path]:
    """Job directories (holding ``.hydra/overrides.yaml``) under ``sweep_dir``, in job-number order."""
    jobs = {p.parent.parent for p in sweep_dir.rglob("overrides.yaml") if p.parent.name == ".hydra"}
    return sorted(jobs, key=_job_sort_key)


def group_jobs(sweep_dir: str | Path) -> list[Configuration]:
    """The sweep's configurations, each with its jobs and fold directories, named after what varies."""
    sweep_dir = Path(sweep_dir)
    groups: dict[tuple, Configuration] = {}
    for job in find_jobs(sweep_dir):
        pairs = [parse_override(o) for o in read_overrides(job)]
        fold_value = next((v for k, v in pairs if k == FOLD_KEY), None)
        seed = next((v for k, v in pairs if k == SEED_KEY), "")
        overrides = {k: v for k, v in pairs if k not in (FOLD_KEY, SEED_KEY)}
        key = tuple(sorted(overrides.items()))
        conf = groups.setdefault(key, Configuration(overrides=overrides))
        conf.jobs.append(job)
        found = _job_fold_dirs(job)
        conf.asked_folds.update(asked_folds(fold_value, found.values()))
        dirs = conf.repeats.setdefault(seed, {})
        for f, d in found.items():
            if f in dirs:
                log.warning("fold %d of configuration %s%s ran twice (%s and %s): reporting the newer",
                            f, overrides, f" seed {seed}" if seed else "", dirs[f], d)
                if (dirs[f] / FOLD_RESULT).stat().st_mtime > (d / FOLD_RESULT).stat().st_mtime:
                    continue
            dirs[f] = d
    confs = list(groups.values())
    for c in confs:
        c.repeats = {s: c.repeats[s] for s in sorted(c.repeats, key=_seed_order)}
        c.fold_dirs = next(iter(c.repeats.values()), {})
    _name(confs)
    return confs


def _seed_order(seed: str) -> tuple:
    return (0, int(seed), "") if seed.lstrip("-").isdigit() else (1, 0, seed)


def _job_fold_dirs(job: Path) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for p in sorted(job.rglob(FOLD_RESULT), key=lambda p: p.stat().st_mtime):
        try:
            found[int(read_fold_result(p)["fold"])] = p.parent
        except FoldResultError as e:
            log.warning("ignoring unusable fold result: %s", e)
    return found


def varying_keys(confs: list[Configuration]) -> list[str]:
    """Override keys whose value is not the same in every configuration, in order of first appearance."""
    keys: list[str] = []
    for c in confs:
        keys += [k for k in c.overrides if k not in keys]
    return [k for k in keys if len({c.overrides.get(k) for c in confs}) > 1]


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", text)


def _name(confs: list[Configuration]) -> None:
    """Folder names from the varying overrides (``finetune=top_k,augment=none``), unique and filesystem-safe."""
    keys = varying_keys(confs)
    used: set[str] = set()
    for c in confs:
        label = ",".join(f"{k}={c.overrides[k]}" if k in c.overrides else f"{k}=(default)" for k in keys)
        name = _safe(label) or "default"
        digest = hashlib.sha1(json.dumps(sorted(c.overrides.items())).encode()).hexdigest()[:8]
        if len(name) > MAX_NAME or name in used:
            name = f"{name[:MAX_NAME]}-{digest}"
        used.add(name)
        c.name = name


def aggregate_sweep(
    sweep_dir: str | Path, expected_folds: Iterable[int] | None = None, *, write: bool = True,
    bootstrap: BootstrapSettings | None = None,
) -> dict[str, Any]:
    """Every configuration's cross-validation report and, with several configurations, the comparison.

    Expected folds of every configuration: ``expected_folds`` (the sweep's ``fold=`` values), the folds its
    own jobs asked for, and every fold any other configuration produced, so a configuration whose job
    failed or never ran is flagged rather than averaged over fewer folds unnoticed.
    """
    sweep_dir = Path(sweep_dir)
    confs = group_jobs(sweep_dir)
    if not confs:  # not a Hydra sweep (no .hydra folders): the folds under the directory are one report
        n_results = sum(1 for _ in sweep_dir.rglob(FOLD_RESULT))
        if n_results > len(find_fold_results(sweep_dir)):
            log.warning("%s holds %d fold results for fewer distinct folds and no .hydra/overrides.yaml to tell "
                        "configurations apart: the report takes the newest result of each fold", sweep_dir, n_results)
        return {"configurations": [], "single": aggregate_folds(sweep_dir, expected_folds, write=write)}
    expected = set(expected_folds or [])
    for c in confs:
        expected |= c.asked_folds | set(c.fold_dirs)
    single = len(confs) == 1
    rows, reports = [], {}
    for c in confs:
        out = sweep_dir if single else sweep_dir / REPORTS_DIR / c.name
        configuration = {"name": c.name, "overrides": c.overrides, "jobs": [str(j) for j in c.jobs]}
        if len(c.repeats) > 1:  # seeds: one report per seed, and the spread over seeds beside them
            per_seed = {s: aggregate_fold_dirs(out / f"{SEED_KEY}={s}", dirs, sorted(expected), write=write,
                                               configuration={**configuration, SEED_KEY: s}, bootstrap=bootstrap)
                        for s, dirs in c.repeats.items()}
            report = seeds_report(out, c.name, per_seed, c.repeats, bootstrap, write=write)
        else:
            report = aggregate_fold_dirs(out, c.fold_dirs, sorted(expected), write=write,
                                         configuration=configuration, bootstrap=bootstrap)
        reports[c.name] = report
        rows.append(comparison_row(c, report, sweep_dir, out))
    comparison = {"sweep_dir": str(sweep_dir), "varying": varying_keys(confs), "expected_folds": sorted(expected),
                  "configurations": rows}
    if not single:
        comparison["statistics"] = configuration_statistics(confs, bootstrap or _settings_of(confs))
        if write:
            write_comparison(sweep_dir, comparison)
    return {"configurations": rows, "comparison": comparison, "reports": reports}


def _settings_of(confs: list[Configuration]) -> BootstrapSettings:
    return bootstrap_settings_of(next((c.fold_dirs for c in confs if c.fold_dirs), {}))


def comparison_row(c: Configuration, report: dict[str, Any], sweep_dir: Path, out: Path) -> dict[str, Any]:
    """One configuration's line of the comparison: mean and std over folds of test UA/WA/F1 and dev UA."""
    summary = report.get("summary") or {}
    dev = (report.get("dev_summary") or {}).get("ua")
    missing = report["missing_folds"]
    return {
        "name": c.name,
        "overrides": c.overrides,
        "seeds": [s for s in c.repeats if s],
        "protocol": report.get("protocol", {}),
        "folds": report["folds"],
        "n_folds": len(report["folds"]),
        "missing_folds": missing,
        "complete": not missing and bool(report["folds"]),
        "test": {m: {"mean": summary[m]["mean"], "std": summary[m]["std"]} for m in ("ua", "wa", "f1") if m in summary},
        "dev_ua": {"mean": dev["mean"], "std": dev["std"], "folds": len(dev["per_fold"])} if dev else None,
        "report": str(out.relative_to(sweep_dir)) if out != sweep_dir else ".",
    }


def _pm(stat: dict[str, Any] | None) -> str:
    return "n/a" if not stat else f"{fmt(stat['mean'])} ± {fmt(stat['std'])}"


def render_comparison(comparison: dict[str, Any]) -> str:
    rows = comparison["configurations"]
    n_expected = len(comparison["expected_folds"])
    lines = [
        "# Comparison of configurations\n",
        (f"Directories: {', '.join(f'`{d}`' for d in comparison['dirs'])}" if comparison.get("dirs")
         else f"Sweep: `{comparison['sweep_dir']}`") + "; configurations differ in: "
        f"{', '.join(comparison['varying']) or '(nothing)'}. Mean ± sample std over folds; test on test actors, "
        "checkpoint (and baselines' hyper-parameters) chosen on dev actors.\n",
        "| configuration | folds | test UA | test WA | test macro F1 | dev UA | report |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        folds = f"{r['n_folds']}/{n_expected}"
        if r["missing_folds"]:
            folds = f"**{folds} (missing {', '.join(map(str, r['missing_folds']))})**"
        t = r["test"]
        lines.append(f"| {r['name']} | {folds} | {_pm(t.get('ua'))} | {_pm(t.get('wa'))} | {_pm(t.get('f1'))} | "
                     f"{_pm(r['dev_ua'])} | [{r['report']}]({r['report']}/cv_report.md) |")
    incomplete = [r["name"] for r in rows if not r["complete"]]
    if incomplete:
        lines.append(f"\n**Incomplete configurations (missing folds; their means are over fewer folds and do not "
                     f"compare like for like): {', '.join(incomplete)}.**")
    return "\n".join(lines)


def write_comparison(sweep_dir: Path, comparison: dict[str, Any]) -> None:
    """``comparison.{json,md,png}``: the table over folds, then the intervals and paired tests over speakers."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    stats = comparison.get("statistics")
    md = render_comparison(comparison)
    if stats:
        md += "\n" + "\n".join(render_statistics(stats))
        md += "".join(f"\n\n**No intervals for {u['name']}: {u['reason']}.**" for u in stats.get("unusable", []))
    (sweep_dir / f"{COMPARISON}.json").write_text(json.dumps(jsonable(comparison), indent=2) + "\n")
    (sweep_dir / f"{COMPARISON}.md").write_text(md + "\n")
    if stats and stats["configurations"]:
        plot_intervals(stats, sweep_dir / f"{COMPARISON}.png")
    else:
        plot_comparison(comparison, sweep_dir / f"{COMPARISON}.png")


def plot_comparison(comparison: dict[str, Any], path: Path) -> Path:
    """Test UA (bars, std over folds as error bars) and dev UA (dots) per configuration."""
    from wav2emo.reports.plots import save_ua_rows, ua_rows_figure

    rows = comparison["configurations"]
    names = [r["name"] + ("  (missing folds)" if not r["complete"] else "") for r in rows]
    ua = np.array([r["test"].get("ua", {}).get("mean", np.nan) for r in rows], dtype=float)
    err = np.array([r["test"].get("ua", {}).get("std", 0.0) for r in rows], dtype=float)
    dev = np.array([(r["dev_ua"] or {}).get("mean", np.nan) for r in rows], dtype=float)
    y = np.arange(len(rows))
    fig, ax = ua_rows_figure(len(rows))
    bars = ax.barh(y, np.nan_to_num(ua), xerr=np.nan_to_num(err), color="tab:blue", alpha=0.8, label="test UA")
    for bar, r in zip(bars, rows, strict=True):
        if not r["complete"]:
            bar.set_hatch("//")
            bar.set_alpha(0.4)
    ax.plot(dev, y, "o", color="tab:orange", label="dev UA")
    return save_ua_rows(fig, ax, names, "UA (macro recall), mean ± std over folds", path)

