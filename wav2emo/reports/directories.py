"""``python -m wav2emo.report DIR DIR ... --out OUT``: the configurations of several run or sweep directories compared.

Each directory keeps the reports :func:`wav2emo.reports.sweep.aggregate_sweep` writes for it; a plain folder of
fold results is one configuration named after the folder, a sweep's configurations are ``<folder>/<name>``.
The comparison of all of them (``comparison.{json,md,png}``) goes to ``OUT``; nothing else is written there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wav2emo.reports.aggregate import bootstrap_settings_of, find_fold_results
from wav2emo.reports.comparison import configuration_statistics
from wav2emo.reports.intervals import BootstrapSettings
from wav2emo.reports.sweep import (
    MAX_NAME,
    Configuration,
    _safe,
    aggregate_sweep,
    comparison_row,
    group_jobs,
    varying_keys,
    write_comparison,
)

log = logging.getLogger(__name__)


def compare_directories(dirs: Iterable[str | Path], out: str | Path, expected_folds: Iterable[int] | None = None,
                        *, bootstrap: BootstrapSettings | None = None) -> dict[str, Any]:
    """Each directory's reports as :func:`aggregate_sweep` writes them, then one comparison of every
    configuration of every directory, written to ``out`` (``python -m wav2emo.report DIR DIR ... --out OUT``)."""
    out = Path(out)
    dirs = [Path(d) for d in dirs]
    confs: list[Configuration] = []
    rows: list[dict[str, Any]] = []
    for d in dirs:
        result = aggregate_sweep(d, expected_folds, bootstrap=bootstrap)
        label = d.name or str(d)
        if not result["configurations"]:  # a plain folder of fold results: one configuration named after it
            c = Configuration(overrides={}, name=label, fold_dirs=find_fold_results(d))
            c.repeats = {"": c.fold_dirs}
            report, where = result["single"], d
            confs.append(c)
            rows.append(comparison_row(c, report, d, d) | {"report": os.path.relpath(where, out)})
            continue
        grouped = {c.name: c for c in group_jobs(d)}
        for row in result["configurations"]:
            c = grouped[row["name"]]
            c.name = label if len(grouped) == 1 else f"{label}/{c.name}"
            confs.append(c)
            rows.append(row | {"name": c.name, "report": os.path.relpath(d / row["report"], out)})
    names = [c.name for c in confs]
    for c in confs:  # two directories of the same name: tell them apart by their paths
        if names.count(c.name) > 1:
            c.name = _safe(str(next(iter(c.fold_dirs.values()), Path(c.name)).parent))[-MAX_NAME:]
    for c, row in zip(confs, rows, strict=True):
        row["name"] = c.name
    comparison = {"sweep_dir": ", ".join(map(str, dirs)), "dirs": [str(d) for d in dirs],
                  "varying": varying_keys(confs) or ["directory"],
                  "expected_folds": sorted(set().union(*(r["folds"] for r in rows))), "configurations": rows}
    if len(confs) < 2:
        log.info("the directories hold %d configuration(s): no comparison written", len(confs))
        return comparison
    comparison["statistics"] = configuration_statistics(
        confs, bootstrap or bootstrap_settings_of(next((c.fold_dirs for c in confs if c.fold_dirs), {})))
    write_comparison(out, comparison)
    return comparison
