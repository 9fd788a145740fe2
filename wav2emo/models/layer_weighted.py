"""A learned weighted average of all hidden states, after Pepino et al. (2021).

Unlike the CNN, every operation before pooling is per frame and the pooling averages real frames only,
so the output does not depend on how a clip was padded inside its batch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from wav2emo.models.blocks import module_dtype, ssl_inputs


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
        # Equal initial weights: the start is the plain average of all hidden states.
        self.layer_logits = nn.Parameter(torch.ones(self.in_channels))
        layers: list[nn.Module] = []
        width = self.feature_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
            width = hidden
        self.frame_mlp = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def normalized_weights(self) -> torch.Tensor:
        """|w| / sum |w| (differentiable); the eps guards the all-zero case."""
        w = self.layer_logits.abs()
        return w / w.sum().clamp_min(1e-12)

    @property
    def layer_weights(self) -> torch.Tensor:
        """The normalised per-layer weights (detached, on CPU, float32) for reports."""
        return self.normalized_weights().detach().float().cpu()

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = ssl_inputs(batch, self.in_channels, self.feature_dim, module_dtype(self))
        w = self.normalized_weights().to(x.dtype)
        h = self.frame_mlp(torch.einsum("l,bltd->btd", w, x))  # (B, T, hidden)
        if mask is None:
            return self.classifier(h.mean(dim=1))
        m = mask.to(h.dtype).unsqueeze(-1)
        counts = m.sum(dim=1)
        if (counts == 0).any():
            empty = torch.nonzero(counts.squeeze(-1) == 0).flatten().tolist()
            raise ValueError(f"ssl_mask has no real frame for batch rows {empty}")
        # masked_fill rather than multiplication: NaN/inf in padding must not leak into the sum.
        pooled = h.masked_fill(~mask.unsqueeze(-1), 0).sum(dim=1) / counts
        return self.classifier(pooled)
