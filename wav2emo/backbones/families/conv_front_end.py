"""What the wav2vec2-style families share: a CNN feature encoder on the raw wave (320x downsampling: 50 frames
a second at 16 kHz), then a transformer encoder (``model.encoder.layers``).

Batch invariance: the masked group norm (:class:`wav2emo.backbones.invariance.BatchInvariance`) plus the
attention mask, so a clip's frames never depend on the clips padded into its batch.  Layer ranges for
top-k fine-tuning: :func:`wav2emo.backbones.encoder.run_layers`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.backbones.encoder import encoder_layers, is_stable_layer_norm, run_layers
from wav2emo.backbones.family import Backbone, hop_of
from wav2emo.backbones.fixed_shapes import host_to_device
from wav2emo.backbones.invariance import BatchInvariance, conv_output_length, conv_receptive_field

# wav2vec2's real front end (320x downsampling: 50 frames/s, 400-sample receptive field) with toy width and depth.
TINY_FRONT_END: dict[str, Any] = dict(
    conv_dim=(32,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    vocab_size=8,
)


class ConvFrontEndBackbone(Backbone):
    """wav2vec2, HuBERT, WavLM, data2vec-audio: raw wave in (normalised per clip if the preprocessor says so)."""

    layer_prefix = "encoder.layers."
    front_end_prefixes = ("feature_extractor.",)
    cache_advice = "base (12 layers, 768): all 13 states per frame fit; large (24 x 1024): keep a layer subset or pool"

    def setup(self) -> None:
        self.invariance = BatchInvariance(self.model)

    @property
    def hop(self) -> int:
        return hop_of(self.config.conv_stride)

    @property
    def receptive_field(self) -> int:
        return conv_receptive_field(self.config.conv_kernel, self.config.conv_stride)

    def num_frames(self, num_samples: int) -> int:
        return conv_output_length(num_samples, self.config.conv_kernel, self.config.conv_stride)

    def layers(self) -> nn.ModuleList:
        return encoder_layers(self.model)

    def hidden_states(self, x: torch.Tensor, lengths: Sequence[int]) -> list[torch.Tensor]:
        n = host_to_device(lengths, x.device)
        x = x.to(next(self.model.feature_extractor.parameters()).dtype)  # a bf16-true model takes a bf16 wave
        valid = (torch.arange(x.shape[1], device=x.device)[None, :] < n[:, None]).long()
        with self.invariance.lengths([int(v) for v in lengths]):
            out = self.model(x, attention_mask=valid, output_hidden_states=True)
        return list(out.hidden_states)

    def run_layers(self, hidden: torch.Tensor, mask: torch.Tensor | None, start: int, stop: int) -> list[torch.Tensor]:
        return run_layers(self.model, hidden, mask, start, stop)

    def front_end(self) -> nn.Module:
        return self.model.feature_extractor

    def full_prefixes(self, masking: bool) -> tuple[str, ...]:
        prefixes = ["feature_projection.", "encoder.pos_conv_embed.", "encoder.layers."]
        if not is_stable_layer_norm(self.model):  # pre-norm layouts norm last_hidden_state only: unused here
            prefixes.append("encoder.layer_norm.")
        if masking:
            prefixes.append("masked_spec_embed")
        return tuple(prefixes)

    @classmethod
    def tiny_config(cls, stable: bool = False, **overrides: Any) -> Any:
        """A toy config of this family: the real front end, toy width and depth (``stable``: the large layout)."""
        raise NotImplementedError
