"""Building one fold's pieces from its plan (:mod:`wav2emo.runs.plan`): data module, LightningModule, callbacks and
loggers."""

from __future__ import annotations

import copy
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.augment.compose import Augmenter
from wav2emo.augment.training import training_transforms
from wav2emo.errors import ConfigError
from wav2emo.feeding.datamodule import EmotionDataModule
from wav2emo.feeding.feed import build_upstream_for
from wav2emo.models.featurizer import featurizer_for
from wav2emo.models.upstream import last_ssl_stage
from wav2emo.runs.common import CKPT_KEY
from wav2emo.runs.plan import FoldPlan, fold_plan
from wav2emo.runs.run_info import git_info
from wav2emo.training.callbacks import EpochSummary, LastCheckpoint, RngStateCheckpoint, StartupTimer

log = logging.getLogger(__name__)


def build_datamodule(plan: FoldPlan | DictConfig, fold: int, augmenter: Augmenter | None = None
                     ) -> EmotionDataModule:
    """The data module of ``fold``: ``hydra.utils.instantiate`` of the plan's ``datamodule``
    (conf/datamodule/default.yaml, serving the feed's inputs).

    ``augmenter`` (``augmenter_from(plan.augment_spec)``): a fold's run builds it once and hands the same object to the
    data module and to :func:`build_module`; left out, the data module builds its own. A config is resolved
    into its plan first (:func:`~wav2emo.runs.plan.fold_plan`).
    """
    plan = fold_plan(plan)
    dm_cfg = OmegaConf.create(plan.datamodule)
    with open_dict(dm_cfg):
        dm_cfg.fold = int(fold)
    try:
        return instantiate(dm_cfg, _convert_="all", **({} if augmenter is None else {"augment": augmenter}))
    except InstantiationException as e:  # hydra wraps the data module's own checks: show the person those
        if isinstance(e.__cause__, (ConfigError, ValueError)):
            raise e.__cause__ from None
        raise


_BUILD = object()


def build_module(plan: FoldPlan | DictConfig, dm: EmotionDataModule, upstream: Any = _BUILD,
                 augmenter: Augmenter | None = None) -> L.LightningModule:
    """Instantiate the LightningModule of the plan's ``model.module``, filling what only the data know: the
    featurizer's layer count (the net's ``in_channels``), the feature width (``feature_dim``), the class names,
    and, for a plan made for training, the training actors' eGeMAPS statistics and class counts.

    ``upstream``: by default built from the plan's feed; ``wav2emo.eval`` passes the one it rebuilt from a
    checkpoint. ``augmenter``: the one the data module was given (by default the data module's). A config is
    resolved into its plan first (:func:`~wav2emo.runs.plan.fold_plan`). A checkpoint's plan
    (``fold_plan(cfg, for_training=False)``) leaves the statistics unset: the checkpoint's state dict brings the
    ones it was trained with (an unset one refuses to run rather than standardise with placeholders).
    """
    plan = fold_plan(plan)
    # What the data know, read before the model's parts are built.
    cached = {key: tuple(int(n) for n in dm.input_shape(key)) for key in ("ssl", "logmel") if key in dm.inputs}
    ssl_meta = dm.caches["ssl"].meta if "ssl" in cached and "ssl" in getattr(dm, "caches", {}) else None
    names = list(dm.class_names)
    model_inputs = tuple(plan.model.get("inputs") or dm.inputs)
    statistics = TrainingStatistics.of(dm, model_inputs) if plan.trains else None
    if upstream is _BUILD:
        upstream = build_upstream_for(plan.feed)
    ssl_up = last_ssl_stage(upstream)
    if ssl_up is not None and ssl_up.mode == "top_k" and ssl_meta is not None:
        ssl_up.check_cache(ssl_meta)  # top_k continues the cache's hidden states: same backbone
    # the featurizer's layer count and the net's width: from the SSL cache, else from the upstream's last SSL stage
    ssl_shape = cached.get("ssl") or (None if ssl_up is None else ssl_up.hidden_states_shape)
    featurizer = featurizer_for(plan.model, ssl_shape, ssl_meta)
    module_cfg = OmegaConf.create(plan.model["module"])
    with open_dict(module_cfg):
        net = module_cfg.net
        frame_key = net.get("input_key") or next((k for k in ("ssl", "logmel") if k in model_inputs), None)
        # ``in`` is False for a key whose value is ``???``: look at the keys themselves.
        if frame_key == "ssl":
            if featurizer is None:
                raise ConfigError("the net reads 'ssl' but model.featurizer is null: the featurizer picks its layers")
            if "in_channels" in net.keys():
                net.in_channels = featurizer.num_layers
            if "feature_dim" in net.keys():
                net.feature_dim = ssl_shape[1]
        elif frame_key == "logmel" and "feature_dim" in net.keys():
            # from the cache, or from the LogMelUpstream that computes it from (augmented) audio
            net.feature_dim = cached["logmel"][0] if "logmel" in cached else int(upstream.n_mels)
        if plan.optim is not None:
            module_cfg.optim = plan.optim
        if "num_classes" in net.keys():
            net.num_classes = len(names)
        module_cfg.num_classes = len(names)
        module_cfg.class_names = names
        module_cfg.seed = plan.seed
    module = instantiate(module_cfg, _convert_="partial", featurizer=featurizer, upstream=upstream)
    if statistics is not None:
        statistics.set_on(module)
    # Augmentation (conf/augment, checked when the data module was built): training batches only.
    if augmenter is None:
        augmenter = getattr(dm, "augmenter", None)
    train_tf, feature_tf = training_transforms(augmenter, has_upstream=module.upstream is not None)
    module.train_transform = train_tf or module.train_transform
    module.feature_transform = feature_tf or module.feature_transform
    return module


@dataclass(frozen=True)
class TrainingStatistics:
    """What a module learns from the training actors alone (never dev or test actors): the per-class clip counts
    (balanced class weights) and the mean and std of each input it standardises."""

    class_counts: np.ndarray
    standardization: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def of(cls, dm: EmotionDataModule, model_inputs: tuple[str, ...]) -> TrainingStatistics:
        """From ``dm``'s training split: eGeMAPS statistics when the model reads eGeMAPS (``model_inputs``)."""
        wanted = "egemaps" in model_inputs and "egemaps" in dm.inputs
        return cls(dm.class_counts("train"), {"egemaps": dm.egemaps_stats()} if wanted else {})

    def set_on(self, module: L.LightningModule) -> None:
        for name in module.standardized_inputs:
            if name not in self.standardization:
                raise ConfigError(f"the model standardises input {name!r}, but it has no training statistics: they are "
                                  f"taken for eGeMAPS when model.inputs holds 'egemaps'")
            mean, std = self.standardization[name]
            module.set_feature_stats(name, torch.as_tensor(mean), torch.as_tensor(std))
        if getattr(module, "class_weights_mode", None) == "balanced":  # from the training actors' labels only
            module.set_class_weights(self.class_counts)


class StoreRunInfo(L.Callback):
    """Puts the resolved config, the fold and the code version into every checkpoint, so a checkpoint
    alone is enough to rebuild its data module and model (``python -m wav2emo.eval``)."""

    def __init__(self, cfg: dict[str, Any], fold: int, split: dict[str, Any]) -> None:
        self.info = {"config": cfg, "fold": fold, "split": split, "git": git_info()}

    def on_train_start(self, trainer, pl_module) -> None:
        # `auto` loader settings are resolved on this machine when the loaders are built: checkpoints carry the
        # padding that training and its test used, so eval and predict elsewhere pad batches the same way.
        dm = getattr(trainer, "datamodule", None)
        dm_cfg = self.info["config"].get("datamodule")
        if dm is not None and isinstance(dm_cfg, dict) and getattr(dm, "frames_multiple_setting", None) == "auto":
            dm_cfg["frames_multiple"] = dm.frames_multiple

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CKPT_KEY] = self.info


def build_callbacks(plan: FoldPlan, fold_dir: Path, fold: int, split: dict[str, Any]) -> list[L.Callback]:
    """What every fold needs: the run's record in every checkpoint (:class:`StoreRunInfo`: the config, ``fold`` and
    its ``split``), the configured callbacks, ``last.ckpt`` (every n epochs and the last), RNG states in
    checkpoints (an exact resume), and one summary line per epoch when the progress bar is off. Without dev actors
    in ``split`` nothing chooses a checkpoint and early stopping is off."""
    callbacks: list[L.Callback] = [StoreRunInfo(copy.deepcopy(plan.config), fold, split)]
    has_dev = len(split["dev_actors"]) > 0
    save_last = False
    for name, cb_cfg in plan.callbacks.items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        cb_cfg = OmegaConf.create(cb_cfg)
        if name == "model_checkpoint":
            with open_dict(cb_cfg):
                cb_cfg.dirpath = str(fold_dir / "checkpoints")
                # Lightning's save_last refreshes last.ckpt only when the dev metric improves: LastCheckpoint
                # below writes it after every epoch instead.
                save_last = bool(cb_cfg.get("save_last"))
                cb_cfg.save_last = False
                last_every = int(cb_cfg.pop("last_every_n_epochs", 1))
                if not has_dev:  # nothing to choose on: keep the last epoch, never look at test actors
                    cb_cfg.monitor = None
                    cb_cfg.filename = "epoch{epoch:03d}"
                    cb_cfg.save_top_k = 1
        if name == "early_stopping" and not has_dev:
            log.warning("no dev actors: early stopping is disabled")
            continue
        callbacks.append(instantiate(cb_cfg))
    if save_last:
        callbacks.append(LastCheckpoint(fold_dir / "checkpoints", every_n_epochs=last_every))
    callbacks.append(RngStateCheckpoint())
    callbacks.append(StartupTimer())
    if not plan.trainer.get("enable_progress_bar", True):
        callbacks.append(EpochSummary(prefix=f"fold {fold}: "))
    return callbacks


def build_loggers(plan: FoldPlan, fold_dir: Path, fold: int) -> list:
    """The configured loggers (``logger=``), writing into ``fold_dir``."""
    loggers = []
    for name, lg_cfg in plan.loggers.items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        lg_cfg = OmegaConf.create(lg_cfg)
        with open_dict(lg_cfg):
            lg_cfg.save_dir = str(fold_dir)
            if name == "wandb":
                _prepare_wandb(lg_cfg, plan, fold)
        loggers.append(instantiate(lg_cfg))
    return loggers


def _prepare_wandb(lg_cfg: DictConfig, plan: FoldPlan, fold: int) -> None:
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        try:
            import wandb

            logged_in = bool(wandb.api.api_key)
        except Exception:
            logged_in = False
        if not logged_in:
            log.warning("W&B: no API key found, logging offline (sync later with `wandb sync`)")
            lg_cfg.offline = True
    tags = plan.tags()  # finetune and augment settings: filter and group runs by them in W&B
    lg_cfg.tags = [*(lg_cfg.get("tags") or []), *tags]
    if lg_cfg.get("group") is None:
        lg_cfg.group = "-".join([plan.model_name, *(t.replace("=", "_") for t in tags), _sweep_name()])
    if lg_cfg.get("name") is None:
        lg_cfg.name = f"{plan.model_name}-fold{fold}"
    lg_cfg.config = None  # logged below through log_hyperparams


def _sweep_name() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.runtime.output_dir).name
    except Exception:
        return time.strftime("%Y-%m-%d_%H-%M-%S")
