"""Building one fold's pieces from the config: data module, LightningModule, callbacks and loggers."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.errors import ConfigError
from wav2emo.training.callbacks import EpochSummary, LastCheckpoint, RngStateCheckpoint
from wav2emo.training.datamodule import EmotionDataModule
from wav2emo.training.run_info import git_info, to_container
from wav2emo.training.runs import CKPT_KEY

log = logging.getLogger(__name__)


def build_datamodule(cfg: DictConfig, fold: int) -> EmotionDataModule:
    """``hydra.utils.instantiate(cfg.datamodule)`` for ``fold`` (conf/datamodule/default.yaml)."""
    if cfg.get("datamodule") is None or cfg.model.get("inputs") is None:
        raise ConfigError(
            "the config has no `datamodule` group or no `model.inputs`: it predates the data module built by "
            "hydra (conf/datamodule/default.yaml); a checkpoint of that layout cannot be rebuilt by this "
            "version - retrain it, or evaluate it with the wav2emo version that trained it"
        )
    dm_cfg = OmegaConf.create(to_container(cfg.datamodule))  # resolved against the whole config
    with open_dict(dm_cfg):
        dm_cfg.fold = int(fold)
    return instantiate(dm_cfg, _convert_="all")


def build_featurizer(cfg: DictConfig, dm: EmotionDataModule) -> torch.nn.Module | None:
    """The model's featurizer (``model.featurizer``), sized by the SSL cache's hidden-state count."""
    feat_cfg = cfg.model.get("featurizer")
    if feat_cfg is None:
        return None
    if "ssl" not in dm.inputs:
        raise ConfigError(f"model.featurizer is set but the model's inputs {list(dm.inputs)} have no 'ssl'")
    feat_cfg = OmegaConf.create(to_container(feat_cfg))
    with open_dict(feat_cfg):
        feat_cfg.num_hidden_states = dm.input_shape("ssl")[0]
    return instantiate(feat_cfg, _convert_="all")


def build_module(cfg: DictConfig, dm: EmotionDataModule) -> L.LightningModule:
    """Instantiate the LightningModule, filling what only the data know: the featurizer's layer count
    (the net's ``in_channels``), the cache's feature width (``feature_dim``), the class names, and the
    eGeMAPS statistics of the training actors."""
    featurizer = build_featurizer(cfg, dm)
    module_cfg = OmegaConf.create(to_container(cfg.model.module))
    names = list(dm.class_names)
    with open_dict(module_cfg):
        net = module_cfg.net
        frame_key = net.get("input_key") or next((k for k in ("ssl", "logmel") if k in dm.inputs), None)
        # ``in`` is False for a key whose value is ``???``: look at the keys themselves.
        if frame_key == "ssl":
            if featurizer is None:
                raise ConfigError("the net reads 'ssl' but model.featurizer is null: the featurizer picks its layers")
            if "in_channels" in net.keys():
                net.in_channels = featurizer.num_layers
            if "feature_dim" in net.keys():
                net.feature_dim = dm.input_shape("ssl")[1]
        elif frame_key == "logmel" and "feature_dim" in net.keys():
            net.feature_dim = dm.input_shape("logmel")[0]
        if "num_classes" in net.keys():
            net.num_classes = len(names)
        module_cfg.num_classes = len(names)
        module_cfg.class_names = names
        module_cfg.seed = int(cfg.seed)
    module = instantiate(module_cfg, _convert_="partial", featurizer=featurizer)
    if "egemaps" in module.standardized_inputs:
        mean, std = dm.egemaps_stats()
        module.set_feature_stats("egemaps", torch.as_tensor(mean), torch.as_tensor(std))
    if getattr(module, "class_weights_mode", None) == "balanced":  # from the training actors' labels only
        module.set_class_weights(dm.class_counts("train"))
    return module


class StoreRunInfo(L.Callback):
    """Puts the resolved config, the fold and the code version into every checkpoint, so a checkpoint
    alone is enough to rebuild its data module and model (``python -m wav2emo.eval``)."""

    def __init__(self, cfg: dict[str, Any], fold: int, split: dict[str, Any]) -> None:
        self.info = {"config": cfg, "fold": fold, "split": split, "git": git_info()}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CKPT_KEY] = self.info


def build_callbacks(cfg: DictConfig, fold_dir: Path, has_dev: bool, fold: int | None = None) -> list[L.Callback]:
    """The configured callbacks, plus what every fold needs: ``last.ckpt`` after every epoch, RNG states in
    checkpoints (an exact resume), and one summary line per epoch when the progress bar is off."""
    callbacks: list[L.Callback] = []
    save_last = False
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        cb_cfg = OmegaConf.create(to_container(cb_cfg))
        if name == "model_checkpoint":
            with open_dict(cb_cfg):
                cb_cfg.dirpath = str(fold_dir / "checkpoints")
                # Lightning's save_last refreshes last.ckpt only when the dev metric improves: LastCheckpoint
                # below writes it after every epoch instead.
                save_last = bool(cb_cfg.get("save_last"))
                cb_cfg.save_last = False
                if not has_dev:  # nothing to choose on: keep the last epoch, never look at test actors
                    cb_cfg.monitor = None
                    cb_cfg.filename = "epoch{epoch:03d}"
                    cb_cfg.save_top_k = 1
        if name == "early_stopping" and not has_dev:
            log.warning("no dev actors: early stopping is disabled")
            continue
        callbacks.append(instantiate(cb_cfg))
    if save_last:
        callbacks.append(LastCheckpoint(fold_dir / "checkpoints"))
    callbacks.append(RngStateCheckpoint())
    if not cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(EpochSummary(prefix="" if fold is None else f"fold {fold}: "))
    return callbacks


def build_loggers(cfg: DictConfig, fold_dir: Path, fold: int) -> list:
    loggers = []
    for name, lg_cfg in (cfg.get("logger") or {}).items():
        if lg_cfg is None or "_target_" not in lg_cfg:
            continue
        lg_cfg = OmegaConf.create(to_container(lg_cfg))
        with open_dict(lg_cfg):
            lg_cfg.save_dir = str(fold_dir)
            if name == "wandb":
                _prepare_wandb(lg_cfg, cfg, fold)
        loggers.append(instantiate(lg_cfg))
    return loggers


def _prepare_wandb(lg_cfg: DictConfig, cfg: DictConfig, fold: int) -> None:
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE"):
        try:
            import wandb

            logged_in = bool(wandb.api.api_key)
        except Exception:
            logged_in = False
        if not logged_in:
            log.warning("W&B: no API key found, logging offline (sync later with `wandb sync`)")
            lg_cfg.offline = True
    if lg_cfg.get("group") is None:
        lg_cfg.group = f"{cfg.model.name}-{_sweep_name()}"
    if lg_cfg.get("name") is None:
        lg_cfg.name = f"{cfg.model.name}-fold{fold}"
    lg_cfg.config = None  # logged below through log_hyperparams


def _sweep_name() -> str:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return Path(hc.sweep.dir if hc.mode == RunMode.MULTIRUN else hc.runtime.output_dir).name
    except Exception:
        return time.strftime("%Y-%m-%d_%H-%M-%S")
