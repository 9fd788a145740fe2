"""``python -m wav2emo.train``: train and evaluate on speaker folds (see conf/train.yaml).

``model=sklearn_svm`` (sklearn_logreg, sklearn_random_forest, sklearn_hist_gb) runs the scikit-learn baselines
of :mod:`wav2emo.baselines.runner` instead, on the same folds and ending in the same reports.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from wav2emo.cli import user_errors
from wav2emo.compat import require_compatible
from wav2emo.registry import import_plugins
from wav2emo.startup import leave_out_unused_backends

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside
leave_out_unused_backends()  # torchmetrics without transformers/torchvision (wav2emo/startup.py)


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from wav2emo.baselines.runner import is_baseline_model

    with user_errors("wav2emo.train"):  # bad input or config: one line naming it, no traceback
        import_plugins(cfg.get("plugins"))  # modules of the user's that register parts of their own
        if is_baseline_model(cfg.model):  # model=sklearn_*: the baselines' runner, same folds and reports
            from wav2emo.baselines.runner import run_baselines
            from wav2emo.feeding.feed import refuse_finetune

            refuse_finetune(cfg)  # a scikit-learn model has no backbone to fine-tune
            from omegaconf import open_dict

            with open_dict(cfg):  # the neural data module reads model.inputs, which an estimator has not
                cfg.pop("datamodule", None)
            metrics = run_baselines(cfg)
        else:  # features.normalize=speaker is applied by the data module (wav2emo/feeding/speaker_norm.py)
            from wav2emo.runs.experiment import train

            metrics = train(cfg)
    value = metrics.get(cfg.get("optimized_metric")) if cfg.get("optimized_metric") else None
    return float(value) if value is not None else None


if __name__ == "__main__":
    main()
