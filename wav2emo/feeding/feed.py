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

import logging
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig

from wav2emo.backbones import BackboneError
from wav2emo.errors import ConfigError
from wav2emo.features.normalize import normalize_mode
from wav2emo.features.normalize import protocol_entry as normalize_protocol
from wav2emo.plain_config import to_container

log = logging.getLogger(__name__)

FINETUNE_MODES = ("none", "top_k", "full")


@dataclass(frozen=True)
class Feed:
    """The resolved rule: ``inputs`` for the data module, ``upstream`` stages for the model."""

    inputs: tuple[str, ...]
    upstream: tuple[str, ...]  # stages in order: "frozen", "top_k", "full", "logmel"; () = none
    bucket_by_length: bool | None  # None = the loader's setting

    @property
    def ssl_from_upstream(self) -> bool:
        return any(s in ("frozen", "full") for s in self.upstream)


def finetune_cfg(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.finetune`` as a plain dict (absent in configs older than the group: mode none)."""
    ft = cfg.get("finetune")
    ft = {"name": "none", "mode": "none"} if ft is None else dict(to_container(ft))
    mode = ft.get("mode", "none")
    if mode not in FINETUNE_MODES:
        raise ConfigError(f"finetune.mode={mode!r}: expected one of {FINETUNE_MODES} (conf/finetune/)")
    return ft


def augment_mode(cfg: DictConfig) -> str:
    """``none``, ``online`` or ``cached`` (an absent ``augment`` group, as in old configs, is none)."""
    aug = cfg.get("augment")
    if aug is None or aug.get("name") == "none":
        return "none"
    return str(aug.get("mode", "online"))


def online_wave_augment(cfg: DictConfig) -> bool:
    """Whether training batches need audio for waveform transforms run on the device every step."""
    aug = cfg.get("augment")
    return augment_mode(cfg) == "online" and bool(aug.get("wave"))


def refuse_finetune(cfg: DictConfig) -> None:
    """For models outside the rule (model=sklearn_*): any finetune other than none is an error."""
    mode = finetune_cfg(cfg)["mode"]
    if mode != "none":
        raise ConfigError(
            f"finetune={mode} with model={cfg.model.get('name')}: this model reads no SSL hidden states (a "
            f"scikit-learn estimator on clip-level features), so there is no backbone to fine-tune; use finetune=none"
        )


def resolve_inputs(cfg: DictConfig) -> Feed:
    """The one rule (module docstring); bad combinations are refused here, before any data is built."""
    feed = _resolve_inputs(cfg)
    mode = normalize_mode(cfg)
    if mode is not None and feed.upstream:
        raise ConfigError(
            f"features.normalize={mode} with upstream {list(feed.upstream)} (finetune={finetune_cfg(cfg)['mode']}, "
            f"augment={augment_mode(cfg)}): per-speaker normalisation standardises the cached inputs, but here the "
            f"model computes or continues its features itself (a backbone layer fed normalised hidden states is "
            f"not the backbone); use finetune=none with augment.mode=cached or none, or features.normalize=null"
        )
    return feed


def _resolve_inputs(cfg: DictConfig) -> Feed:
    model_inputs = tuple(str(i) for i in (cfg.model.get("inputs") or ()))
    ft = finetune_cfg(cfg)
    mode = ft["mode"]
    wave_aug = online_wave_augment(cfg)
    name = cfg.model.get("name", "?")

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
            kind = (cfg.features.get("logmel") or {}).get("kind")
            if kind != "logmel":  # the upstream recomputes log-mel: any other kind would silently become log-mel
                raise ConfigError(
                    f"augment={cfg.augment.get('name')} (mode online, waveform transforms) with model={name}: the "
                    f"model's `logmel` input would be recomputed from the augmented audio by the log-mel frontend, "
                    f"but features.logmel.kind is {kind!r}; use features with kind logmel, or augment.mode=cached")
            return Feed(swap("logmel"), ("logmel",), None)
        raise ConfigError(
            f"augment={cfg.augment.get('name')} (mode online, waveform transforms) with model={name}: its inputs "
            f"{list(model_inputs)} are computed offline (no `ssl` or `logmel` to recompute from augmented audio); "
            f"use augment.mode=cached"
        )
    return Feed(model_inputs, (), None)


def _ssl_stage(cfg: DictConfig, stage: str, ft: dict[str, Any]):
    """An SSL upstream stage (frozen, top_k, full) of the backbone named by ``features.ssl``."""
    from wav2emo.models.upstream import build_upstream

    spec = cfg.features.get("ssl")
    if spec is None:
        raise ConfigError(f"the model needs an SSL backbone (upstream {stage}) but the features config "
                          f"defines only {sorted(cfg.features)}: use features with an `ssl` entry")
    trained = stage != "frozen"
    switches = {s: ft[s] for s in ("layerdrop", "mask_time_prob", "mask_feature_prob", "apply_spec_augment")
                if trained and s in ft}
    try:
        return build_upstream(
            str(spec.backbone), mode=stage, k=ft.get("k") if stage == "top_k" else None,
            revision=spec.get("revision", "main"), build_tiny=bool(spec.get("build_tiny", False)),
            tiny_seed=int(spec.get("tiny_seed", 0)), tiny_family=str(spec.get("tiny_family", "wav2vec2")),
            normalize=spec.get("normalize"),
            freeze_feature_encoder=bool(ft.get("freeze_feature_encoder", True)),
            gradient_checkpointing=bool(ft.get("gradient_checkpointing", False)) and trained,
            switches=switches,
        )
    except BackboneError as e:
        raise ConfigError(f"finetune={ft['mode']} on features.ssl ({spec.backbone}): {e}") from e


def _logmel_stage(cfg: DictConfig, stage: str, ft: dict[str, Any]):
    from wav2emo.models.frontends import LogMelUpstream

    return LogMelUpstream(to_container(cfg.features.logmel))


# Upstream stage name (Feed.upstream) -> its builder; a new kind of stage is one entry here.
STAGE_BUILDERS = {"frozen": _ssl_stage, "top_k": _ssl_stage, "full": _ssl_stage, "logmel": _logmel_stage}


def build_upstream_for(cfg: DictConfig, feed: Feed):
    """The upstream module of ``feed`` (None without one), from the features' specs and ``cfg.finetune``."""
    if not feed.upstream:
        return None
    from wav2emo.models.frontends import FixFrames, UpstreamChain

    ft = finetune_cfg(cfg)
    stages = [STAGE_BUILDERS[stage](cfg, stage, ft) for stage in feed.upstream]
    if feed.ssl_from_upstream and cfg.model.get("frames") is not None:
        stages.append(FixFrames(int(cfg.model.frames)))  # the fixed length the cache path cuts to
    if "full" in feed.upstream:
        log.info("finetune=full: length-bucketed training batches; batch invariance by the backbone family's own "
                 "rule (as extraction), so padding never changes a clip's hidden states")
    return stages[0] if len(stages) == 1 else UpstreamChain(stages)


def optim_config(cfg: DictConfig) -> dict[str, Any] | None:
    """``model.module.optim`` with ``finetune.optim`` merged over it when fine-tuning (else unchanged)."""
    base = cfg.model.module.get("optim")
    base = dict(to_container(base)) if base is not None else {}
    ft = finetune_cfg(cfg)
    if ft["mode"] == "none":
        return base or None
    return {**base, **dict(ft.get("optim") or {})}


def protocol_entry(cfg: DictConfig) -> dict[str, Any]:
    """What a fold result says about fine-tuning, augmentation and feature normalisation (``fold_result.json``
    ``protocol``)."""
    aug = cfg.get("augment")
    feed = resolve_inputs(cfg)
    return {
        "finetune": finetune_cfg(cfg),
        "augment": {"name": "none"} if aug is None else dict(to_container(aug)),
        "inputs": list(feed.inputs),
        "upstream": list(feed.upstream),
        **normalize_protocol(normalize_mode(cfg)),  # per-speaker normalisation reads test speakers' audio
    }


def run_tags(cfg: DictConfig) -> list[str]:
    """W&B tags naming the finetune, augment and normalisation settings, e.g. ``finetune=top_k(k=4)``,
    ``augment=standard``, ``normalize=speaker``."""
    ft = finetune_cfg(cfg)
    ft_tag = f"finetune={ft['mode']}" + (f"(k={ft.get('k')})" if ft["mode"] == "top_k" else "")
    aug = cfg.get("augment")
    aug_name = "none" if aug is None else str(aug.get("name"))
    aug_tag = f"augment={aug_name}" + (f"({aug.get('mode')})" if aug_name != "none" else "")
    norm = normalize_mode(cfg)
    return [ft_tag, aug_tag, *([f"normalize={norm}"] if norm else [])]
