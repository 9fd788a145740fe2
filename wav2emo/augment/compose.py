"""Chaining transforms, each applied to a random subset of the batch, and the batch-level ``Augmenter``.

``Compose`` draws, for every transform in turn, one Bernoulli(p) per example and runs the transform on the
chosen rows only (so p = 0 leaves the batch untouched and p = 1 augments every example). ``Augmenter`` is what
the training hook calls: ``augmenter(batch, generator) -> batch`` (a new dict; the input is not modified),
with waveform transforms applied to ``wave``/``wave_lengths`` and feature masks to ``<key>``/``<key>_mask``.
The caller runs it on training batches only; dev, test and predict batches are never augmented.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from wav2emo.augment.base import WaveTransform, check_wave_batch, length_mask, pad_to, rand


class Compose:
    """``[(name, transform, p), ...]`` applied in order, each to the examples whose Bernoulli(p) fired."""

    def __init__(self, steps: Sequence[tuple[str, WaveTransform, float]]) -> None:
        self.steps = list(steps)

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_wave_batch(wave, lengths, "augment")
        for _name, transform, p in self.steps:
            chosen = rand(wave.shape[0], generator, wave.device) < p
            if not bool(chosen.any()):
                continue
            if bool(chosen.all()):
                wave, lengths = transform(wave, lengths, generator)
                continue
            rows = chosen.nonzero().flatten()
            sub, sub_len = transform(wave.index_select(0, rows), lengths.index_select(0, rows), generator)
            lengths = lengths.clone()
            lengths[rows] = sub_len
            width = max(1, int(lengths.max()))
            wave = pad_to(wave, width).clone()
            wave[rows] = pad_to(sub, width)
            wave = wave * length_mask(lengths, width)
        return wave, lengths


class FeatureCompose:
    """Like :class:`Compose` for frame features with a mask (SpecAugment); the mask never changes."""

    def __init__(self, steps: Sequence[tuple[str, Any, float]]) -> None:
        self.steps = list(steps)

    def __call__(self, feats: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for _name, transform, p in self.steps:
            chosen = rand(feats.shape[0], generator, feats.device) < p
            if not bool(chosen.any()):
                continue
            out = transform(feats, mask, generator)
            shape = (-1,) + (1,) * (feats.dim() - 1)
            feats = torch.where(chosen.view(shape), out, feats)
        return feats


class Augmenter:
    """The training-time augmentation of one config: ``augmenter(batch, generator) -> batch``."""

    def __init__(self, wave: Compose, features: FeatureCompose, feature_keys: Sequence[str],
                 config: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
        self.wave = wave
        self.features = features
        self.feature_keys = list(feature_keys)
        self.config = dict(config)
        self._identity = dict(identity)

    @property
    def mode(self) -> str:
        return self.config["mode"]

    @property
    def copies(self) -> int:
        return int(self.config["copies"])

    @property
    def is_identity(self) -> bool:
        """True when nothing would change (``augment=none``): callers may skip the hook."""
        return not self.wave.steps and not self.features.steps

    def identity(self) -> dict:
        """Everything that changes the augmented numbers (resolved grid, fractions, noise files), for cache keys."""
        return dict(self._identity)

    def __call__(self, batch: Mapping[str, Any], generator: torch.Generator) -> dict:
        out = dict(batch)
        if self.wave.steps:
            if "wave" not in batch or "wave_lengths" not in batch:
                raise ValueError(f"augment {self.config.get('name')!r} transforms waveforms but the batch has no "
                                 f"'wave'/'wave_lengths' (keys: {sorted(batch)}); use waveform inputs or a "
                                 "feature-only augment config such as augment=spec")
            out["wave"], out["wave_lengths"] = self.wave(batch["wave"], batch["wave_lengths"], generator)
        if self.features.steps:
            keys = [k for k in self.feature_keys if k in batch]
            if not keys:
                raise ValueError(f"augment {self.config.get('name')!r} masks features {self.feature_keys} but the "
                                 f"batch has none of them (keys: {sorted(batch)})")
            for key in keys:
                out[key] = self.features(batch[key], batch[f"{key}_mask"], generator)
        return out
