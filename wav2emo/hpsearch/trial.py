"""What a search trial does inside ``train()``: refuse to touch the test actors, and report the running mean
of the dev metric after each fold so that an Optuna pruner can stop a hopeless trial early.

A trial is a training job whose config has ``hpsearch.trial`` set (the sweeper adds that override). Outside a
search nothing here runs and optuna is not imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from wav2emo.errors import ConfigError

log = logging.getLogger(__name__)

# hpsearch.pruner=median: stop a trial when its running mean dev metric after a fold is below the median of
# the earlier trials' at the same fold, once 3 trials have finished and from the second fold on.
PRUNERS: dict[str, dict[str, Any]] = {
    "median": {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 3, "n_warmup_steps": 1},
}


def trial_number(cfg: DictConfig) -> int | None:
    """The Optuna trial this job is (``hpsearch.trial``), or None outside a search."""
    search = cfg.get("hpsearch")
    number = search.get("trial") if search is not None else None
    return None if number is None else int(number)


def fold_dev_value(result: Mapping[str, Any], metric: str) -> float:
    """A fold's dev value of the optimised metric (``best_dev`` of its fold result), e.g. ``val/ua_best``."""
    value = (result.get("best_dev") or {}).get(metric)
    if not isinstance(value, (int, float)):
        raise ConfigError(f"optimized_metric={metric}: fold {result.get('fold')} logged no such dev metric "
                          f"(it has {sorted(result.get('best_dev') or {})}); a search needs dev actors "
                          "(folds.n_dev_actors > 0) and a val/ metric")
    return float(value)


@dataclass
class SearchTrial:
    """One trial's job: its number, the metric it optimises and, when pruning is on, its study."""

    number: int
    metric: str
    pruner: Any = None          # an Optuna pruner, or None: every fold is trained
    storage: str | None = None
    study_name: str | None = None

    @classmethod
    def from_cfg(cls, cfg: DictConfig) -> SearchTrial | None:
        """The trial this job is, checked; None outside a search."""
        number = trial_number(cfg)
        if number is None:
            return None
        metric = str(cfg.get("optimized_metric") or "")
        if cfg.get("test", True):
            raise ConfigError(f"hpsearch.trial={number} with test=true: a search trial never tests (the test actors "
                              "stay out of the search); the best configuration is tested once at the end")
        if not metric.startswith("val/"):
            raise ConfigError(f"optimized_metric={metric or None}: a search optimises a dev metric (val/..., e.g. "
                              "val/ua_best), never a test metric")
        pruner = make_pruner(cfg.hpsearch.get("pruner"))
        if pruner is None:
            return cls(number, metric)
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            raise ConfigError("hpsearch.pruner is set but this job was not started by the search's sweeper "
                              "(python -m wav2emo.train -m hparams_search=...): no study to report to")
        sweeper = HydraConfig.get().sweeper
        return cls(number, metric, pruner, sweeper.get("storage"), sweeper.get("study_name"))

    def after_fold(self, step: int, dev_values: Sequence[float]) -> None:
        """Report the running mean dev value after ``step + 1`` folds; raise ``optuna.TrialPruned`` when the
        pruner says the trial cannot catch up (the sweeper records the trial as pruned)."""
        if self.pruner is None:
            return
        import optuna

        from wav2emo.hpsearch.study import open_study

        study = open_study(self.storage, self.study_name, pruner=self.pruner)
        trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.number)
        trial = optuna.trial.Trial(study, trial_id)
        value = float(np.mean(dev_values))
        trial.report(value, step)
        if trial.should_prune():
            log.info("trial %d pruned after %d fold(s): running mean %s %.4f", self.number, step + 1, self.metric,
                     value)
            raise optuna.TrialPruned(f"trial {self.number} pruned after {step + 1} fold(s): running mean "
                                     f"{self.metric} {value:.4f}")


def make_pruner(spec: Any) -> Any:
    """An Optuna pruner from ``hpsearch.pruner``: null (off), a name in :data:`PRUNERS`, or a config with
    ``_target_`` (e.g. ``{_target_: optuna.pruners.PercentilePruner, percentile: 25.0}``)."""
    if spec is None or spec is False:
        return None
    if isinstance(spec, str):
        if spec not in PRUNERS:
            raise ConfigError(f"hpsearch.pruner={spec}: expected null, one of {sorted(PRUNERS)}, or a config with "
                              "_target_ (an optuna.pruners class)")
        spec = PRUNERS[spec]
    from hydra.utils import instantiate

    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, dict) or "_target_" not in spec:
        raise ConfigError(f"hpsearch.pruner={spec}: expected null, one of {sorted(PRUNERS)}, or a config with "
                          "_target_ (an optuna.pruners class)")
    return instantiate(spec)
