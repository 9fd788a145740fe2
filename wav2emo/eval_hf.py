"""``python -m wav2emo.eval_hf hf_model=<hub id or folder>``: a published audio emotion classifier on the folds.

Its label names are mapped onto the corpus's emotions (``label_map``), it predicts each fold's test actors and
the run ends with the per-fold files and cross-validation report a trained model gets (conf/eval_hf.yaml).
The logic lives in :mod:`wav2emo.external.hf_eval`.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside


@hydra.main(version_base="1.3", config_path="conf", config_name="eval_hf")
def main(cfg: DictConfig) -> float | None:
    from wav2emo.external.hf_eval import evaluate_hf

    with user_errors("wav2emo.eval_hf"):  # a bad id, folder, mapping or value: one line naming it
        metrics = evaluate_hf(cfg)
    value = metrics.get("test/ua")
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
