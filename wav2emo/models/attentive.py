"""Attentive statistics pooling (Okabe et al., 2018) over a learned layer mix, then an MLP.

Each frame gets a scalar attention score; the softmax runs over the real frames only, and the pooled
vector is the attention-weighted mean and standard deviation of the (optionally projected) frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.models.pooling import FrameHead, mlp


class AttentiveStatsPool(nn.Module):
    """(B, T, F) + mask (B, T) -> (B, 2F): attention-weighted mean and std over real frames."""

    def __init__(self, dim: int, attention_dim: int = 128, eps: float = 1e-6) -> None:
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(dim, attention_dim), nn.Tanh(), nn.Linear(attention_dim, 1))
        self.eps = eps

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = h.masked_fill(~mask.unsqueeze(-1), 0)  # NaN/inf in padding must not reach the sums
        scores = self.attention(h).squeeze(-1).float().masked_fill(~mask, float("-inf"))
        alpha = scores.softmax(dim=1).to(h.dtype).unsqueeze(-1)  # exactly 0 on padding
        mean = (alpha * h).sum(dim=1)
        var = (alpha * h * h).sum(dim=1) - mean * mean
        return torch.cat([mean, var.clamp_min(self.eps).sqrt()], dim=-1)


class Attentive(FrameHead):
    """Layer mix -> optional per-frame Linear+ReLU (``frame_dim``) -> attentive stats pooling -> MLP."""

    inputs: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        in_channels: int = 13,
        feature_dim: int = 768,
        num_classes: int = 8,
        frame_dim: int | None = 256,
        attention_dim: int = 128,
        hidden: Sequence[int] = (128,),
        dropout: float = 0.1,
        mix: str = "softmax",
        input_key: str = "ssl",
    ) -> None:
        super().__init__(in_channels, feature_dim, input_key, mix)
        if frame_dim is None:
            self.frame_proj: nn.Module = nn.Identity()
            width = self.feature_dim
        else:
            self.frame_proj = nn.Sequential(nn.Linear(self.feature_dim, int(frame_dim)), nn.ReLU())
            width = int(frame_dim)
        self.pool = AttentiveStatsPool(width, attention_dim)
        self.classifier = mlp(2 * width, hidden, num_classes, dropout)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = self.mixed_frames(batch)
        x = x.masked_fill(~mask.unsqueeze(-1), 0)
        return self.classifier(self.pool(self.frame_proj(x), mask))
