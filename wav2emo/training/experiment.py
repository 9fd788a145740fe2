"""Training and evaluation of one speaker fold, and the loop over folds.

``train(cfg)`` is what ``python -m wav2emo.train`` runs: for each requested fold it builds the data
module and model from the config, trains with the checkpoint chosen on the dev actors, evaluates that
checkpoint on the test actors, and writes the fold's results; several folds end with the
cross-validation report.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.data.manifest import EMOTIONS
from wav2emo.training.callbacks import EpochTimer
from wav2emo.training.checkpoints import load_checkpoint
from wav2emo.training.datamodule import EmotionDataModule
from wav2emo.training.run_info import git_info, save_run_info, to_container

log = logging.getLogger(__name__)

FOLD_RESULT = "fold_result.json"
PREDICTIONS = "predictions.csv"
CKPT_KEY = "wav2emo"


def folds_to_run(fold: Any, num_folds: int) -> list[int]:
    if fold is None or (isinstance(fold, str) and fold == "all"):
        return list(range(num_folds))
    folds = [int(f) for f in (fold if isinstance(fold, (list, tuple)) or OmegaConf.is_list(fold) else [fold])]
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad:
        raise ValueError(f"fold={fold}: expected 0..{num_folds - 1}, a list of them, or 'all'")
    return folds


def num_folds_of(cfg: DictConfig) -> int:
    if "test_actors" in cfg.folds:
        return len(cfg.folds.test_actors)
    return int(cfg.folds.k)


def build_datamodule(cfg: DictConfig, fold: int) -> EmotionDataModule:
    net_cls = _net_class(cfg)
    inputs = tuple(getattr(net_cls, "inputs", ("ssl",)))
    return EmotionDataModule(
        corpus=to_container(cfg.data.corpus),
        features=to_container(cfg.features),
        folds=to_container(cfg.folds),
        fold=fold,
        inputs=inputs,
        cache_dir=cfg.paths.cache_dir,
        layers=cfg.model.get("layers"),
        frames=cfg.model.get("frames"),
        batch_size=cfg.loader.batch_size,
        eval_batch_size=cfg.loader.get("eval_batch_size"),
        num_workers=cfg.loader.num_workers,
        resident=cfg.loader.resident,
        bucket_by_length=cfg.loader.get("bucket_by_length", False),
        frames_multiple=cfg.loader.get("frames_multiple"),
        pin_memory=cfg.loader.get("pin_memory", False),
        seed=cfg.seed,
    )


def _net_class(cfg: DictConfig):
    from hydra.utils import get_class

    return get_class(cfg.model.module.net._target_)


def build_module(cfg: DictConfig, dm: EmotionDataModule) -> L.LightningModule:
    """Instantiate the LightningModule, filling the shapes that only the feature cache knows."""
    module_cfg = OmegaConf.create(to_container(cfg.model.module))
    with open_dict(module_cfg):
        net = module_cfg.net
        if "ssl" in dm.inputs:
            # ``in`` is False for a key whose value is ``???``: look at the keys themselves.
            if "in_channels" in net.keys():
                net.in_channels = dm.num_layers
            if "feature_dim" in net.keys():
                net.feature_dim = dm.feature_dim
    module = instantiate(module_cfg, _convert_="partial")
    if "egemaps" in dm.inputs:
        mean, std = dm.egemaps_stats()
        module.set_feature_stats("egemaps", torch.as_tensor(mean), torch.as_tensor(std))
    return module


class StoreRunInfo(L.Callback):
    """Puts the resolved config, the fold and the code version into every checkpoint, so a checkpoint
    alone is enough to rebuild its data module and model (``python -m wav2emo.eval``)."""

    def __init__(self, cfg: dict[str, Any], fold: int, split: dict[str, Any]) -> None:
        self.info = {"config": cfg, "fold": fold, "split": split, "git": git_info()}

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        checkpoint[CKPT_KEY] = self.info


def build_callbacks(cfg: DictConfig, fold_dir: Path, has_dev: bool) -> list[L.Callback]:
    callbacks: list[L.Callback] = []
    for name, cb_cfg in (cfg.get("callbacks") or {}).items():
        if cb_cfg is None or "_target_" not in cb_cfg:
            continue
        cb_cfg = OmegaConf.create(to_container(cb_cfg))
        if name == "model_checkpoint":
            with open_dict(cb_cfg):
                cb_cfg.dirpath = str(fold_dir / "checkpoints")
                if not has_dev:  # nothing to choose on: keep the last epoch, never look at test actors
                    cb_cfg.monitor = None
                    cb_cfg.filename = "epoch{epoch:03d}"
                    cb_cfg.save_top_k = 1
        if name == "early_stopping" and not has_dev:
            log.warning("no dev actors: early stopping is disabled")
            continue
        callbacks.append(instantiate(cb_cfg))
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


def run_fold(cfg: DictConfig, fold: int, fold_dir: Path) -> dict[str, Any]:
    """Train on one fold's training actors, choose the checkpoint on its dev actors, test on its test actors."""
    started = time.time()
    fold_dir.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed + fold, workers=True)
    save_run_info(cfg, fold_dir)

    dm = build_datamodule(cfg, fold)
    dm.setup("fit")
    split = dm.describe()
    log.info("fold %d: train actors %s, dev %s, test %s", fold, split["train_actors"], split["dev_actors"],
             split["test_actors"])
    has_dev = len(split["dev_actors"]) > 0
    model = build_module(cfg, dm)

    callbacks = build_callbacks(cfg, fold_dir, has_dev)
    callbacks.append(StoreRunInfo(to_container(cfg), fold, split))
    loggers = build_loggers(cfg, fold_dir, fold)
    for lg in loggers:
        lg.log_hyperparams({"config": to_container(cfg), "fold": fold, "split": split, "git": git_info()})
    trainer_cfg = OmegaConf.create(to_container(cfg.trainer))
    with open_dict(trainer_cfg):
        trainer_cfg.default_root_dir = str(fold_dir)
        if not has_dev:
            trainer_cfg.limit_val_batches = 0
    trainer: L.Trainer = instantiate(trainer_cfg, callbacks=callbacks, logger=loggers or False)

    try:
        trainer.fit(model, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        ckpt_cb = trainer.checkpoint_callback
        best = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb is not None else ""
        result: dict[str, Any] = {
            "fold": fold,
            "model": cfg.model.name,
            "split": split,
            "best_checkpoint": best,
            "best_dev": _dev_summary(trainer, ckpt_cb),
            "epochs_trained": trainer.current_epoch,
            "epoch_seconds": next((c.epoch_seconds for c in callbacks if isinstance(c, EpochTimer)), []),
            "train_seconds": round(time.time() - started, 2),
        }
        if cfg.get("test", True):
            result.update(test_checkpoint(trainer, model, dm, best or None, fold_dir))
        _log_to_wandb(loggers, result)
    finally:
        _close_loggers(loggers)
    result["seconds"] = round(time.time() - started, 2)
    (fold_dir / FOLD_RESULT).write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    return result


def _dev_summary(trainer: L.Trainer, ckpt_cb) -> dict[str, Any]:
    m = trainer.callback_metrics
    out = {k: float(v) for k, v in m.items() if k.startswith("val/") and torch.as_tensor(v).numel() == 1}
    if ckpt_cb is not None and ckpt_cb.monitor:
        score = ckpt_cb.best_model_score
        out["monitor"] = ckpt_cb.monitor
        out["best_score"] = float(score) if score is not None else None
    return out


def test_checkpoint(
    trainer: L.Trainer, model, dm: EmotionDataModule, ckpt_path: str | None, out_dir: Path
) -> dict[str, Any]:
    """Evaluate ``ckpt_path`` (or the model as it is) on the test actors and write the predictions."""
    metrics = trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False)[0]
    preds = pd.DataFrame(model.test_predictions)
    paths = {c.clip_id: c.path for c in dm.manifest}
    preds.insert(1, "file", [paths[c] for c in preds["clip_id"]])
    class_names = list(getattr(model, "class_names", EMOTIONS))
    preds["true"] = [class_names[i] for i in preds["label"]]
    preds["predicted"] = [class_names[i] for i in preds["pred"]]
    preds.to_csv(out_dir / PREDICTIONS, index=False)
    return {
        "test": {k.split("/", 1)[1]: float(v) for k, v in metrics.items() if k.count("/") == 1},
        "test_per_class": model.test_per_class,
        "test_confusion": np.asarray(model.test_confusion).tolist(),
        "class_names": class_names,
        "test_clips": int(len(preds)),
        "evaluated_checkpoint": ckpt_path,
    }


def _log_to_wandb(loggers: list, result: Mapping[str, Any]) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger) and "test_confusion" in result:
            import wandb

            names = result["class_names"]
            cm = np.asarray(result["test_confusion"])
            lg.experiment.log({
                "test/confusion_matrix": wandb.Table(
                    columns=["true", *names], data=[[names[i], *map(int, row)] for i, row in enumerate(cm)]
                ),
                "test/per_class": wandb.Table(dataframe=pd.DataFrame(result["test_per_class"])),
            })
            lg.experiment.summary.update({f"test/{k}": v for k, v in result["test"].items()})


def _close_loggers(loggers: list) -> None:
    from lightning.pytorch.loggers import WandbLogger

    for lg in loggers:
        lg.finalize("success")
        if isinstance(lg, WandbLogger):
            import wandb

            wandb.finish()  # one W&B run per fold: close it before the next fold starts


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return None if math.isnan(float(x)) else float(x)
    if isinstance(x, torch.Tensor):
        return _jsonable(x.tolist())
    return x


def output_dir(cfg: DictConfig) -> Path:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return Path(cfg.paths.output_dir)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the requested folds; return the metrics of the last fold plus the aggregate when several ran."""
    from wav2emo.reports.aggregate import aggregate_folds, render_markdown

    folds = folds_to_run(cfg.fold, num_folds_of(cfg))
    if cfg.get("ckpt_path") and len(folds) != 1:
        raise ValueError("ckpt_path resumes one fold's training: also pass fold=<k>")
    out = output_dir(cfg)
    results = {}
    for fold in folds:
        results[fold] = run_fold(cfg, fold, out / f"fold_{fold}")
    metrics: dict[str, Any] = {}
    last = results[folds[-1]]
    metrics.update({f"test/{k}": v for k, v in last.get("test", {}).items()})
    dev_keys = set.intersection(*(set(r.get("best_dev", {})) for r in results.values()))
    for k in dev_keys:  # dev metrics averaged over folds: what a hyper-parameter search may optimise
        values = [r["best_dev"][k] for r in results.values()]
        if all(isinstance(v, (int, float)) for v in values):
            metrics[k] = float(np.mean(values))
    if len(folds) > 1:
        report = aggregate_folds(out, expected_folds=folds)
        metrics["cv"] = report["summary"]
        print("\n" + render_markdown(report) + f"\n\nReport files: {out}/cv_report.{{json,md}}, "
              f"{out}/confusion_matrix.png, {out}/learning_curves.png\n", flush=True)
    return metrics


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a saved checkpoint on the test actors of its fold (``python -m wav2emo.eval``).

    The checkpoint carries the config it was trained with, so the same features, layers and model
    are rebuilt.  Evaluating on another fold's test actors is refused unless asked for explicitly:
    those actors were training actors of this checkpoint.
    """
    ckpt = load_checkpoint(cfg.ckpt_path)
    if CKPT_KEY not in ckpt:
        raise ValueError(f"{cfg.ckpt_path}: not a wav2emo checkpoint (no {CKPT_KEY!r} entry with its config)")
    info = ckpt[CKPT_KEY]
    train_cfg = OmegaConf.create(info["config"])
    fold = info["fold"] if cfg.get("fold") is None else int(cfg.fold)
    if fold != info["fold"] and not cfg.get("allow_other_fold", False):
        raise ValueError(
            f"{cfg.ckpt_path} was trained for fold {info['fold']}; its training actors include the test actors "
            f"of fold {fold}. Pass allow_other_fold=true only if you know why."
        )
    with open_dict(train_cfg):
        train_cfg.paths.cache_dir = cfg.paths.cache_dir
        train_cfg.loader.num_workers = cfg.get("num_workers", 0)
        train_cfg.loader.resident = False
    dm = build_datamodule(train_cfg, fold)
    dm.setup("test")
    model = build_module(train_cfg, dm)
    model.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.get("accelerator", "auto"), devices=1, logger=False, enable_progress_bar=False,
        precision=cfg.get("precision", "32-true"),
    )
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    result = {"fold": fold, "model": train_cfg.model.name, "checkpoint": str(cfg.ckpt_path), "split": dm.describe()}
    result.update(test_checkpoint(trainer, model, dm, None, out))
    (out / "eval_result.json").write_text(json.dumps(_jsonable(result), indent=2) + "\n")
    log.info("fold %d test: %s", fold, {k: round(v, 4) for k, v in result["test"].items()})
    return result
