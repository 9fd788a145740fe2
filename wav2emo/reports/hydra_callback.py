"""A Hydra callback that ends every multirun with the cross-validation report in the sweep directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CrossValidationReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from wav2emo.reports.aggregate import aggregate_folds

        sweep_dir = Path(config.hydra.sweep.dir)
        expected = _swept_folds(config)
        try:
            report = aggregate_folds(sweep_dir, expected_folds=expected)
        except Exception as e:  # a report failure must not hide the folds' own results
            log.error("cross-validation report failed for %s: %s", sweep_dir, e)
            return
        if report.get("summary"):
            s = report["summary"]
            log.info(
                "cross-validation over folds %s: WA %.4f±%.4f, UA %.4f±%.4f, F1 %.4f±%.4f -> %s",
                report["folds"], s["wa"]["mean"], s["wa"]["std"], s["ua"]["mean"], s["ua"]["std"],
                s["f1"]["mean"], s["f1"]["std"], sweep_dir / "cv_report.md",
            )
        if report["missing_folds"]:
            log.warning("missing folds in %s: %s", sweep_dir, report["missing_folds"])


def _swept_folds(config: DictConfig) -> list[int] | None:
    """The folds this sweep asked for, read from its overrides (fold=0,1,2 or fold=range(5))."""
    for ov in config.hydra.overrides.task:
        key, _, value = ov.partition("=")
        if key.lstrip("+") == "fold":
            value = value.strip()
            if value.startswith("range(") and value.endswith(")"):
                return list(range(*[int(v) for v in value[6:-1].split(",")]))
            try:
                return [int(v) for v in value.split(",")]
            except ValueError:
                return None
    return None
