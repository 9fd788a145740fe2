"""``python -m wav2emo.train``: train and evaluate on speaker folds (see conf/train.yaml).

``model=sklearn_svm`` (sklearn_logreg, sklearn_random_forest, sklearn_hist_gb) runs the scikit-learn baselines
of :mod:`wav2emo.baselines.runner` instead, on the same folds and ending in the same reports.
"""

from __future__ import annotations

from wav2emo.startup_trace import mark, trace_startup

trace_startup()  # WAV2EMO_STARTUP_TRACE=1: where start-up goes, phase by phase (off by default)

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from wav2emo.cli import user_errors  # noqa: E402
from wav2emo.compat import require_compatible  # noqa: E402
from wav2emo.registry import import_plugins  # noqa: E402
from wav2emo.startup import leave_out_unused_backends  # noqa: E402

require_compatible()  # a misfit torch/torchaudio pair is one clear line, not a traceback from deep inside
leave_out_unused_backends()  # torchmetrics without transformers/torchvision (wav2emo/startup.py)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    mark("Hydra composed the config: the task starts")
    from wav2emo.baselines.model_kind import is_baseline_model  # no scikit-learn or pandas import

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
