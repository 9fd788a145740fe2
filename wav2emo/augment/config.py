"""``build_augment(cfg)``: a ``conf/augment/<name>.yaml`` mapping -> :class:`Augmenter`, every value checked
(``check_augment``: the checked spec, ``augmenter_from``: a new augmenter of a spec).

Schema (all keys optional except where noted; unknown keys are refused so a typo never silently does nothing)::

    name: standard            # label for reports
    mode: online              # online (every step, on the device) | cached (K copies in the feature cache)
    copies: 4                 # cached mode: augmented copies per training clip (>= 1)
    sample_rate: 16000        # of the waveforms handed in
    wave:                     # waveform transforms, applied in this order
      pitch: {p: 0.5, semitones: [-2, 2], step: 0.5}
      speed: {p: 0.5, factors: [0.9, 1.0, 1.1]}
      noise: {p: 0.5, snr_db: [10, 20], kinds: [white, pink, babble], folder: null, babble_speakers: 3}
      gain:  {p: 0.5, gain_db: [-6, 6]}
    features:                 # frame-feature masks, applied to each of feature_keys present in the batch
      spec: {p: 1.0, time_masks: 2, time_width: 40, time_max_frac: 0.2, freq_masks: 2, freq_width: 8, fill: mean}
    feature_keys: [logmel]
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from wav2emo.augment.compose import Augmenter, Compose, FeatureCompose
from wav2emo.errors import ConfigError
from wav2emo.registry import Registry

# The transforms an augment config can name (``wave: {pitch: {...}}``); your own: ``@WAVE_AUGMENTATIONS.register``
# in a module of yours, passed as ``plugins=[that.module]`` (see wav2emo/registry.py).
WAVE_AUGMENTATIONS: Registry[type] = Registry("waveform augmentation", {
    "pitch": "wav2emo.augment.pitch:PitchShift",
    "speed": "wav2emo.augment.speed:Speed",
    "noise": "wav2emo.augment.noise:AddNoise",
    "gain": "wav2emo.augment.gain:Gain",
})
FEATURE_AUGMENTATIONS: Registry[type] = Registry("feature augmentation", {"spec": "wav2emo.augment.specaugment:SpecAugment"})
TOP_KEYS = ("name", "mode", "copies", "sample_rate", "wave", "features", "feature_keys")
FEATURE_KEYS = ("logmel", "ssl", "ssl_layer")


def _plain(cfg: Any) -> Any:
    """A DictConfig/ListConfig (resolved) or plain mapping -> plain Python containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf comes with hydra
        pass
    return cfg


def _check_step(group: str, kind: str, spec: Any, kinds: Registry[type], sample_rate: int
                ) -> tuple[str, type, dict[str, Any], float]:
    if kind not in kinds:
        raise ConfigError(f"augment {group}.{kind}: unknown transform; expected one of {kinds.names()} "
                          "(or one of yours, registered by a module passed as plugins=[...])")
    spec = {} if spec is None else spec
    if not isinstance(spec, Mapping):
        raise ConfigError(f"augment {group}.{kind}: expected a mapping of settings, got {spec!r}")
    spec = dict(spec)
    p = spec.pop("p", 1.0)
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0 <= p <= 1:
        raise ConfigError(f"augment {group}.{kind}.p: {p!r}; expected a probability in [0, 1]")
    cls = kinds.require(kind)
    allowed = set(inspect.signature(cls).parameters) - {"sample_rate"}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        raise ConfigError(f"augment {group}.{kind}: unknown settings {unknown}; expected some of {sorted(allowed | {'p'})}")
    if "sample_rate" in inspect.signature(cls).parameters:
        spec["sample_rate"] = sample_rate
    return kind, cls, spec, float(p)


@dataclass(frozen=True)
class AugmentSpec:
    """An augment config with every value checked and each transform's class found (:func:`check_augment`):
    what :func:`augmenter_from` builds an :class:`Augmenter` from (a training run checks it once, in its plan,
    and builds a new augmenter for each fold)."""

    resolved: dict[str, Any]  # name, mode, copies, sample_rate, feature_keys
    steps: dict[str, list[tuple[str, type, dict[str, Any], float]]]  # "wave"/"features": (kind, class, settings, p)


def check_augment(cfg: Mapping[str, Any] | None) -> AugmentSpec:
    """Check every value of an augment config (``None`` = no augmentation) and find each transform's class."""
    cfg = _plain(cfg) or {}
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"augment: expected a mapping (conf/augment/<name>.yaml), got {cfg!r}")
    unknown = sorted(set(cfg) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"augment: unknown keys {unknown}; expected some of {list(TOP_KEYS)}")
    mode = cfg.get("mode", "online")
    if mode not in ("online", "cached"):
        raise ConfigError(f"augment.mode: {mode!r}; expected 'online' or 'cached'")
    copies = cfg.get("copies", 4)
    if isinstance(copies, bool) or not isinstance(copies, int) or copies < 1:
        raise ConfigError(f"augment.copies: {copies!r}; expected an integer >= 1 (augmented copies per clip)")
    sample_rate = cfg.get("sample_rate", 16000)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigError(f"augment.sample_rate: {sample_rate!r}; expected a positive integer (Hz)")
    feature_keys = cfg.get("feature_keys", ["logmel"])
    if isinstance(feature_keys, str):
        feature_keys = [feature_keys]
    if not feature_keys or any(k not in FEATURE_KEYS for k in feature_keys):
        raise ConfigError(f"augment.feature_keys: {feature_keys!r}; expected a non-empty list from {list(FEATURE_KEYS)}")
    steps = {}
    for group, kinds in (("wave", WAVE_AUGMENTATIONS), ("features", FEATURE_AUGMENTATIONS)):
        section = cfg.get(group) or {}
        if not isinstance(section, Mapping):
            raise ConfigError(f"augment.{group}: expected a mapping of transform name -> settings, got {section!r}")
        steps[group] = [_check_step(group, k, v, kinds, sample_rate) for k, v in section.items()]
    resolved = {"name": cfg.get("name"), "mode": mode, "copies": copies, "sample_rate": sample_rate,
                "feature_keys": list(feature_keys)}
    return AugmentSpec(resolved, steps)


def augmenter_from(spec: AugmentSpec) -> Augmenter:
    """A new :class:`Augmenter` (its transforms built now) from a checked spec."""
    groups = {group: [(kind, cls(**settings), p) for kind, cls, settings, p in steps]
              for group, steps in spec.steps.items()}
    resolved = dict(spec.resolved)
    identity = {**resolved,
                "wave": [{**t.identity(), "p": p} for _, t, p in groups["wave"]],
                "features": [{**t.identity(), "p": p} for _, t, p in groups["features"]]}
    return Augmenter(Compose(groups["wave"]), FeatureCompose(groups["features"]), list(resolved["feature_keys"]),
                     resolved, identity)


def build_augment(cfg: Mapping[str, Any] | None) -> Augmenter:
    """Check every value of an augment config and build its :class:`Augmenter` (``None`` = no augmentation);
    an :class:`Augmenter` already built is handed back as it is."""
    if isinstance(cfg, Augmenter):
        return cfg
    return augmenter_from(check_augment(cfg))
