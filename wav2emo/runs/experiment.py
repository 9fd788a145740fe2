"""Training and evaluation of one speaker fold, and the loop over folds.

``train(cfg)`` is what ``python -m wav2emo.train`` runs: it resolves the config once into a fold's plan
(:mod:`~wav2emo.runs.plan`); for each requested fold it builds the data module and model from the plan
(:mod:`~wav2emo.runs.build`), trains with the checkpoint chosen on the dev actors and tests it
(:mod:`~wav2emo.runs.fold_runner`); several folds end with the cross-validation report.  ``evaluate`` (:mod:`~wav2emo.runs.testing`) tests a saved checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.reports.fold_results import FOLD_RESULT
from wav2emo.reports.run_report import finish_run
from wav2emo.runs.build import build_datamodule
from wav2emo.runs.common import (
    folds_to_run,
    num_folds_of,
    output_dir,
    quiet_duplicate_log_handlers,
)
from wav2emo.runs.fold_runner import _fold_dir_of, run_fold
from wav2emo.runs.plan import FoldPlan, fold_plan
from wav2emo.training.distributed import check_launch, is_distributed, is_rank_zero

log = logging.getLogger(__name__)


def plan_folds(plan: FoldPlan | DictConfig, folds: list[int]) -> tuple[Path, FoldPlan]:
    """Where the folds run and with which ``ckpt_path`` (the plan to run them with; a config is resolved into its
    plan first).

    * no ``ckpt_path``: this run's output directory (a re-run into the same directory skips finished
      folds and continues interrupted ones, see :func:`run_fold`);
    * ``ckpt_path=<run directory>`` (one holding ``fold_<k>`` folders): that directory, each requested fold
      skipped when finished, continued from its ``last.ckpt`` when interrupted, trained when absent;
    * ``ckpt_path=<checkpoint file>`` (one fold): an interrupted fold continues in its own directory; a
      finished one continues in this run's output directory, from a copy of its checkpoints.
    """
    plan = fold_plan(plan)
    out = output_dir(plan.config)
    ckpt = plan.ckpt_path
    if ckpt is None:
        return out, plan
    path = Path(str(ckpt))
    if path.is_dir():
        if path.name.startswith("fold_") and (path / "checkpoints").is_dir():
            path = path.parent
        if not any(path.glob("fold_*")):
            raise ConfigError(f"ckpt_path={ckpt}: expected a checkpoint file or a run directory holding fold_<k> "
                             f"folders, found neither")
        log.info("continuing the run in %s: finished folds are reported, interrupted ones continued", path)
        return path, replace(plan, ckpt_path=None)
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={ckpt}: no such checkpoint file or run directory")
    if len(folds) != 1:
        raise ConfigError(f"ckpt_path={ckpt} continues one fold's training but fold={folds}: pass fold=<k>, or pass "
                         f"the run directory as ckpt_path to continue every unfinished fold of that run")
    source = _fold_dir_of(path)
    if source is not None and source.name == f"fold_{folds[0]}" and not (source / FOLD_RESULT).exists():
        return source.parent, plan
    return out, plan


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the requested folds; return the metrics of the last fold plus the aggregate when several ran.

    Dev metrics (``val/...``) come back as their mean over the folds: what ``optimized_metric`` hands a
    hyper-parameter search. In a search trial (``hpsearch.trial`` set) the running mean is reported after each
    fold, and a pruner may stop the trial there (:mod:`wav2emo.hpsearch.trial`).

    Several processes (``trainer=ddp``): every process runs this, fold after fold in step; rank zero prepares
    the data of every fold before the others start, and alone writes and prints the reports
    (:mod:`wav2emo.training.distributed`).
    """
    from wav2emo.hpsearch.trial import SearchTrial, fold_dev_value

    quiet_duplicate_log_handlers()
    trial = SearchTrial.from_cfg(cfg)  # None outside a search; refuses test=true in a trial, before any data
    several = check_launch(cfg.trainer)
    if not is_rank_zero():  # the other DDP processes: warnings only, rank zero tells the story
        logging.getLogger("wav2emo").setLevel(logging.WARNING)
    plan = fold_plan(cfg)  # the config read once and checked, before any corpus is prepared: every fold's plan
    folds = folds_to_run(cfg.fold, num_folds_of(cfg))
    out, plan = plan_folds(plan, folds)
    if several and not is_distributed() and is_rank_zero():
        prepare_folds(plan, folds, out)
    results = {}
    for step, fold in enumerate(folds):
        results[fold] = run_fold(plan, fold, out / f"fold_{fold}")
        if trial is not None:
            trial.after_fold(step, [fold_dev_value(r, trial.metric) for r in results.values()])
    metrics: dict[str, Any] = {}
    last = results[folds[-1]]
    metrics.update({f"test/{k}": v for k, v in last.get("test", {}).items()})
    dev_keys = set.intersection(*(set(r.get("best_dev", {})) for r in results.values()))
    for k in dev_keys:  # dev metrics averaged over folds: what a hyper-parameter search may optimise
        values = [r["best_dev"][k] for r in results.values()]
        if all(isinstance(v, (int, float)) for v in values):
            metrics[k] = float(np.mean(values))
    if not is_rank_zero():
        return metrics
    if len(folds) > 1 and not plan.test:  # no test actors touched: no CV report, the dev summary
        metric = str(plan.config.get("optimized_metric") or "val/ua_best")
        print("\n" + dev_summary(results, metric, out) + "\n", flush=True)
        return metrics
    summary = finish_run(out, folds, results)
    if summary is not None:
        metrics["cv"] = summary
    return metrics


def dev_summary(results: Mapping[int, Mapping[str, Any]], metric: str, out: Path) -> str:
    """Several folds trained with ``test=false`` (e.g. a search trial): each fold's dev value and their mean."""
    values = {f: (r.get("best_dev") or {}).get(metric) for f, r in results.items()}
    lines = [f"Dev actors only (test=false), {metric} per fold:"]
    lines += [f"  fold {f}: {v:.4f}" if isinstance(v, (int, float)) else f"  fold {f}: n/a" for f, v in values.items()]
    known = [v for v in values.values() if isinstance(v, (int, float))]
    if known:
        lines.append(f"  mean over {len(known)} folds: {float(np.mean(known)):.4f}")
    lines.append(f"  results: {out}/fold_<k>/{FOLD_RESULT}")
    return "\n".join(lines)


def prepare_folds(plan: FoldPlan, folds: list[int], out: Path) -> None:
    """Build the corpus, feature caches and augmentation copies of every unfinished fold now, in this one
    process: under DDP the other processes start inside the first fit and then only open what exists."""
    todo = [f for f in folds if not (out / f"fold_{f}" / FOLD_RESULT).exists()]
    log.info("several processes: preparing the data of folds %s before they start", todo)
    for fold in todo:
        dm = build_datamodule(plan, fold)
        dm.setup("fit")
        if not dm.cached_copies:  # the feature caches are the whole corpus's: the first fold built them all
            break
