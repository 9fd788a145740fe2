"""HuBERT (base, large): wav2vec2's front end and encoder, trained on cluster targets (:mod:`.conv_front_end`)."""

from __future__ import annotations

from typing import Any

from wav2emo.backbones.families.conv_front_end import TINY_FRONT_END, ConvFrontEndBackbone
from wav2emo.backbones.registry import register_family


@register_family
class HubertBackbone(ConvFrontEndBackbone):
    family = "hubert"
    model_types = ("hubert",)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import HubertConfig

        norm = {"feat_extract_norm": "layer" if stable else "group", "do_stable_layer_norm": stable}
        return HubertConfig(**{**TINY_FRONT_END, **norm, **overrides})
