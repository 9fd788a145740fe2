"""data2vec-audio (base, large): wav2vec2's CNN with per-frame layer norms, a stack of positional convs.

Its config has no ``apply_spec_augment``; the model reads it with ``getattr(config, ..., True)``, so setting
it on the config switches masking off like for the other wav2vec2-style families.
"""

from __future__ import annotations

from typing import Any

from wav2emo.backbones.families.conv_front_end import TINY_FRONT_END, ConvFrontEndBackbone
from wav2emo.backbones.family import register_family


@register_family
class Data2VecAudioBackbone(ConvFrontEndBackbone):
    family = "data2vec-audio"
    model_types = ("data2vec-audio",)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import Data2VecAudioConfig

        if stable:
            raise ValueError("data2vec-audio has one layout (per-frame layer norms, post-norm encoder); no `stable` variant")
        kw = {**TINY_FRONT_END, "feat_extract_norm": "layer", "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 5}
        return Data2VecAudioConfig(**{**kw, **overrides})
