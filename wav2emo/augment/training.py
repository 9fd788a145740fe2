"""From an :class:`Augmenter` to the two training hooks of ``EmotionClassifier``.

* ``train_transform(batch, generator) -> batch`` runs in ``on_after_batch_transfer`` on training batches
  only (on the device): the waveform part on ``wave`` (online mode), and the feature masks on the cached
  features the batch already holds - when the model has no upstream.
* ``feature_transform(batch, generator) -> batch`` runs after the upstream (training steps only), so
  features the upstream computes from the (augmented) waveform - SSL hidden states, log-mel from
  ``LogMelFrontend`` - get SpecAugment too.  With an upstream, the masks run there and not in the hook,
  so no feature is masked twice (top-k fine-tuning rewrites cached ``ssl``: masks apply to what it outputs).

In cached mode the copies already carry the waveform part; the hook only applies the feature masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from wav2emo.augment.compose import Augmenter
from wav2emo.augment.config import build_augment
from wav2emo.errors import ConfigError


class WaveAndFeatures:
    """``train_transform``: the waveform part (online mode) and, without an upstream, the feature masks."""

    def __init__(self, augmenter: Augmenter, wave: bool, features: bool) -> None:
        self.augmenter, self.wave, self.features = augmenter, wave, features

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict:
        out = dict(batch)
        aug = self.augmenter
        if self.wave and aug.wave.steps:
            if "wave" not in batch:
                raise ValueError(f"augment {aug.config.get('name')!r} (online) transforms waveforms but the "
                                 f"training batch has no 'wave' (keys {sorted(batch)})")
            out["wave"], out["wave_lengths"] = aug.wave(batch["wave"], batch["wave_lengths"], generator)
        if self.features and aug.features.steps:
            out = apply_features(aug, out, generator)
        return out


def apply_features(aug: Augmenter, batch: Mapping[str, Any], generator: torch.Generator) -> dict:
    """SpecAugment (the feature part) on every ``feature_keys`` entry present in ``batch``."""
    keys = [k for k in aug.feature_keys if k in batch]
    if not keys:
        raise ValueError(f"augment {aug.config.get('name')!r} masks features {aug.feature_keys} but the model's "
                         f"training batch has none of them (keys {sorted(batch)}); set augment.feature_keys")
    out = dict(batch)
    for key in keys:
        out[key] = aug.features(batch[key], batch[f"{key}_mask"], generator)
    return out


class FeatureMasks:
    """``feature_transform``: the feature masks on what the upstream computed."""

    def __init__(self, augmenter: Augmenter) -> None:
        self.augmenter = augmenter

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict:
        return apply_features(self.augmenter, batch, generator)


def training_transforms(augmenter: Augmenter | Mapping | None, *, has_upstream: bool):
    """``(train_transform, feature_transform)`` for ``EmotionClassifier`` (each None when there is nothing to do)."""
    if augmenter is None or isinstance(augmenter, Mapping) or hasattr(augmenter, "_metadata"):
        augmenter = build_augment(augmenter)
    if augmenter.is_identity:
        return None, None
    wave = augmenter.mode == "online" and bool(augmenter.wave.steps)
    in_hook = bool(augmenter.features.steps) and not has_upstream
    train = WaveAndFeatures(augmenter, wave, in_hook) if (wave or in_hook) else None
    feats = FeatureMasks(augmenter) if augmenter.features.steps and has_upstream else None
    return train, feats


def check_inputs(augmenter: Augmenter, inputs: tuple[str, ...]) -> None:
    """Before any extraction or training: online waveform transforms need the model to read ``wave``."""
    if augmenter.mode == "online" and augmenter.wave.steps and "wave" not in inputs:
        raise ConfigError(
            f"augment={augmenter.config.get('name')!r} (mode online) transforms waveforms, but the model reads "
            f"{list(inputs)} from the feature cache, not 'wave': feed the model waveforms and an upstream "
            "(finetune or a frontend), use augment.mode=cached, or a feature-only augment such as augment=spec"
        )
