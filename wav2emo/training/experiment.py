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
import shutil
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
from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.training.callbacks import (
    EpochSummary,
    EpochTimer,
    LastCheckpoint,
    RelocateCheckpointState,
    RngStateCheckpoint,
)
from wav2emo.training.checkpoints import load_checkpoint
from wav2emo.training.datamodule import EmotionDataModule
from wav2emo.training.run_info import git_info, save_run_info, to_container

log = logging.getLogger(__name__)

FOLD_RESULT = "fold_result.json"
PREDICTIONS = "predictions.csv"
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


def run_fold(cfg: DictConfig, fold: int, fold_dir: Path) -> dict[str, Any]:
    """Train on one fold's training actors, choose the checkpoint on its dev actors, test on its test actors.

    ``cfg.ckpt_path`` (a checkpoint file) continues that training.  Without it, a fold directory that
    already holds ``fold_result.json`` is a finished fold: its result is returned and nothing is
    retrained; one that holds only ``checkpoints/last.ckpt`` was interrupted and is continued from it.
    """
    started = time.time()
    fold_dir = Path(fold_dir)
    ckpt_path = cfg.get("ckpt_path")
    relocate: RelocateCheckpointState | None = None
    if ckpt_path is None:
        finished = fold_dir / FOLD_RESULT
        if finished.exists():
            log.info("fold %d is finished (%s): reporting it, not retraining it", fold, finished)
            return json.loads(finished.read_text())
        last = fold_dir / "checkpoints" / "last.ckpt"
        if last.exists():
            log.info("fold %d was interrupted: continuing it from %s", fold, last)
            ckpt_path = str(last)
    else:
        ckpt_path, relocate = _prepare_resume(Path(ckpt_path), fold, fold_dir)
    fold_dir.mkdir(parents=True, exist_ok=True)
    save_run_info(cfg, fold_dir)

    dm = build_datamodule(cfg, fold)
    dm.setup("fit")
    split = dm.describe()
    log.info("fold %d: train actors %s, dev %s, test %s", fold, split["train_actors"], split["dev_actors"],
             split["test_actors"])
    has_dev = len(split["dev_actors"]) > 0
    # Seeded after the data exist: building a corpus, a tiny backbone or a feature cache draws random
    # numbers (or reseeds), so seeding before them made a fresh-cache run initialise its model
    # differently from a warm-cache run of the same seed.
    L.seed_everything(cfg.seed + fold, workers=True)
    model = build_module(cfg, dm)

    callbacks = build_callbacks(cfg, fold_dir, has_dev, fold)
    callbacks.append(StoreRunInfo(to_container(cfg), fold, split))
    if relocate is not None:
        callbacks.append(relocate)
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
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
        ckpt_cb = trainer.checkpoint_callback
        best = (ckpt_cb.best_model_path or ckpt_cb.last_model_path) if ckpt_cb is not None else ""
        result: dict[str, Any] = {
            "fold": fold,
            "model": cfg.model.name,
            "split": split,
            "best_checkpoint": best,
            "best_dev": _dev_summary(trainer, ckpt_cb),
            "epochs_trained": trainer.current_epoch,
            "resumed_from": ckpt_path,
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


def checkpoint_fold(path: Path) -> int | None:
    """The fold a wav2emo checkpoint was trained for (None for a checkpoint without wav2emo's record)."""
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={path}: no such checkpoint file")
    ckpt = load_checkpoint(path)  # a garbage or crafted file is named in one line, never unpickled
    info = ckpt.get(CKPT_KEY) if isinstance(ckpt, dict) else None
    return None if info is None else int(info["fold"])


def _fold_dir_of(ckpt: Path) -> Path | None:
    """``<run>/fold_<k>`` for a checkpoint at ``<run>/fold_<k>/checkpoints/<name>.ckpt``, else None."""
    parent = ckpt.resolve().parent
    return parent.parent if parent.name == "checkpoints" and parent.parent.name.startswith("fold_") else None


def _prepare_resume(ckpt: Path, fold: int, fold_dir: Path) -> tuple[str, RelocateCheckpointState | None]:
    """Check that ``ckpt`` continues ``fold``; when the fold continues in another directory, copy the
    old fold's checkpoints there (the old run is never written to) and return the path to resume from."""
    trained_for = checkpoint_fold(ckpt)
    if trained_for is not None and trained_for != fold:
        raise ConfigError(f"ckpt_path={ckpt} was trained for fold {trained_for}, not fold {fold}: continuing it on "
                         f"fold {fold} would train on that fold's test actors. Pass fold={trained_for}.")
    source = _fold_dir_of(ckpt)
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


def test_checkpoint(
    trainer: L.Trainer, model, dm: EmotionDataModule, ckpt_path: str | None, out_dir: Path
) -> dict[str, Any]:
    """Evaluate ``ckpt_path`` (or the model as it is) on the test actors and write the predictions."""
    metrics = trainer.test(model, datamodule=dm, ckpt_path=ckpt_path, verbose=False, weights_only=True)[0]
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
            # wandb 0.31's finish() can return before its service has written the run's last records
            # (an offline run file was seen holding only its header); teardown waits for the flush.
            wandb.teardown()


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


def plan_folds(cfg: DictConfig, folds: list[int]) -> tuple[Path, DictConfig]:
    """Where the folds run and with which ``ckpt_path``.

    * no ``ckpt_path``: this run's output directory (a re-run into the same directory skips finished
      folds and continues interrupted ones, see :func:`run_fold`);
    * ``ckpt_path=<run directory>`` (one holding ``fold_<k>`` folders): that directory, each requested fold
      skipped when finished, continued from its ``last.ckpt`` when interrupted, trained when absent;
    * ``ckpt_path=<checkpoint file>`` (one fold): an interrupted fold continues in its own directory; a
      finished one continues in this run's output directory, from a copy of its checkpoints.
    """
    out = output_dir(cfg)
    ckpt = cfg.get("ckpt_path")
    if ckpt is None:
        return out, cfg
    path = Path(str(ckpt))
    if path.is_dir():
        if path.name.startswith("fold_") and (path / "checkpoints").is_dir():
            path = path.parent
        if not any(path.glob("fold_*")):
            raise ConfigError(f"ckpt_path={ckpt}: expected a checkpoint file or a run directory holding fold_<k> "
                             f"folders, found neither")
        log.info("continuing the run in %s: finished folds are reported, interrupted ones continued", path)
        cfg = cfg.copy()
        with open_dict(cfg):
            cfg.ckpt_path = None
        return path, cfg
    if not path.is_file():
        raise MissingFileError(f"ckpt_path={ckpt}: no such checkpoint file or run directory")
    if len(folds) != 1:
        raise ConfigError(f"ckpt_path={ckpt} continues one fold's training but fold={folds}: pass fold=<k>, or pass "
                         f"the run directory as ckpt_path to continue every unfinished fold of that run")
    source = _fold_dir_of(path)
    if source is not None and source.name == f"fold_{folds[0]}" and not (source / FOLD_RESULT).exists():
        return source.parent, cfg
    return out, cfg


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run the requested folds; return the metrics of the last fold plus the aggregate when several ran."""
    quiet_duplicate_log_handlers()
    folds = folds_to_run(cfg.fold, num_folds_of(cfg))
    out, cfg = plan_folds(cfg, folds)
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
    summary = finish_run(out, folds, results)
    if summary is not None:
        metrics["cv"] = summary
    return metrics


def finish_run(out: Path, folds: list[int], results: Mapping[int, Mapping[str, Any]]) -> dict[str, Any] | None:
    """Several folds: write and print the cross-validation report, return its summary. One fold: print
    that fold's test summary (return None). Shared by the neural models and the classic baselines."""
    from wav2emo.reports.aggregate import aggregate_folds, render_markdown

    if len(folds) == 1:
        print("\n" + fold_summary(results[folds[0]], out / f"fold_{folds[0]}") + "\n", flush=True)
        return None
    report = aggregate_folds(out, expected_folds=folds)
    files = ["cv_report.{json,md}", "confusion_matrix.png", "learning_curves.png"]
    shown = ", ".join(f"{out}/{f}" for f in files if "{" in f or (out / f).exists())
    print("\n" + render_markdown(report) + f"\n\nReport files: {shown}\n", flush=True)
    return report["summary"]


def fold_summary(result: Mapping[str, Any], fold_dir: Path) -> str:
    """A few lines on one fold's outcome: what a single-fold run prints at its end."""
    lines = [f"Fold {result['fold']} ({result.get('model')}), test actors {result['split']['test_actors']}:"]
    test = result.get("test")
    if test:
        lines.append(f"  test UA {test.get('ua', float('nan')):.4f}, WA {test.get('wa', float('nan')):.4f}, "
                     f"macro F1 {test.get('f1', float('nan')):.4f} over {result.get('test_clips')} clips")
    else:
        lines.append("  not tested (test=false)")
    dev = result.get("best_dev") or {}
    if dev.get("best_score") is not None:
        lines.append(f"  checkpoint chosen on dev actors {result['split']['dev_actors']}: "
                     f"{dev.get('monitor')} {dev['best_score']:.4f} ({result.get('best_checkpoint')})")
    lines.append(f"  results: {fold_dir / FOLD_RESULT}")
    return "\n".join(lines)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate a saved checkpoint on the test actors of its fold (``python -m wav2emo.eval``).

    The checkpoint carries the config it was trained with, so the same features, layers and model
    are rebuilt.  Evaluating on another fold's test actors is refused unless asked for explicitly:
    those actors were training actors of this checkpoint.
    """
    ckpt = load_checkpoint(cfg.ckpt_path)
    if CKPT_KEY not in ckpt:
        raise ConfigError(f"{cfg.ckpt_path}: not a wav2emo checkpoint (no {CKPT_KEY!r} entry with its config)")
    quiet_duplicate_log_handlers()
    info = ckpt[CKPT_KEY]
    train_cfg = OmegaConf.create(info["config"])
    if cfg.get("fold") is None:
        fold = info["fold"]
    else:
        asked = folds_to_run(cfg.fold, num_folds_of(train_cfg))
        if len(asked) != 1:
            raise ConfigError(f"fold={cfg.fold}: evaluation takes one fold index (or null for the checkpoint's "
                             f"own fold {info['fold']})")
        fold = asked[0]
    if fold != info["fold"] and not cfg.get("allow_other_fold", False):
        raise ConfigError(
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
