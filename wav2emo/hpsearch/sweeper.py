"""The search loop of ``hparams_search=``: Optuna 4 trials over whole cross-validations, as a Hydra sweeper.

Hydra's sweep syntax (``tag(log, interval(1e-5, 1e-3))``, ``choice(16, 32)``; :mod:`wav2emo.hpsearch.space`) and
the keys of the former hydra-optuna-sweeper plugin (``sampler``, ``direction``, ``storage``, ``study_name``,
``n_trials``, ``n_jobs``, ``max_failure_rate``, ``params``) are kept; the loop is wav2emo's own:

- ``n_trials`` is the size of the study: a re-run runs only the trials still missing, each in ``trial_<number>``;
- a pruned trial is recorded as pruned (not failed);
- the best configuration is trained again on every fold with ``test=true`` (``hpsearch.final_test``) through
  the same launcher, into ``best_trial_<number>/``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from wav2emo.errors import ConfigError
from wav2emo.hpsearch.space import grid_choices, parse_space, suggest
from wav2emo.hpsearch.study import (
    TEST_KEY,
    TRIAL_KEY,
    best_trial,
    check_same_search,
    fail_interrupted,
    final_dir_name,
    final_overrides,
    finished,
    make_storage,
    override,
    search_identity,
)

log = logging.getLogger(__name__)


class SearchSweeperImpl:
    """Trials of one study until it holds ``n_trials`` finished ones, then the final test of the best."""

    def __init__(self, sampler: Any, direction: Any, storage: str | None, study_name: str | None, n_trials: int,
                 n_jobs: int = 1, max_failure_rate: float = 0.0, params: Any = None) -> None:
        if not 0.0 <= float(max_failure_rate) <= 1.0:
            raise ConfigError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: expected a rate in [0, 1]")
        if int(n_jobs) < 1 or int(n_trials) < 0:
            raise ConfigError(f"hydra.sweeper.n_jobs={n_jobs}, n_trials={n_trials}: expected n_jobs >= 1 and "
                              "n_trials >= 0")
        self.sampler = sampler
        self.direction = direction
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.params = params
        self.job_idx = 0
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def directions(self) -> list[str]:
        d = self.direction
        names = [str(x) for x in d] if isinstance(d, (list, tuple)) or OmegaConf.is_list(d) else [str(d)]
        if len(names) != 1 or names[0] not in ("maximize", "minimize"):
            raise ConfigError(f"hydra.sweeper.direction={names}: a wav2emo search has one objective, the mean "
                              "dev metric over folds (optimized_metric): maximize or minimize")
        return names

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        params = [f"{k}={v}" for k, v in (self.params or {}).items()]
        space, fixed = parse_space(params + list(arguments))
        for name in fixed:  # a value given on the command line is fixed, not searched
            space.pop(name, None)
        check_search(self.config, space, fixed)
        direction = self.directions()[0]
        n_trials = self.n_trials
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            grid = {k: grid_choices(k, d) for k, d in space.items()}
            self.sampler = self.sampler(grid)
            n_trials = min(n_trials, _grid_size(grid))

        study = optuna.create_study(study_name=self.study_name, storage=make_storage(self.storage),
                                    sampler=self.sampler, direction=direction, load_if_exists=True)
        search = self.config.hpsearch
        check_same_search(study, search_identity(fixed, space), strict=bool(search.get("resume_check", True)))
        fail_interrupted(study)
        done = len(finished(study))
        if study.trials:
            # The sampler's seed would repeat the first run's random start-up trials: a resumed search
            # continues from a fresh random state (the study's history still guides TPE).
            self.sampler.reseed_rng()
        to_go = max(0, n_trials - done)
        log.info("study %r in %s: %d trial(s) finished, %d to run (n_trials=%d is the study's total)",
                 study.study_name, self.storage, done, to_go, n_trials)
        self.job_idx = len(study.trials)
        while to_go > 0:
            batch = min(to_go, self.n_jobs)
            trials = [study.ask() for _ in range(batch)]
            overrides = [(*configure_trial(t, space, fixed), f"{TEST_KEY}=false", f"{TRIAL_KEY}={t.number}")
                         for t in trials]
            returns = self.launcher.launch(overrides, initial_job_idx=self.job_idx)
            self.job_idx += len(returns)
            failed = [r for t, r in zip(trials, returns, strict=True) if not tell(study, t, r)]
            if failed and len(failed) / len(returns) > self.max_failure_rate:
                log.error("%d of %d trials failed (max_failure_rate=%s); finished trials stay in the study, and "
                          "the same command resumes the search", len(failed), len(returns), self.max_failure_rate)
                from wav2emo.hpsearch.summary import write_summary

                write_summary(Path(str(self.config.hydra.sweep.dir)), study, self.config.optimized_metric)
                reraise(failed[0])
            to_go -= batch  # a failed trial (tolerated by max_failure_rate) is replaced by the next re-run
        self.finish(study)

    def finish(self, study: optuna.Study) -> None:
        """The final test of the best configuration (``hpsearch.final_test``) and the search's summary."""
        from wav2emo.hpsearch.summary import write_summary

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        best = best_trial(study)
        if best is None:
            log.warning("study %r has no complete trial: nothing to test", study.study_name)
        else:
            log.info("best trial %d: mean dev %s %.4f with %s", best.number, self.config.optimized_metric,
                     best.value, best.params)
            OmegaConf.save(OmegaConf.create({"name": "optuna", "best_trial": best.number,
                                             "best_params": best.params, "best_value": best.value}),
                           sweep_dir / "optimization_results.yaml")
            if self.config.hpsearch.get("final_test", True):
                self.final_test(best)
        write_summary(sweep_dir, study, self.config.optimized_metric)

    def final_test(self, best: optuna.trial.FrozenTrial) -> None:
        """Train the best configuration again on every fold, tested this time: one job through the launcher,
        so it runs where the trials ran (this machine, joblib workers, a SLURM job)."""
        overrides = [*final_overrides(best), f"hydra.sweep.subdir={final_dir_name(best.number)}"]
        log.info("final run of trial %d with test=true: %s", best.number, " ".join(overrides))
        ret = self.launcher.launch([overrides], initial_job_idx=self.job_idx)[0]
        self.job_idx += 1
        if ret.status != JobStatus.COMPLETED:
            reraise(ret)


def configure_trial(trial: optuna.Trial, space: dict[str, Any], fixed: dict[str, str]) -> list[str]:
    """Draw a trial's values and return its overrides; the fixed ones are kept as its user attributes (so
    :func:`wav2emo.hpsearch.study.trial_overrides` rebuilds the trial exactly)."""
    for name, value in fixed.items():
        trial.set_user_attr(name, value)
    drawn = {name: suggest(trial, name, dist) for name, dist in space.items()}
    return [override(k, v) for k, v in {**drawn, **fixed}.items()]


def tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> bool:
    """Record a trial's outcome: complete with the job's value, pruned, or failed. True unless it failed."""
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, optuna.TrialPruned):
        study.tell(trial, state=TrialState.PRUNED)  # (ret.return_value would print "Error executing job")
        return True
    try:
        value = float(ret.return_value)
    except Exception as e:  # noqa: BLE001  (the job's own error; re-raised by the caller past max_failure_rate)
        log.warning("trial %d failed: %s: %s", trial.number, type(e).__name__, e)
        study.tell(trial, state=TrialState.FAIL)
        return False
    study.tell(trial, value)
    return True


def reraise(ret: JobReturn) -> None:
    """Raise a failed job's own error: reading ``JobReturn.return_value`` raises it, with its traceback."""
    _ = ret.return_value


def check_search(config: Any, space: dict[str, Any], fixed: dict[str, Any]) -> None:
    """Refuse what would make the search wrong before any trial trains: folds searched over, test metrics
    during the search, or a searched key that the config does not have (a typo would fail every trial)."""
    if "fold" in space:
        raise ConfigError("fold is swept: every trial must train the same folds (its objective is their mean dev "
                          "metric); give one value, e.g. fold=all")
    if str(fixed.get(TEST_KEY, "false")).lower() not in ("false", "0"):
        raise ConfigError("test=true in a search: trials never test (the test actors stay out of the search); the "
                          "best configuration is tested once at the end (hpsearch.final_test)")
    if config.get("hpsearch") is None:
        raise ConfigError("hydra/sweeper=wav2emo_optuna needs an hparams_search= config (it sets hpsearch, the "
                          "folds and test=false); e.g. hparams_search=fe_vgg_egemaps")
    missing = [k for k in space if not k.startswith("+") and OmegaConf.select(config, k, default=_MISSING) is _MISSING]
    if missing:
        raise ConfigError(f"searched keys {missing} are not in the config (a typo, or a model without them?); "
                          "see python -m wav2emo.train --cfg job for the keys")


_MISSING = object()


def _grid_size(grid: dict[str, list]) -> int:
    n = 1
    for choices in grid.values():
        n *= len(choices)
    return n
