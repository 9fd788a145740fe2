"""The trained models a cross-corpus evaluation tests, and their scores on every clip of another corpus.

``ckpt_path`` may name a checkpoint file, a fold directory, a run directory (``fold_<k>`` folders), or a
sweep directory holding one configuration; a sweep over seeds (``seed=0,1,2``) gives one set of fold models per
seed, and every seed must have the same folds.  A fold of a neural run contributes its dev-chosen checkpoint (the
one its fold result says it evaluated); a fold of a scikit-learn baseline its stored ``model.joblib``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.reports.fold_results import FOLD_RESULT, read_fold_result
from wav2emo.runs.common import CKPT_KEY, quiet_batch_transfer_warning
from wav2emo.training.checkpoints import load_checkpoint
from wav2emo.training.distributed import cluster_plugins

log = logging.getLogger(__name__)
Repeats = Mapping[str, Mapping[int, Path]]  # seed ("" when not swept) -> fold -> fold directory


@dataclass
class TrainedModel:
    """One fold's model: ``kind`` neural (a checkpoint) or sklearn (a stored pipeline in ``fold_dir``)."""

    fold: int
    kind: str
    path: Path
    class_names: tuple[str, ...]
    train_config: dict[str, Any]
    name: str


def _repeat_dirs(path: Path) -> dict[str, dict[int, Path]]:
    """seed (``""`` when not swept) -> fold -> directory of the fold models under ``path``."""
    if (path / FOLD_RESULT).is_file():
        return {"": {int(read_fold_result(path)["fold"]): path}}
    dirs = sorted(d for d in path.glob("fold_*") if (d / FOLD_RESULT).is_file())
    if dirs:
        by_fold: dict[int, Path] = {}
        for d in dirs:
            fold = int(read_fold_result(d)["fold"])
            if fold in by_fold:
                raise ConfigError(f"ckpt_path={path}: {by_fold[fold].name} and {d.name} both hold fold {fold}'s model; "
                                  "move one of them out of the run directory")
            by_fold[fold] = d
        return {"": by_fold}
    from wav2emo.reports.sweep import group_jobs

    confs = group_jobs(path)
    if len(confs) > 1:
        raise ConfigError(f"ckpt_path={path}: a sweep of {len(confs)} configurations ({[c.name for c in confs]}); "
                          "pass one run directory, or use python -m wav2emo.crosscorpus.matrix for a matrix")
    if confs and confs[0].fold_dirs:
        return confs[0].repeats
    raise ConfigError(f"ckpt_path={path}: no fold_result.json under it; expected a checkpoint file, a fold directory "
                      "or a run directory of python -m wav2emo.train / wav2emo.baselines")


def check_same_folds(where: str | Path, repeats: Repeats) -> None:
    """Seeds are repeats of the same fold models: refuse seeds whose fold sets differ, saying what to run."""
    folds = {s: sorted(d) for s, d in repeats.items()}
    every = sorted(set().union(*map(set, folds.values())))
    missing = {s: sorted(set(every) - set(f)) for s, f in folds.items() if set(f) != set(every)}
    if missing:
        lacks = "; ".join(f"seed {s or '(default)'} has folds {folds[s]}, lacks {m}" for s, m in missing.items())
        runs = ", ".join(f"fold={','.join(map(str, m))} seed={s}" for s, m in missing.items())
        raise ConfigError(f"{where}: its seeds have different fold models ({lacks}); each seed is a repeat of the "
                          f"same folds {every}: train the missing ones into the sweep ({runs}), or evaluate a folder "
                          "holding only the jobs of the complete seeds")


def _checkpoint_of(fold_dir: Path, result: dict[str, Any]) -> Path:
    for key in ("evaluated_checkpoint", "best_checkpoint"):
        value = result.get(key)
        if value:
            p = Path(str(value))
            for candidate in (p, fold_dir / "checkpoints" / p.name):  # the run directory may have moved
                if candidate.is_file():
                    return candidate
    found = sorted(p for p in (fold_dir / "checkpoints").glob("*.ckpt") if p.name != "last.ckpt")
    if len(found) == 1:
        return found[0]
    raise MissingFileError(f"{fold_dir}: no evaluated checkpoint found (fold_result.json names "
                           f"{result.get('evaluated_checkpoint')!r}; checkpoints/ holds {[p.name for p in found]})")


def _neural(fold: int | None, ckpt_path: Path) -> TrainedModel:
    ckpt = load_checkpoint(ckpt_path)
    if CKPT_KEY not in ckpt:
        raise ConfigError(f"{ckpt_path}: not a wav2emo checkpoint (no {CKPT_KEY!r} entry with its config)")
    names = (ckpt.get("hyper_parameters") or {}).get("class_names")
    if not names:
        raise ConfigError(f"{ckpt_path}: the checkpoint does not name its classes (hyper_parameters.class_names)")
    cfg = ckpt[CKPT_KEY]["config"]
    return TrainedModel(fold=int(ckpt[CKPT_KEY]["fold"] if fold is None else fold), kind="neural", path=ckpt_path,
                        class_names=tuple(map(str, names)), train_config=cfg, name=str(cfg["model"]["name"]))


def find_model_sets(ckpt_path: str | Path, repeats: Repeats | None = None) -> dict[str, list[TrainedModel]]:
    """seed (``""`` when not a seed sweep) -> the fold models under ``ckpt_path`` (see the module docstring) in fold
    order; ``repeats`` (seed -> fold -> directory) names the fold directories instead of ``ckpt_path``."""
    path = Path(str(ckpt_path))
    if repeats is None:
        if path.is_file():
            return {"": [_neural(None, path)]}
        if not path.is_dir():
            raise MissingFileError(f"ckpt_path={ckpt_path}: no such checkpoint file or run directory")
        repeats = _repeat_dirs(path)
    check_same_folds(f"ckpt_path={ckpt_path}", repeats)
    return {seed: [_fold_model(d) for _, d in sorted(dirs.items())] for seed, dirs in repeats.items()}


def _fold_model(d: Path) -> TrainedModel:
    import yaml

    result = read_fold_result(d)
    if "estimator" not in result:
        return _neural(int(result["fold"]), _checkpoint_of(d, result))
    from wav2emo.baselines.store import load_model

    stored = load_model(d)
    cfg = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else {}
    return TrainedModel(fold=int(result["fold"]), kind="sklearn", path=d, class_names=tuple(stored["class_names"]),
                        train_config=cfg or {}, name=str(result.get("model")))


def sklearn_scores(model: TrainedModel, manifest, cache_dir: str | Path) -> tuple[np.ndarray, bool, dict]:
    """Scores (clips x model classes) of a stored baseline on ``manifest``; True when they are probabilities."""
    from wav2emo.baselines.runner import clip_features
    from wav2emo.baselines.store import load_model
    from wav2emo.features.combined_cache import corpus_features
    from wav2emo.features.normalize import normalize_by_speaker, warn_narrow_speakers

    stored = load_model(model.path)
    cache = corpus_features(manifest, stored["feature_spec"], cache_dir)
    x = clip_features(cache, list(manifest))
    extra: dict[str, Any] = {"feature_normalization": stored.get("normalize")}
    if stored.get("normalize") == "speaker":  # the test corpus's speakers, with their own statistics
        actors = [c.actor for c in manifest]
        x = normalize_by_speaker(x, actors, dtype=np.float64)
        narrow = warn_narrow_speakers(actors, [c.label for c in manifest], list(manifest.class_names))
        extra["narrow_speakers"] = {str(k): v for k, v in narrow.items()}
    pipe = stored["pipeline"]
    n = len(model.class_names)
    classes = np.asarray(pipe.classes_, dtype=np.int64)
    if hasattr(pipe, "predict_proba"):
        scores = np.zeros((len(x), n))
        scores[:, classes] = pipe.predict_proba(x)
        return scores, True, extra
    d = np.asarray(pipe.decision_function(x), dtype=np.float64)
    if d.ndim == 1:  # two classes: the decision value favours classes_[1]
        d = np.stack([-d, d], axis=1)
    scores = np.full((len(x), n), -np.inf)
    scores[:, classes] = d
    return scores, False, extra


def neural_scores(model: TrainedModel, corpus_cfg: dict[str, Any], cfg: DictConfig) -> tuple[np.ndarray, list[str]]:
    """Softmax probabilities (clips x model classes) of a checkpoint on every clip of ``corpus_cfg``'s corpus,
    and the clip ids in the same order."""
    import lightning as L
    import torch

    from wav2emo.runs.build import build_datamodule, build_module
    from wav2emo.runs.plan import fold_plan
    from wav2emo.runs.testing import rebuild_checkpoint_upstream

    ckpt = load_checkpoint(model.path)
    train_cfg = OmegaConf.create(model.train_config)
    with open_dict(train_cfg):
        train_cfg.paths.cache_dir = cfg.paths.cache_dir
        dm_cfg = train_cfg.datamodule
        dm_cfg._target_ = "wav2emo.crosscorpus.whole_corpus.WholeCorpusDataModule"
        dm_cfg.corpus = corpus_cfg
        dm_cfg.model_class_names = list(model.class_names)
        dm_cfg.cache_dir = cfg.paths.cache_dir
        dm_cfg.num_workers = cfg.get("num_workers", 0)
        dm_cfg.resident = False
        dm_cfg.pop("augment", None)
    plan = fold_plan(train_cfg, for_training=False)
    dm = build_datamodule(plan, 0)
    dm.setup("predict")
    upstream = rebuild_checkpoint_upstream(plan, ckpt["state_dict"])
    module = build_module(plan, dm, upstream=upstream)
    module.load_state_dict(ckpt["state_dict"])
    trainer = L.Trainer(accelerator=cfg.get("accelerator", "auto"), devices=1, logger=False,
                        enable_progress_bar=False, precision=cfg.get("precision", "32-true"), **cluster_plugins({}))
    with warnings.catch_warnings():
        quiet_batch_transfer_warning()
        out = trainer.predict(module, datamodule=dm)
    ids = [i for batch in out for i in batch["clip_id"]]
    probs = torch.cat([batch["probs"] for batch in out]).numpy().astype(np.float64)
    return probs, ids
