"""``python -m wav2emo.train``: train and evaluate on speaker folds (see conf/train.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from wav2emo.training.experiment import train

    with user_errors("wav2emo.train"):  # bad input or config: one line naming it, no traceback
        metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
