"""One fold's run: train on its training actors, choose the checkpoint on its dev actors, test it, and
continue an interrupted fold (``run_fold``)."""

from __future__ import annotations

import copy
import logging
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.augment.config import augmenter_from
from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.feeding.placement import collect_earlier_folds
from wav2emo.reports.fold_results import FOLD_RESULT, read_fold_result, write_fold_result
from wav2emo.reports.loggers import close_loggers, log_test_to_wandb
from wav2emo.runs.build import (
    build_callbacks,
    build_datamodule,
    build_loggers,
    build_module,
)
from wav2emo.runs.common import CKPT_KEY, quiet_batch_transfer_warning
from wav2emo.runs.plan import FoldPlan, fold_dir_of, fold_plan
from wav2emo.runs.run_info import git_info, save_run_info
from wav2emo.training.callbacks import EpochTimer, RelocateCheckpointState
from wav2emo.training.checkpoints import load_checkpoint
from wav2emo.training.distributed import (
    check_same_everywhere,
    cluster_plugins,
    ddp_strategy_for,
    is_rank_zero,
)
from wav2emo.training.fast_path import configure_trainer, speed_summary
from wav2emo.training.test_pass import test_checkpoint

log = logging.getLogger(__name__)


def run_fold(plan: FoldPlan | DictConfig, fold: int, fold_dir: Path) -> dict[str, Any]:
    """Train on one fold's training actors, choose the checkpoint on its dev actors, test on its test actors.

    ``plan``: the run's :class:`~wav2emo.runs.plan.FoldPlan` (a config is resolved into it first).
    ``plan.ckpt_path`` (a checkpoint file) continues that training.  Without it, a fold directory that
    already holds ``fold_result.json`` is a finished fold: its result is returned and nothing is
    retrained; one that holds only ``checkpoints/last.ckpt`` was interrupted and is continued from it.

    Several processes (``trainer=ddp``): every process runs this in step with the others and reaches the same
    decisions from the same files (the others start inside rank zero's first fit, before it writes anything
    of this fold); rank zero alone writes the fold's files.
    """
    started = time.time()
    plan = fold_plan(plan)
    if not plan.trains:
        raise ValueError("run_fold trains a fold: it needs a plan made for training (fold_plan(cfg)), not one made "
                         "with for_training=False (its augment config was not checked)")
    fold_dir = Path(fold_dir)
    ckpt_path = plan.ckpt_path
    relocate: RelocateCheckpointState | None = None
    if ckpt_path is not None:
        ckpt_path, relocate = _prepare_resume(Path(ckpt_path), fold, fold_dir)
    else:
        finished = fold_dir / FOLD_RESULT
        if finished.exists():
            log.info("fold %d is finished (%s): reporting it, not retraining it", fold, finished)
            return read_fold_result(finished)
        last = fold_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            log.info("fold %d was interrupted: continuing it from %s", fold, last)
            ckpt_path = str(last)
    fold_dir.mkdir(parents=True, exist_ok=True)
    if is_rank_zero():
        save_run_info(plan.config, fold_dir)

    collect_earlier_folds()  # an earlier fold's GPU memory freed before this fold decides where its data go
    augmenter = augmenter_from(plan.augment_spec)  # once a fold: the data module's copies, the module's transforms
    dm = build_datamodule(plan, fold, augmenter=augmenter)
    dm.setup("fit")
    split = dm.describe()
    log.info("fold %d: train actors %s, dev %s, test %s", fold, split["train_actors"], split["dev_actors"],
             split["test_actors"])
    has_dev = len(split["dev_actors"]) > 0
    # Seeded after the data exist: building a corpus, a tiny backbone or a feature cache draws random
    # numbers (or reseeds), so seeding before them made a fresh-cache run initialise its model
    # differently from a warm-cache run of the same seed.
    L.seed_everything(plan.seed + fold, workers=True)
    model = build_module(plan, dm, augmenter=augmenter)
    if getattr(model, "featurizer", None) is not None:  # the hidden states the net reads, as before the move
        split["layers"] = list(model.featurizer.layers)

    loggers = build_loggers(plan, fold_dir, fold)
    callbacks = without_logger_callbacks(build_callbacks(plan, fold_dir, fold, split), loggers)
    if relocate is not None:
        callbacks.append(relocate)
    for lg in loggers:
        lg.log_hyperparams({"config": copy.deepcopy(plan.config), "fold": fold, "split": split, "git": git_info()})
    trainer_cfg = OmegaConf.create(plan.trainer)
    with open_dict(trainer_cfg):
        trainer_cfg.default_root_dir = str(fold_dir)
        if not has_dev:
            trainer_cfg.limit_val_batches = 0
        strategy = ddp_strategy_for(trainer_cfg, getattr(getattr(model, "optim_settings", None), "head_only_epochs", 0))
        if strategy is not None:
            trainer_cfg.strategy = strategy
    # precision and cuda_graphs: auto -> this machine
    step_mode = configure_trainer(model, trainer_cfg, plan.cuda_graphs, plan.cuda_graphs_max)
    trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False,
                                     **cluster_plugins(trainer_cfg))

    try:
        with warnings.catch_warnings():
            quiet_batch_transfer_warning()
            trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        ckpt_cb = trainer.checkpoint_callback
        best = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb is not None else ""
        check_same_everywhere(best, "the dev-chosen checkpoint")  # DDP: all test the one rank zero reports
        result: dict[str, Any] = {
            "fold": fold,
            "model": plan.model_name,
            "protocol": plan.protocol(),  # finetune and augment settings (reports/aggregate.py reads them)
            "split": split,
            "best_checkpoint": best,
            "best_dev": _dev_summary(trainer, ckpt_cb),
            "epochs_trained": trainer.current_epoch,
            "resumed_from": ckpt_path,
            "epoch_seconds": next((c.epoch_seconds for c in callbacks if isinstance(c, EpochTimer)), []),
            "train_seconds": round(time.time() - started, 2),
            "speed": speed_summary(step_mode, dm, model),
        }
        if plan.test:
            with warnings.catch_warnings():
                quiet_batch_transfer_warning()
                result.update(test_checkpoint(trainer, model, dm, best or None, fold_dir, plan.bootstrap))
        if is_rank_zero():
            log_test_to_wandb(loggers, result)
    finally:
        close_loggers(loggers, finish_wandb=is_rank_zero())
    result["seconds"] = round(time.time() - started, 2)
    if is_rank_zero():
        write_fold_result(fold_dir, result)
    return result


def without_logger_callbacks(callbacks: list[L.Callback], loggers: list) -> list[L.Callback]:
    """``callbacks`` less any ``LearningRateMonitor`` when there is no logger (``logger=none``): Lightning
    refuses to start a Trainer that has one and no logger, and with no logger it has nowhere to write."""
    if loggers:
        return callbacks
    from lightning.pytorch.callbacks import LearningRateMonitor

    dropped = [c for c in callbacks if isinstance(c, LearningRateMonitor)]
    if dropped:
        log.info("logger=none: the learning-rate monitor is left out (it logs through a logger)")
    return [c for c in callbacks if not isinstance(c, LearningRateMonitor)]


def checkpoint_fold(path: Path) -> int | None:
    """The fold a wav2emo checkpoint was trained for (None for a checkpoint without wav2emo's record)."""
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path}: no such checkpoint file")
    ckpt = load_checkpoint(path)  # a garbage or crafted file is named in one line, never unpickled
    info = ckpt.get(CKPT_KEY) if isinstance(ckpt, dict) else None
    return None if info is None else int(info["fold"])


def _prepare_resume(ckpt: Path, fold: int, fold_dir: Path) -> tuple[str, RelocateCheckpointState | None]:
    """Check that ``ckpt`` continues ``fold``; when the fold continues in another directory, copy the
    old fold's checkpoints there (the old run is never written to) and return the path to resume from."""
    source = fold_dir_of(ckpt)
    trained_for = checkpoint_fold(ckpt)
    if trained_for is not None and trained_for != fold:
        raise ConfigError(f"ckpt_path={ckpt} was trained for fold {trained_for}, not fold {fold}: continuing it on "
                         f"fold {fold} would train on that fold's test actors. Pass fold={trained_for}.")
    if source is not None and source != fold_dir.resolve() and not is_rank_zero():
        # DDP: rank zero copied the checkpoints before the other processes started (in its first fit)
        return str(fold_dir / "checkpoints" / ckpt.name), RelocateCheckpointState(fold_dir / "checkpoints")
    if source is not None and source == fold_dir.resolve():
        if (fold_dir / FOLD_RESULT).exists():
            raise ConfigError(f"{fold_dir} holds a finished fold ({FOLD_RESULT}); continuing it in place would "
                             f"overwrite its results: continue it in a new run directory")
        return str(ckpt), None
    if source is None:
        log.warning("ckpt_path=%s is not in a <fold>/checkpoints folder: the dev-chosen checkpoint will be chosen "
                    "among the new epochs only", ckpt)
        return str(ckpt), None
    target = fold_dir / "checkpoints"
    if target.exists() and any(target.iterdir()):
        raise ConfigError(f"{target} already holds checkpoints: continue {ckpt} into an empty run directory")
    target.mkdir(parents=True, exist_ok=True)
    for f in sorted((source / "checkpoints").glob("*.ckpt")):
        shutil.copy2(f, target / f.name)
    log.info("fold %d continues %s in %s (its checkpoints copied there; the old run is left as it is)",
             fold, ckpt, fold_dir)
    return str(target / ckpt.name), RelocateCheckpointState(target)


def _dev_summary(trainer: L.Trainer, ckpt_cb) -> dict[str, Any]:
    m = trainer.callback_metrics
    out = {k: float(v) for k, v in m.items() if k.startswith("val/") and torch.as_tensor(v).numel() == 1}
    if ckpt_cb is not None and ckpt_cb.monitor:
        score = ckpt_cb.best_model_score
        out["monitor"] = ckpt_cb.monitor
        out["best_score"] = float(score) if score is not None else None
    return out
