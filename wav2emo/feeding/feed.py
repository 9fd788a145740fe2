"""What the model is fed: one rule from (model.inputs, finetune, augment) to the batch keys the data
module serves and the upstream the model runs on them (issue 9).

=====================================  =================================  ==================================
setting                                data module serves                 upstream (in the model)
=====================================  =================================  ==================================
finetune=none, no online wave augment  the caches (``model.inputs``)      none
finetune=top_k                         cached ``ssl``                     SSLUpstream(top_k)
finetune=top_k + online wave augment   ``wave`` instead of ``ssl``        SSLUpstream(frozen) -> (top_k)
finetune=full                          ``wave`` instead of ``ssl``        SSLUpstream(full), length buckets
online wave augment, SSL model         ``wave`` instead of ``ssl``        SSLUpstream(frozen)
online wave augment, log-mel model     ``wave`` instead of ``logmel``     LogMelUpstream
=====================================  =================================  ==================================

"Online wave augment" = ``augment.mode: online`` with waveform transforms (``augment.wave`` not empty); an
online augmentation of features only (SpecAugment) runs on the cached features.  Other cached inputs
(``egemaps``) stay cached: online augmentation does not reach them (cached mode does).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig

from wav2emo.backbones import BackboneError
from wav2emo.errors import ConfigError
from wav2emo.features.normalize import normalize_mode
from wav2emo.plain_config import to_container

log = logging.getLogger(__name__)

FINETUNE_MODES = ("none", "top_k", "full")


@dataclass(frozen=True)
class Feed:
    """The resolved rule: ``inputs`` for the data module, ``upstream`` stages for the model, the ``finetune``
    settings the stages are built with, the per-speaker ``normalize`` of the cached inputs."""

    inputs: tuple[str, ...]
    upstream: tuple[str, ...]  # stages in order: "frozen", "top_k", "full", "logmel"; () = none
    bucket_by_length: bool | None  # None = the loader's setting
    finetune: dict[str, Any] = field(default_factory=lambda: {"name": "none", "mode": "none"}, compare=False)
    normalize: str | None = None  # features.normalize: "speaker" or None
    features: dict[str, Any] = field(default_factory=dict, compare=False)  # the specs the upstream stages build from
    frames: int | None = field(default=None, compare=False)  # model.frames: the fixed length an SSL upstream's hidden states are cut to

    @property
    def ssl_from_upstream(self) -> bool:
        return any(s in ("frozen", "full") for s in self.upstream)


def finetune_settings(section: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run config's ``finetune`` section (plain values) checked, as a new dict (absent in configs older than
    the group: mode none)."""
    ft = {"name": "none", "mode": "none"} if section is None else copy.deepcopy(dict(section))
    mode = ft.get("mode", "none")
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"finetune.mode={mode!r}: expected one of {FINETUNE_MODES} (conf/finetune/)")
    return ft


def augment_mode(augment: Mapping[str, Any] | None) -> str:
    """``none``, ``online`` or ``cached`` (an absent ``augment`` group, as in old configs, is none)."""
    if augment is None or augment.get("name") == "none":
        return "none"
    return str(augment.get("mode", "online"))


def online_wave_augment(augment: Mapping[str, Any] | None) -> bool:
    """Whether training batches need audio for waveform transforms run on the device every step."""
    return augment_mode(augment) == "online" and bool(augment.get("wave"))


def refuse_finetune(cfg: DictConfig) -> None:
    """For models outside the rule (model=sklearn_*): any finetune other than none is an error."""
    section = cfg.get("finetune")
    mode = finetune_settings(None if section is None else to_container(section))["mode"]
    if mode != "none":
        raise ConfigError(
            f"finetune={mode} with model={cfg.model.get('name')}: this model reads no SSL hidden states (a "
            f"scikit-learn estimator on clip-level features), so there is no backbone to fine-tune; use finetune=none"
        )


def resolve_inputs(config: Mapping[str, Any]) -> Feed:
    """The one rule (module docstring) for a run config as plain values (:func:`wav2emo.plain_config.to_container`);
    bad combinations are refused here, before any data is built."""
    ft = finetune_settings(config.get("finetune"))
    augment = config.get("augment")
    feed = _resolve_inputs(config["model"], config.get("features") or {}, ft, augment)
    mode = normalize_mode(config)
    if mode is not None and feed.upstream:
        raise ConfigError(
            f"features.normalize={mode} with upstream {list(feed.upstream)} (finetune={ft['mode']}, "
            f"augment={augment_mode(augment)}): per-speaker normalisation standardises the cached inputs, but here "
            f"the model computes or continues its features itself (a backbone layer fed normalised hidden states is "
            f"not the backbone); use finetune=none with augment.mode=cached or none, or features.normalize=null"
        )
    frames = config["model"].get("frames")
    return replace(feed, finetune=ft, normalize=mode, features=dict(config.get("features") or {}),
                   frames=None if frames is None else int(frames))


def _resolve_inputs(model: Mapping[str, Any], features: Mapping[str, Any], ft: dict[str, Any],
                    augment: Mapping[str, Any] | None) -> Feed:
    model_inputs = tuple(str(i) for i in (model.get("inputs") or ()))
    mode = ft["mode"]
    wave_aug = online_wave_augment(augment)
    name = model.get("name", "?")

    def swap(old: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys("wave" if i == old else i for i in model_inputs))

    if mode != "none":
        if "ssl" not in model_inputs:
            raise ConfigError(
                f"finetune={mode} with model={name}: this model reads {list(model_inputs)}, no SSL hidden states "
                f"(`ssl` in model.inputs), so there is no backbone to fine-tune; use finetune=none or a model that "
                f"reads `ssl` (fe_vgg, fe_vgg_reference, fe_vgg_egemaps, layer_weighted, ...)"
            )
        k = ft.get("k")
        if mode == "top_k" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ConfigError(f"finetune.k={k!r}: expected an integer >= 1 (and <= the backbone's layer count)")
        if mode == "full":
            return Feed(swap("ssl"), ("full",), True)
        if wave_aug:
            return Feed(swap("ssl"), ("frozen", "top_k"), None)
        return Feed(model_inputs, ("top_k",), None)
    if wave_aug:
        if "ssl" in model_inputs:
            return Feed(swap("ssl"), ("frozen",), None)
        if "logmel" in model_inputs:
            kind = (features.get("logmel") or {}).get("kind")
            if kind != "logmel":  # the upstream recomputes log-mel: any other kind would silently become log-mel
                raise ConfigError(
                    f"augment={augment.get('name')} (mode online, waveform transforms) with model={name}: the "
                    f"model's `logmel` input would be recomputed from the augmented audio by the log-mel frontend, "
                    f"but features.logmel.kind is {kind!r}; use features with kind logmel, or augment.mode=cached")
            return Feed(swap("logmel"), ("logmel",), None)
        raise ConfigError(
            f"augment={augment.get('name')} (mode online, waveform transforms) with model={name}: its inputs "
            f"{list(model_inputs)} are computed offline (no `ssl` or `logmel` to recompute from augmented audio); "
            f"use augment.mode=cached"
        )
    return Feed(model_inputs, (), None)


def _ssl_stage(stage: str, features: Mapping[str, Any], finetune: Mapping[str, Any]):
    """An SSL upstream stage (frozen, top_k, full) of the backbone named by ``features.ssl``."""
    from wav2emo.models.upstream import build_upstream

    spec = features.get("ssl")
    if spec is None:
        raise ConfigError(f"the model needs an SSL backbone (upstream {stage}) but the features config "
                          f"defines only {sorted(features)}: use features with an `ssl` entry")
    trained = stage != "frozen"
    switches = {s: finetune[s] for s in ("layerdrop", "mask_time_prob", "mask_feature_prob", "apply_spec_augment")
                if trained and s in finetune}
    try:
        return build_upstream(
            str(spec["backbone"]), mode=stage, k=finetune.get("k") if stage == "top_k" else None,
            revision=spec.get("revision", "main"), build_tiny=bool(spec.get("build_tiny", False)),
            tiny_seed=int(spec.get("tiny_seed", 0)), tiny_family=str(spec.get("tiny_family", "wav2vec2")),
            normalize=spec.get("normalize"),
            freeze_feature_encoder=bool(finetune.get("freeze_feature_encoder", True)),
            gradient_checkpointing=bool(finetune.get("gradient_checkpointing", False)) and trained,
            switches=switches,
        )
    except BackboneError as e:
        raise ConfigError(f"finetune={finetune['mode']} on features.ssl ({spec['backbone']}): {e}") from e


def _logmel_stage(stage: str, features: Mapping[str, Any], finetune: Mapping[str, Any]):
    from wav2emo.models.frontends import LogMelUpstream

    return LogMelUpstream(dict(features["logmel"]))


# Upstream stage name (Feed.upstream) -> its builder; a new kind of stage is one entry here.
STAGE_BUILDERS = {"frozen": _ssl_stage, "top_k": _ssl_stage, "full": _ssl_stage, "logmel": _logmel_stage}


def build_upstream_for(feed: Feed):
    """The upstream module of ``feed`` (None without one), from the features' specs the feed carries (the config's
    ``features`` section), its finetune settings and the model's fixed ``frames`` (None: clips keep their length)."""
    if not feed.upstream:
        return None
    from wav2emo.models.frontends import FixFrames, UpstreamChain

    stages = [STAGE_BUILDERS[stage](stage, feed.features, feed.finetune) for stage in feed.upstream]
    if feed.ssl_from_upstream and feed.frames is not None:
        stages.append(FixFrames(feed.frames))  # the fixed length the cache path cuts to
    if "full" in feed.upstream:
        log.info("finetune=full: length-bucketed training batches; batch invariance by the backbone family's own "
                 "rule (as extraction), so padding never changes a clip's hidden states")
    return stages[0] if len(stages) == 1 else UpstreamChain(stages)
