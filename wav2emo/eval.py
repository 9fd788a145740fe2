"""``python -m wav2emo.eval ckpt_path=... [fold=k]``: test a saved checkpoint on its fold's test actors.

With ``data=<another corpus>``, test a checkpoint or every fold model of a run (neural or sklearn_*) on all
clips of that corpus, on the emotions both share (:mod:`wav2emo.crosscorpus.evaluate`).
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


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float:
    with user_errors("wav2emo.eval"):  # a bad file or value is the user's to fix: one line naming it
        import_plugins(cfg.get("plugins"))  # modules of the user's that register parts of their own
        if cfg.get("data") is not None:  # another corpus: cross-corpus evaluation
            from wav2emo.crosscorpus.evaluate import cross_evaluate

            return float(cross_evaluate(cfg)["summary"]["ua"]["mean"])
        from wav2emo.runs.testing import evaluate

        return float(evaluate(cfg)["test"]["ua"])


if __name__ == "__main__":
    main()
