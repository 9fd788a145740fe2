"""What every run shares: the fold count of a config, the output folder, the checkpoint key, log handlers and warnings."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CKPT_KEY = "wav2emo"


def num_folds_of(cfg: DictConfig) -> int:
    """How many folds ``cfg.folds`` gives for ``cfg.data``: from the configs where they say it (explicit test
    actors, ``k``, the documented speakers of a recipe's corpus), else from the corpus's manifest (loso over a
    corpus of your own, EmoBox's fold files, several corpora combined), prepared and cached once."""
    from wav2emo.data.corpora import num_folds

    folds = OmegaConf.to_container(cfg.folds, resolve=True)
    data = OmegaConf.to_container(cfg.data, resolve=True) if cfg.get("data") is not None else {}
    return num_folds(folds, data, cache_dir=cfg.paths.cache_dir)


def output_dir(cfg: Mapping[str, Any]) -> Path:
    """This run's output folder: Hydra's, else ``paths.output_dir`` of ``cfg`` (a config or its plain values)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path(cfg["paths"]["output_dir"])


def quiet_duplicate_log_handlers() -> None:
    """Print every log line once.

    ``import lightning`` gives the ``lightning`` logger a console handler of its own, and its records
    also propagate to the root logger that Hydra's job logging configures (console and file): every
    Lightning line appeared twice on the console.  When the root logger has handlers, they alone print.
    """
    root = logging.getLogger()
    if not root.handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        lg = logging.getLogger(name)
        for h in list(lg.handlers):
            if type(h) is logging.StreamHandler:
                lg.removeHandler(h)
        lg.propagate = True


# Lightning warns whenever a LightningModule overrides on_after_batch_transfer and a LightningDataModule is
# passed, in case the datamodule's hook was meant; here the module's hook (the train-only transform) is the
# intended one and the datamodule defines none, so the warning is noise on every run.
BATCH_TRANSFER_WARNING = r"You have overridden `on_after_batch_transfer` in `LightningModule` but have passed in a"


def quiet_batch_transfer_warning() -> None:
    """Ignore exactly Lightning's on_after_batch_transfer warning (call inside ``warnings.catch_warnings()``)."""
    warnings.filterwarnings("ignore", message=BATCH_TRANSFER_WARNING)
