"""What every run shares: the fold selection, the output folder, file names, JSON-safe values, log handlers."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from wav2emo.errors import ConfigError

CKPT_KEY = "wav2emo"


def folds_to_run(fold: Any, num_folds: int) -> list[int]:
    """The fold indices a ``fold=`` value asks for: an index, a list of distinct indices, or ``all``.

    Anything else is refused with a message naming the value: a typo must not train another fold,
    and a fold listed twice would train twice into the same fold directory (the second run would
    overwrite the first's checkpoints and count twice in the report), so duplicates are refused rather
    than silently dropped.
    """
    expected = f"expected a fold index 0..{num_folds - 1}, a list of distinct indices (fold=[0,2]) or 'all'"
    if fold is None or (isinstance(fold, str) and fold.strip() == "all"):
        return list(range(num_folds))
    is_list = isinstance(fold, (list, tuple)) or OmegaConf.is_list(fold)
    shown = list(fold) if is_list else fold
    folds = [_fold_index(item, shown, expected) for item in (fold if is_list else [fold])]
    if not folds:
        raise ConfigError(f"fold={shown}: the list is empty; {expected}")
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad:
        raise ConfigError(f"fold={shown}: fold {bad[0]} does not exist ({num_folds} folds); {expected}")
    dupes = sorted({f for f in folds if folds.count(f) > 1})
    if dupes:
        raise ConfigError(f"fold={shown}: fold {dupes[0]} is listed more than once (it would train twice into "
                         f"the same fold directory); {expected}")
    return folds


def _fold_index(item: Any, shown: Any, expected: str) -> int:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ConfigError(f"fold={shown!r}: {item!r} is not a fold index; {expected}")
    if isinstance(item, str):
        text = item.strip()
        if not text.lstrip("-").isdigit():
            raise ConfigError(f"fold={shown!r}: {item!r} is not a fold index; {expected}")
        return int(text)
    return int(item)


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
