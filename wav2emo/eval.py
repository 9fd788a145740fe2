"""``python -m wav2emo.eval ckpt_path=... [fold=k]``: test a saved checkpoint on its fold's test actors."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    from wav2emo.training.experiment import evaluate

    with user_errors("wav2emo.eval"):  # a bad file or value is the user's to fix: one line naming it
        return float(evaluate(cfg)["test"]["ua"])


if __name__ == "__main__":
    main()
