"""Testing a saved checkpoint alone on a fold's test actors (``evaluate``, what ``python -m wav2emo.eval`` runs):
its data module and model rebuilt from the config it carries, then the fold's test pass
(:func:`wav2emo.training.test_pass.test_checkpoint`, the one a training run ends with)."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.data.folds import folds_to_run
from wav2emo.errors import ConfigError
from wav2emo.feeding.feed import build_upstream_for
from wav2emo.reports.fold_results import write_fold_result
from wav2emo.reports.formatting import fmt_interval, interval_lines
from wav2emo.reports.intervals import BootstrapSettings
from wav2emo.runs.common import (
    CKPT_KEY,
    num_folds_of,
    output_dir,
    quiet_batch_transfer_warning,
    quiet_duplicate_log_handlers,
)
from wav2emo.runs.plan import FoldPlan, fold_plan
from wav2emo.training.checkpoints import load_checkpoint
from wav2emo.training.distributed import cluster_plugins
from wav2emo.training.test_pass import test_checkpoint

log = logging.getLogger(__name__)

EVAL_RESULT = "eval_result.json"  # the schema of fold_result.json, written by python -m wav2emo.eval
EVAL_REPORT = "eval_report.md"


def rebuild_checkpoint_upstream(plan: FoldPlan | DictConfig, state_dict: dict[str, Any]):
    """The fine-tuned (or frozen) upstream exactly as trained, from the checkpoint's state alone: each SSL
    stage from its recorded identity (backbone id/commit or folder hash, mode, k) and its trained weights
    (:func:`~wav2emo.models.upstream.rebuild_upstream`); None for a model without an upstream. ``plan``: the
    plan of the checkpoint's config (a config is resolved into it first)."""
    from wav2emo.models.frontends import UpstreamChain
    from wav2emo.models.upstream import rebuild_upstream

    built = build_upstream_for(fold_plan(plan).feed)  # the layout (stages, log-mel, frames)
    if built is None:
        return None
    stages = list(built.stages) if isinstance(built, UpstreamChain) else [built]
    prefix = "upstream.stages.{}." if isinstance(built, UpstreamChain) else "upstream."
    for i in range(len(stages)):
        head = prefix.format(i)
        extra = state_dict.get(head + "_extra_state")
        if extra is None:  # not an SSL stage (log-mel, fixed frames): nothing trained, rebuilt from the config
            continue
        model_head = head + "model."
        trained = {k[len(model_head):]: v for k, v in state_dict.items() if k.startswith(model_head)}
        stages[i] = rebuild_upstream(extra["identity"], trained)
    return UpstreamChain(stages) if isinstance(built, UpstreamChain) else stages[0]


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
    from wav2emo.runs.build import build_datamodule, build_module

    with open_dict(train_cfg):
        train_cfg.paths.cache_dir = cfg.paths.cache_dir
        train_cfg.loader.num_workers = cfg.get("num_workers", 0)
        train_cfg.loader.resident = False
        if train_cfg.get("datamodule") is not None:  # stored resolved: the loader keys above no longer reach it
            train_cfg.datamodule.cache_dir = cfg.paths.cache_dir
            train_cfg.datamodule.num_workers = cfg.get("num_workers", 0)
            train_cfg.datamodule.resident = False
    plan = fold_plan(train_cfg, for_training=False)
    dm = build_datamodule(plan, fold)
    dm.setup("test")
    upstream = rebuild_checkpoint_upstream(plan, ckpt["state_dict"])
    model = build_module(plan, dm, upstream=upstream)
    model.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(
        accelerator=cfg.get("accelerator", "auto"), devices=1, logger=False, enable_progress_bar=False,
        precision=cfg.get("precision", "32-true"), **cluster_plugins({}),
    )
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    result = {"fold": fold, "model": plan.model_name, "checkpoint": str(cfg.ckpt_path), "split": dm.describe()}
    with warnings.catch_warnings():
        quiet_batch_transfer_warning()
        bootstrap = BootstrapSettings.from_config(cfg.get("report"))
        result.update(test_checkpoint(trainer, model, dm, None, out, bootstrap))
    write_fold_result(out, result, filename=EVAL_RESULT)
    log.info("fold %d test: %s", fold, {k: round(v, 4) for k, v in result["test"].items()})
    if "test_intervals" in result:  # the Markdown beside eval_result.json: metrics with their speaker intervals
        iv = result["test_intervals"]
        (out / EVAL_REPORT).write_text("\n".join([
            f"# Evaluation of `{cfg.ckpt_path}` on fold {fold}\n",
            f"Test actors {result['split'].get('test_actors')}, {result['test_clips']} clips.",
            *interval_lines(iv, "intervals over test speakers")]) + "\n")
        log.info("fold %d test UA %s (interval over %d speakers%s) -> %s", fold, fmt_interval(iv["ua"]),
                 iv["speakers"], "; unreliable" if not iv["reliable"] else "", out / EVAL_REPORT)
    return result
