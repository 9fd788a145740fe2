"""data2vec-audio (base, large): wav2vec2's CNN with per-frame layer norms, a stack of positional convs.

Batch invariance needs one more rule than wav2vec2's: its positional embedding is a stack of convolutions
(5 in base), and transformers zeroes the padded frames only before the first one, so from the second on the
padding of a batch leaks into a clip's last frames.  Each positional conv's output is zeroed past the clip's
own frames here (what the conv's zero padding gives the clip alone).

Its config has no ``apply_spec_augment``; the model reads it with ``getattr(config, ..., True)``, so setting
it on the config switches masking off like for the other wav2vec2-style families.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from wav2emo.backbones.families.conv_front_end import TINY_FRONT_END, ConvFrontEndBackbone
from wav2emo.backbones.family import frame_mask
from wav2emo.backbones.registry import register_family


@register_family
class Data2VecAudioBackbone(ConvFrontEndBackbone):
    family = "data2vec-audio"
    model_types = ("data2vec-audio",)

    def setup(self) -> None:
        super().setup()
        self._frames: list[int] | None = None
        for layer in self.model.encoder.pos_conv_embed.layers:
            layer.register_forward_hook(self._zero_padding)

    def _zero_padding(self, module: Any, inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
        if self._frames is None:
            return None
        return output * frame_mask(self._frames, output.shape[-1], output.device)[:, None, :].to(output.dtype)

    def hidden_states(self, x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        self._frames = [self.num_frames(int(n)) for n in lengths]
        try:
            return super().hidden_states(x, lengths)
        finally:
            self._frames = None

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        from transformers import Data2VecAudioConfig

        if stable:
            raise ValueError("data2vec-audio has one layout (per-frame layer norms, post-norm encoder); no `stable` variant")
        kw = {**TINY_FRONT_END, "feat_extract_norm": "layer", "conv_pos_kernel_size": 5, "num_conv_pos_embeddings": 5}
        return Data2VecAudioConfig(**{**kw, **overrides})
