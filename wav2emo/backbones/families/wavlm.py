"""WavLM (base, base-plus, large): wav2vec2's front end, gated relative position bias computed by layer 1
and handed to the others (:func:`wav2emo.backbones.encoder.run_layers` recomputes it when starting higher)."""

from __future__ import annotations

from typing import Any

from wav2emo.backbones.families.conv_front_end import TINY_FRONT_END, ConvFrontEndBackbone
from wav2emo.backbones.registry import register_family


@register_family
class WavLMBackbone(ConvFrontEndBackbone):
    family = "wavlm"
    model_types = ("wavlm",)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import WavLMConfig

        norm = {"feat_extract_norm": "layer" if stable else "group", "do_stable_layer_norm": stable}
        return WavLMConfig(**{**TINY_FRONT_END, **norm, "num_buckets": 16, "max_bucket_distance": 40, **overrides})
