"""Mean-pooled probing head (the SUPERB / EmoBox protocol): a single layer or a learned layer mix,
averaged over real frames, then a linear classifier (``hidden=[]``) or a small MLP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from wav2emo.models.pooling import FrameHead, masked_mean, mlp


class MeanLinear(FrameHead):
    """Layer mix -> masked mean over frames -> Linear (or MLP).  Choose one layer with the featurizer
    (``model.layers=k``: L=1, the mix is the identity) or mix several."""

    inputs: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        in_channels: int = 13,
        feature_dim: int = 768,
        num_classes: int = 8,
        hidden: Sequence[int] = (),
        dropout: float = 0.0,
        mix: str = "softmax",
        input_key: str = "ssl",
    ) -> None:
        super().__init__(in_channels, feature_dim, input_key, mix)
        self.classifier = mlp(self.feature_dim, hidden, num_classes, dropout)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = self.mixed_frames(batch)
        return self.classifier(masked_mean(x, mask))
