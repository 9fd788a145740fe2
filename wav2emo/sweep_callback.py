"""A Hydra callback that ends every multirun with its reports: one cross-validation report per configuration
(the overrides apart from ``fold``) and, when the sweep has several configurations, the comparison table."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class CrossValidationReport(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from wav2emo.reports.sweep import aggregate_sweep

        sweep_dir = Path(config.hydra.sweep.dir)
        if config.get("hpsearch") is not None:  # trials are not tested: the search writes hpsearch.md and the
            return                               # final run of the best configuration its own cv_report
        expected = _swept_folds(config)
        try:
            out = aggregate_sweep(sweep_dir, expected_folds=expected)
        except Exception as e:  # a report failure must not hide the folds' own results
            log.error("cross-validation report failed for %s: %s", sweep_dir, e)
            return
        if "single" in out:  # no job recorded its overrides: the folds under the sweep are one report
            _log_report(out["single"], sweep_dir)
            return
        for row in out["configurations"]:
            _log_report(out["reports"][row["name"]], sweep_dir / row["report"], row["name"])
        if len(out["configurations"]) > 1:
            log.info("comparison of %d configurations -> %s", len(out["configurations"]), sweep_dir / "comparison.md")
        if config.get("cross_corpus"):  # a sweep over training corpora: test each on the others, then the matrix
            from omegaconf import OmegaConf

            from wav2emo.crosscorpus.matrix import sweep_matrices

            label_map = config.get("cross_corpus_label_map")
            try:
                sweep_matrices(sweep_dir, label_map=OmegaConf.to_container(label_map) if label_map else None)
            except Exception as e:  # the folds' own results and reports stand
                log.error("cross-corpus matrix failed for %s: %s", sweep_dir, e)


def _log_report(report: dict[str, Any], where: Path, name: str = "") -> None:
    label = f" [{name}]" if name else ""
    if report.get("summary"):
        s = report["summary"]
        log.info(
            "cross-validation%s over folds %s: WA %.4f±%.4f, UA %.4f±%.4f, F1 %.4f±%.4f -> %s",
            label, report["folds"], s["wa"]["mean"], s["wa"]["std"], s["ua"]["mean"], s["ua"]["std"],
            s["f1"]["mean"], s["f1"]["std"], where / "cv_report.md",
        )
    if report["missing_folds"]:
        log.warning("missing folds%s in %s: %s", label, where, report["missing_folds"])


def _swept_folds(config: DictConfig) -> list[int] | None:
    """The folds this sweep asked for, read from its overrides (fold=0,1,2 or fold=range(5))."""
    from wav2emo.reports.sweep import FOLD_KEY, fold_values, parse_override

    for ov in config.hydra.overrides.task:
        key, value = parse_override(ov)
        if key == FOLD_KEY:
            return fold_values(value)
    return None
