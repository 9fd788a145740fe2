"""Training and evaluation over folds: ``train(cfg)``, what ``python -m wav2emo.train`` runs.

It resolves the config once into the run's plan (:func:`~wav2emo.runs.plan.run_plan`: the run's folder, the
search trial, the launch, every fold's plan, the folds); for each requested fold it trains with the checkpoint
chosen on the dev actors and tests it (:mod:`~wav2emo.runs.fold_runner`); several folds end with the
cross-validation report (or, without test actors, the dev summary). ``evaluate`` (:mod:`~wav2emo.runs.testing`)
tests a saved checkpoint.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from wav2emo.hpsearch.trial import fold_dev_value
from wav2emo.reports.fold_results import FOLD_RESULT
from wav2emo.reports.run_report import dev_summary, finish_run
from wav2emo.runs.build import build_datamodule
from wav2emo.runs.common import quiet_duplicate_log_handlers
from wav2emo.runs.fold_runner import run_fold
from wav2emo.runs.plan import FoldPlan, run_plan
from wav2emo.training.distributed import is_distributed, is_rank_zero

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the requested folds; return the metrics of the last fold plus the aggregate when several ran.

    Dev metrics (``val/...``) come back as their mean over the folds: what ``optimized_metric`` hands a
    hyper-parameter search. In a search trial (``hpsearch.trial`` set) the running mean is reported after each
    fold, and a pruner may stop the trial there (:mod:`wav2emo.hpsearch.trial`).

    Several processes (``trainer=ddp``): every process runs this, fold after fold in step; rank zero prepares
    the data of every fold before the others start, and alone writes and prints the reports
    (:mod:`wav2emo.training.distributed`).
    """
    quiet_duplicate_log_handlers()
    if not is_rank_zero():  # the other DDP processes: warnings only, rank zero tells the story
        logging.getLogger("wav2emo").setLevel(logging.WARNING)
    run = run_plan(cfg)  # the config read once and checked, before any corpus is prepared
    folds = run.folds
    out = run.out
    if run.several and not is_distributed() and is_rank_zero():
        prepare_folds(run.plan, folds, out)
    results = {}
    for step, fold in enumerate(folds):
        results[fold] = run_fold(run.plan, fold, out / f"fold_{fold}")
        if run.trial is not None:
            run.trial.after_fold(step, [fold_dev_value(r, run.trial.metric) for r in results.values()])
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
    if len(folds) > 1 and not run.plan.test:  # no test actors touched: no CV report, the dev summary
        metric = str(run.plan.config.get("optimized_metric") or "val/ua_best")
        print("\n" + dev_summary(results, metric, out) + "\n", flush=True)
        return metrics
    summary = finish_run(out, folds, results)
    if summary is not None:
        metrics["cv"] = summary
    return metrics


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
