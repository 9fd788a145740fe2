"""A trained model back from its checkpoint alone: config, class names, scalers, fine-tuned upstream, weights.

The module is rebuilt as ``python -m wav2emo.eval`` rebuilds it (:mod:`wav2emo.runs.testing`): the config
stored in the checkpoint, resolved into its plan (:func:`~wav2emo.runs.plan.fold_plan`: what the data module
served), the upstream rebuilt from the checkpoint's recorded backbone identity and trained weights
(:func:`~wav2emo.runs.testing.rebuild_checkpoint_upstream`), and
:func:`~wav2emo.runs.build.build_module`.  Only the data module is replaced, by :class:`CheckpointShapes`,
which answers the builder's questions from the checkpoint and the in-memory features instead of a corpus and
its caches.  eGeMAPS scalers, class weights, the featurizer's layer weights and the fine-tuned layers are in
the ``state_dict`` and are loaded strictly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from wav2emo.errors import ConfigError, MissingFileError
from wav2emo.inference.features import InMemoryFeatures, feature_key
from wav2emo.reports.fold_results import FOLD_RESULT, read_fold_result
from wav2emo.runs.common import CKPT_KEY
from wav2emo.training.checkpoints import load_checkpoint

log = logging.getLogger(__name__)


class _CacheMeta:
    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta


class CheckpointShapes:
    """Stands in for the data module when :func:`build_module` rebuilds a checkpoint's model.

    It gives no eGeMAPS statistics or class counts: a checkpoint's plan leaves them to the checkpoint's
    ``state_dict`` (Standardizer ``mean``/``std``, ``class_weight``).
    """

    augmenter = None  # augmentation touches training batches only

    def __init__(self, inputs: tuple[str, ...], class_names: tuple[str, ...], features: InMemoryFeatures) -> None:
        self.inputs, self.class_names, self._features = inputs, class_names, features
        self.caches = {"ssl": _CacheMeta(features.ssl_meta)} if features.ssl_meta else {}

    def input_shape(self, name: str) -> tuple[int, ...]:
        return self._features.input_shape(name)


def checkpoint_class_names(ckpt: dict[str, Any], path: Path) -> tuple[str, ...]:
    names = (ckpt.get("hyper_parameters") or {}).get("class_names")
    if not names:
        raise ConfigError(f"{path}: the checkpoint has no class_names in its hyper-parameters; it cannot be used "
                          "for prediction (retrain it with this wav2emo version)")
    return tuple(str(n) for n in names)


@dataclass
class Restored:
    """One checkpoint's model, ready for inference, with what feeds it."""

    path: Path
    module: torch.nn.Module
    class_names: tuple[str, ...]
    features: InMemoryFeatures
    frames: int | None  # the data module's fixed SSL length (None: any length)
    frames_multiple: int | None  # the data module's padding multiple
    eval_batch_size: int
    min_samples: int  # the fewest 16 kHz samples its features and upstream can use
    config: DictConfig
    fold: int | None


def _train_config(ckpt: dict[str, Any], path: Path) -> DictConfig:
    if CKPT_KEY not in ckpt:
        raise ConfigError(f"{path}: not a wav2emo checkpoint of a neural model (no {CKPT_KEY!r} entry with its config)")
    cfg = OmegaConf.create(ckpt[CKPT_KEY]["config"])
    model = cfg.get("model")
    if cfg.get("datamodule") is None or model is None or model.get("inputs") is None or model.get("module") is None:
        raise ConfigError(f"{path}: its config has no datamodule or model.inputs/model.module; it predates this "
                          "version of wav2emo and cannot be rebuilt - retrain it, or use the version that trained it")
    from wav2emo.features.normalize import check_mode

    if check_mode((cfg.get("features") or {}).get("normalize")) is not None:
        raise ConfigError(f"{path}: trained with features.normalize={cfg.features.normalize}; per-speaker "
                          "statistics need each speaker's other recordings, which predict does not have")
    return cfg


def _upstream_min_samples(upstream: Any) -> int:
    from wav2emo.models.upstream import SSLUpstream

    stages = list(getattr(upstream, "stages", [upstream])) if upstream is not None else []
    fields = [s.backbone.receptive_field for s in stages if isinstance(s, SSLUpstream) and s.mode != "top_k"]
    return max(fields, default=1)


@dataclass
class CheckpointRead:
    """A checkpoint read, its config resolved into a plan and its features started (eGeMAPS workers up, the
    backbone not loaded yet): the first half of :func:`restore`, quick enough to run before windows are read."""

    path: Path
    ckpt: dict[str, Any]
    config: DictConfig
    class_names: tuple[str, ...]
    plan: Any
    served: tuple[str, ...]
    features: InMemoryFeatures

    @property
    def eval_batch_size(self) -> int:
        dm = self.config.datamodule
        return int(dm.get("eval_batch_size") or dm.get("batch_size") or 16)


def read_checkpoint(path: str | Path, *, device: str | torch.device = "auto",
                    features_cache: dict[str, InMemoryFeatures] | None = None,
                    egemaps_workers: int = 0, egemaps_nice: int = 0) -> CheckpointRead:
    """Read the checkpoint at ``path`` and start its features (see :func:`restore` for the arguments); the
    backbone and the model are left to :func:`build_restored`."""
    from wav2emo.runs.plan import fold_plan

    path = Path(path)
    ckpt = load_checkpoint(path)
    cfg = _train_config(ckpt, path)
    names = checkpoint_class_names(ckpt, path)
    plan = fold_plan(cfg, for_training=False)
    served = plan.feed.inputs  # what the data module fed (``wave`` when the upstream reads audio)
    dm = cfg.datamodule
    extra = {"ssl_layer_index": dm.get("ssl_layer_index"), "sample_rate": int(dm.get("sample_rate") or 16000)}
    key = feature_key(cfg.features, served, extra)
    cache = {} if features_cache is None else features_cache
    if key not in cache:
        cache[key] = InMemoryFeatures(cfg.features, served, device=device, egemaps_workers=egemaps_workers,
                                      egemaps_nice=egemaps_nice, load_backbone=False, **extra)
    return CheckpointRead(path, ckpt, cfg, names, plan, served, cache[key])


def build_restored(read: CheckpointRead) -> Restored:
    """The second half of :func:`restore`: the backbone loaded, the module rebuilt and its weights loaded."""
    from wav2emo.backbones import BackboneError
    from wav2emo.runs.build import build_module
    from wav2emo.runs.testing import rebuild_checkpoint_upstream

    path, feats = read.path, read.features
    try:
        feats.load_backbone()
        upstream = rebuild_checkpoint_upstream(read.plan, read.ckpt["state_dict"])
        module = build_module(read.plan, CheckpointShapes(read.served, read.class_names, feats), upstream=upstream)
    except BackboneError as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        module.load_state_dict(read.ckpt["state_dict"])
    except (RuntimeError, BackboneError) as e:
        raise ConfigError(f"{path}: its weights do not fit the model its config describes ({str(e)[:300]})") from e
    module.to(feats.device).eval()
    dm = read.config.datamodule
    frames = dm.get("frames")
    multiple = dm.get("frames_multiple")
    return Restored(
        path=path, module=module, class_names=read.class_names, features=feats,
        frames=None if frames is None else int(frames),
        # "auto" (checkpoints record what it resolved to; "auto" left means it resolved to nothing): no rounding
        frames_multiple=None if multiple in (None, "auto") else int(multiple),
        eval_batch_size=read.eval_batch_size,
        min_samples=max(feats.min_length(), _upstream_min_samples(upstream)),
        config=read.config, fold=read.ckpt[CKPT_KEY].get("fold"),
    )


def restore(path: str | Path, *, device: str | torch.device = "auto",
            features_cache: dict[str, InMemoryFeatures] | None = None, egemaps_workers: int = 0) -> Restored:
    """Rebuild the model of the checkpoint at ``path`` in eval mode on ``device``.

    ``features_cache`` shares one :class:`InMemoryFeatures` (one frozen backbone) among checkpoints that need
    the same features, e.g. the five folds of a run.  ``egemaps_workers`` >= 1 computes eGeMAPS in that many
    worker processes (same values; :class:`~wav2emo.features.smile_waves.SmileWavePool`), 0 in this process.
    """
    return build_restored(read_checkpoint(path, device=device, features_cache=features_cache,
                                          egemaps_workers=egemaps_workers))


def _fold_checkpoint(fold_dir: Path) -> Path:
    """The dev-chosen checkpoint that ``fold_dir/fold_result.json`` names (found again if the run was moved)."""
    result = read_fold_result(fold_dir / FOLD_RESULT)
    best = result.get("best_checkpoint")
    if not best:
        raise ConfigError(f"{fold_dir / FOLD_RESULT}: names no best_checkpoint (a classic baseline's fold, or a "
                          "fold that was never tested); predict needs a neural model's checkpoint")
    best = Path(best)
    for candidate in (best, fold_dir / "checkpoints" / best.name, fold_dir / best):
        if candidate.is_file():
            return candidate
    raise MissingFileError(f"{fold_dir / FOLD_RESULT}: its best_checkpoint {best} does not exist (nor "
                           f"{fold_dir / 'checkpoints' / best.name}); was the run moved without its checkpoints?")


def checkpoints_of(model: str | Path) -> list[Path]:
    """One checkpoint file, or the dev-chosen checkpoint of every fold under a fold, run or sweep directory."""
    model = Path(model)
    if model.is_file():
        return [model]
    if not model.is_dir():
        raise MissingFileError(f"ckpt_path={model}: no such checkpoint file or run directory")
    if (model / FOLD_RESULT).is_file():
        return [_fold_checkpoint(model)]
    fold_dirs = sorted({p.parent for p in model.rglob(FOLD_RESULT)})
    if not fold_dirs:
        raise MissingFileError(f"ckpt_path={model}: a directory without any {FOLD_RESULT} below it; expected a "
                               "checkpoint (.ckpt), a fold directory or a run/sweep directory of finished folds")
    return [_fold_checkpoint(d) for d in fold_dirs]
