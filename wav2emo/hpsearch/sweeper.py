"""The search loop of ``hparams_search=``: hydra-optuna-sweeper's sweeper with what a long search needs.

The plugin's config, search-space syntax (``tag(log, interval(1e-5, 1e-3))``, ``choice(16, 32)``), samplers and
launcher handling are kept; its ``sweep`` is replaced because it

- runs ``n_trials`` *more* trials on every invocation and restarts its job numbering at 0, so re-running an
  interrupted search wrote new trials into the old trials' folders (whose finished folds ``train`` would have
  reported instead of training the new configuration). Here ``n_trials`` is the size of the study: a re-run
  runs only the trials still missing, each in ``trial_<number>``;
- records a pruned trial as failed (and stops the search, ``max_failure_rate`` being 0 by default);
- ends without testing anything. Here the best configuration is trained again on every fold with
  ``test=true`` (``hpsearch.final_test``) through the same launcher, into ``best_trial_<number>/``.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from omegaconf import OmegaConf
from optuna.trial import TrialState

from wav2emo.errors import ConfigError
from wav2emo.hpsearch.study import (
    TEST_KEY,
    TRIAL_KEY,
    best_trial,
    check_same_search,
    fail_interrupted,
    final_dir_name,
    final_overrides,
    finished,
    prepare_storage,
    search_identity,
)

log = logging.getLogger(__name__)


class SearchSweeperImpl(OptunaSweeperImpl):
    """Trials of one study until it holds ``n_trials`` finished ones, then the final test of the best."""

    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None and self.launcher is not None
        self._process_searchspace_config()
        space, fixed = create_params_from_overrides(self._parse_sweeper_params_config() + list(arguments))
        space = {**(self.search_space_distributions or {}), **space}
        for name in fixed:  # a value given on the command line is fixed, not searched
            space.pop(name, None)
        check_search(self.config, space, fixed)
        directions = self._get_directions()
        if len(directions) != 1:
            raise ConfigError(f"hydra.sweeper.direction={directions}: a wav2emo search has one objective, the mean "
                              "dev metric over folds (optimized_metric)")
        n_trials = self.n_trials
        if isinstance(self.sampler, functools.partial) and self.sampler.func == optuna.samplers.GridSampler:
            grid = {k: self._to_grid_sampler_choices(d) for k, d in space.items()}
            self.sampler = self.sampler(grid)
            n_trials = min(n_trials, _grid_size(grid))

        prepare_storage(self.storage)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    direction=directions[0], load_if_exists=True)
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
            overrides = [(*o, f"{TEST_KEY}=false", f"{TRIAL_KEY}={t.number}")
                         for o, t in zip(self._configure_trials(trials, space, fixed), trials, strict=True)]
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
