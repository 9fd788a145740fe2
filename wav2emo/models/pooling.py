"""Pieces shared by the frame-level heads (lstm, attentive, mean_linear): a learned layer mix, masked
pooling over real frames only, and a small MLP classifier.

Every operation here is per frame or a reduction over the frames the mask marks real, so a clip's
output never depends on how long the other clips of its batch were (padding invariance).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from wav2emo.models.blocks import FRAME_INPUTS, frame_inputs, module_dtype

MIX_MODES = ("softmax", "abs")


class LayerMix(nn.Module):
    """A learned weighted sum of the L layers the featurizer picked: (B, L, T, D) -> (B, T, D).

    ``softmax`` (s3prl's featurizer) or ``abs`` (|w|/sum|w|, as :class:`LayerWeighted`).  Both start at
    the plain average.  With L=1 (one layer, or log-mel) it is the identity times 1.
    """

    def __init__(self, num_layers: int, mode: str = "softmax") -> None:
        super().__init__()
        if mode not in MIX_MODES:
            raise ValueError(f"layer mix mode must be one of {MIX_MODES}, got {mode!r}")
        if int(num_layers) < 1:
            raise ValueError(f"LayerMix needs at least one layer, got num_layers={num_layers}")
        self.mode = mode
        self.num_layers = int(num_layers)
        init = torch.zeros if mode == "softmax" else torch.ones
        self.layer_logits = nn.Parameter(init(self.num_layers))

    def normalized_weights(self) -> torch.Tensor:
        if self.mode == "softmax":
            return self.layer_logits.softmax(dim=0)
        w = self.layer_logits.abs()
        return w / w.sum().clamp_min(1e-12)

    @property
    def layer_weights(self) -> torch.Tensor:
        """The normalised per-layer weights (detached, CPU, float32) for reports."""
        return self.normalized_weights().detach().float().cpu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.num_layers:
            raise ValueError(f"LayerMix expects (B, L={self.num_layers}, T, D), got {tuple(x.shape)}")
        if self.num_layers == 1:
            return x[:, 0]
        return torch.einsum("l,bltd->btd", self.normalized_weights().to(x.dtype), x)


def real_frame_mask(mask: torch.Tensor | None, batch: int, frames: int, device: torch.device) -> torch.Tensor:
    """The (B, T) bool mask of real frames (all True when the batch has none); refuses an empty row."""
    if mask is None:
        return torch.ones(batch, frames, dtype=torch.bool, device=device)
    counts = mask.sum(dim=1)
    if (counts == 0).any():
        empty = torch.nonzero(counts == 0).flatten().tolist()
        raise ValueError(f"the frame mask has no real frame for batch rows {empty}")
    return mask


def masked_mean(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, T, F) over the real frames of ``mask`` (B, T); NaN/inf in padding never leaks in."""
    m = mask.unsqueeze(-1)
    return h.masked_fill(~m, 0).sum(dim=1) / m.sum(dim=1).to(h.dtype)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout per hidden width, then Linear; ``hidden=[]`` is a linear classifier."""
    layers: list[nn.Module] = []
    width = int(in_dim)
    for h in hidden:
        layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(dropout)]
        width = int(h)
    layers.append(nn.Linear(width, int(out_dim)))
    return nn.Sequential(*layers)


class FrameHead(nn.Module):
    """Base of the frame-level heads: reads ``input_key`` ('ssl' (B, L, T, D) from the featurizer, or
    'logmel' (B, T, M) as L=1) and mixes its layers; subclasses pool and classify."""

    def __init__(self, in_channels: int, feature_dim: int, input_key: str, mix: str) -> None:
        super().__init__()
        if input_key not in FRAME_INPUTS:
            raise ValueError(f"input_key must be one of {FRAME_INPUTS}, got {input_key!r}")
        self.input_key = input_key
        self.inputs = (input_key,)  # instance attribute: the batch key this head reads
        self.in_channels, self.feature_dim = int(in_channels), int(feature_dim)
        self.mix = LayerMix(self.in_channels, mix)

    @property
    def layer_weights(self) -> torch.Tensor:
        return self.mix.layer_weights

    def mixed_frames(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) layer-mixed frames in the module's dtype and the (B, T) real-frame mask."""
        x, mask = frame_inputs(batch, self.input_key, self.in_channels, self.feature_dim, module_dtype(self))
        mask = real_frame_mask(mask, x.shape[0], x.shape[2], x.device)
        return self.mix(x), mask
