"""wav2vec2 (base, large, XLS-R): the first wav2vec2-style family (:mod:`.conv_front_end`)."""

from __future__ import annotations

from typing import Any

from wav2emo.backbones.families.conv_front_end import TINY_FRONT_END, ConvFrontEndBackbone
from wav2emo.backbones.registry import register_family


@register_family
class Wav2Vec2Backbone(ConvFrontEndBackbone):
    family = "wav2vec2"
    model_types = ("wav2vec2",)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import Wav2Vec2Config

        norm = {"feat_extract_norm": "layer" if stable else "group", "do_stable_layer_norm": stable}
        return Wav2Vec2Config(**{**TINY_FRONT_END, **norm, **overrides})
