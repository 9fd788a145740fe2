"""Train-mode regularisers of a backbone (layerdrop, SpecAugment-style masking): off unless our config says so.

Hugging Face's pretraining configs switch on regularisers that act in train mode only: ``layerdrop``
(0.1 in wav2vec2-base), ``mask_time_prob`` (0.05) with ``apply_spec_augment``.  A fine-tuning run that
inherits them silently does something its config does not say, so every load sets them explicitly
(off by default, see :data:`TRAIN_SWITCH_DEFAULTS`); the caller turns them on from ``conf/finetune``.
Each family maps these names onto its own config attributes (:attr:`Backbone.switch_attrs`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wav2emo.backbones.source import BackboneError

TRAIN_SWITCH_DEFAULTS: dict[str, Any] = {
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "apply_spec_augment": False,
}


def train_switches(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults with ``overrides`` applied, validated (unknown names and out-of-range values refused)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TRAIN_SWITCH_DEFAULTS))
    if unknown:
        raise BackboneError(f"backbone train switches {unknown}: unknown; expected some of {sorted(TRAIN_SWITCH_DEFAULTS)}")
    out = {**TRAIN_SWITCH_DEFAULTS, **overrides}
    for name in ("layerdrop", "mask_time_prob", "mask_feature_prob"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
            raise BackboneError(f"backbone switch {name}={value!r}: expected a probability in [0, 1)")
        out[name] = float(value)
    if not isinstance(out["apply_spec_augment"], bool):
        raise BackboneError(f"backbone switch apply_spec_augment={out['apply_spec_augment']!r}: expected true or false")
    return out


def masking(switches: Mapping[str, Any]) -> bool:
    """Whether the switches ask the backbone to mask its features in train mode (SpecAugment inside the model)."""
    return bool(switches["apply_spec_augment"]) and (switches["mask_time_prob"] > 0 or switches["mask_feature_prob"] > 0)
