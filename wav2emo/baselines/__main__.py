"""``python -m wav2emo.baselines model=svm``: scikit-learn baselines on the speaker folds (conf/baselines.yaml).

``model=<name>`` picks ``conf/baseline_model/<name>.yaml`` (svm, logreg, random_forest, hist_gb; the
``sklearn_<name>`` spelling of ``python -m wav2emo.train`` works too); ``features=mfcc`` swaps the eGeMAPS
functionals for MFCC statistics, ``features.normalize=speaker`` standardises each speaker's features with
its own statistics. The logic lives in :mod:`wav2emo.baselines.runner`.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible
from wav2emo.registry import import_plugins

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside


@hydra.main(version_base="1.3", config_path="../conf", config_name="baselines")
def main(cfg: DictConfig) -> float | None:
    from wav2emo.baselines.runner import MONITOR, run_baselines

    with user_errors("wav2emo.baselines"):  # bad input or config: one line naming it, no traceback
        import_plugins(cfg.get("plugins"))  # modules of the user's that register parts of their own
        metrics = run_baselines(cfg)
    value = metrics.get(MONITOR)
    return float(value) if value is not None else None


if __name__ == "__main__":
    from wav2emo.baselines.runner import command_line_overrides

    sys.argv = [sys.argv[0], *command_line_overrides(sys.argv[1:])]
    main()
