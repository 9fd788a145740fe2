"""A learned weighted average of all hidden states, after Pepino et al. (2021).

Unlike the CNN, every operation before pooling is per frame and the pooling averages real frames only,
so the output does not depend on how a clip was padded inside its batch. Built from the frame-level heads'
pieces (:mod:`wav2emo.models.pooling`): an ``abs`` layer mix, a per-frame MLP, the masked mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wav2emo.models.blocks import module_dtype, ssl_inputs
from wav2emo.models.pooling import LayerMix, masked_mean, mlp, real_frame_mask


class LayerWeighted(nn.Module):
    """|w|/sum|w|-weighted sum of the L hidden states -> per-frame MLP -> masked mean -> Linear."""

    inputs: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        in_channels: int = 13,
        feature_dim: int = 768,
        num_classes: int = 8,
        hidden: int = 128,
        num_hidden_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        self.in_channels, self.feature_dim = int(in_channels), int(feature_dim)
        self.mix = LayerMix(self.in_channels, "abs")  # equal initial weights: the plain average of all states
        layers = mlp(self.feature_dim, [int(hidden)] * int(num_hidden_layers), num_classes, dropout)
        self.frame_mlp = nn.Sequential(*list(layers)[:-1])  # per frame, before pooling
        self.classifier = layers[-1]  # after pooling

    def normalized_weights(self) -> torch.Tensor:
        """|w| / sum |w| (differentiable)."""
        return self.mix.normalized_weights()

    @property
    def layer_weights(self) -> torch.Tensor:
        """The normalised per-layer weights (detached, on CPU, float32) for reports."""
        return self.mix.layer_weights

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = ssl_inputs(batch, self.in_channels, self.feature_dim, module_dtype(self))
        mask = real_frame_mask(mask, x.shape[0], x.shape[2], x.device)
        return self.classifier(masked_mean(self.frame_mlp(self.mix(x)), mask))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # Checkpoints written before the layer mix was shared hold the weights as `layer_logits`.
        old = prefix + "layer_logits"
        if old in state_dict:
            state_dict[prefix + "mix.layer_logits"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
