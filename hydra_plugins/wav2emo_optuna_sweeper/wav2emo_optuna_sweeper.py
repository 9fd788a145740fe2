"""The sweeper behind ``hparams_search=``: Optuna 4 trials over whole cross-validations, with a resumable
budget, pruned trials and the final test of the best configuration (the work is in
:mod:`wav2emo.hpsearch.sweeper`).

Hydra imports every module of ``hydra_plugins`` at start-up, so this one imports nothing heavy: optuna and
wav2emo are imported when a search runs.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra.plugins.sweeper import Sweeper

# Building the sampler imports optuna, which imports alembic: it would log one INFO line per migration plugin.
logging.getLogger("alembic").setLevel(logging.WARNING)


class Wav2emoOptunaSweeper(Sweeper):
    """Config keys: conf/hydra/sweeper/wav2emo_optuna.yaml (sampler, direction, storage, study_name, n_trials,
    n_jobs, max_failure_rate, params)."""

    def __init__(self, **kwargs: Any) -> None:
        from wav2emo.hpsearch.sweeper import SearchSweeperImpl

        self.sweeper = SearchSweeperImpl(**kwargs)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.sweeper.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweeper.sweep(arguments)
