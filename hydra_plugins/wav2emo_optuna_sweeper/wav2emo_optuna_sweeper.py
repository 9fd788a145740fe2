"""The sweeper behind ``hparams_search=``: hydra-optuna-sweeper's, with a resumable budget, pruned trials and
the final test of the best configuration (the work is in :mod:`wav2emo.hpsearch.sweeper`).

Hydra imports every module of ``hydra_plugins`` at start-up, so this one imports nothing heavy: optuna and
wav2emo are imported when a search runs.
"""

from __future__ import annotations

import logging
from typing import Any

from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper

# Hydra builds the sampler (importing optuna, which imports alembic) before the sweeper: alembic would log one
# INFO line per migration plugin it sets up.
logging.getLogger("alembic").setLevel(logging.WARNING)


class Wav2emoOptunaSweeper(OptunaSweeper):
    """Same config keys as the plugin's ``hydra/sweeper=optuna`` (conf/hydra/sweeper/wav2emo_optuna.yaml)."""

    def __init__(self, **kwargs: Any) -> None:
        from wav2emo.hpsearch.sweeper import SearchSweeperImpl

        self.sweeper = SearchSweeperImpl(**kwargs)
