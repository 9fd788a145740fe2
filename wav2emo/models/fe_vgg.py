"""The reference VGG-like CNN over stacked wav2vec2 hidden states, and its eGeMAPS fusion.

The stacked hidden states (B, L, T, D) are read as an L-channel image of T frames x D dims.
``head="reference"`` reproduces the original flatten head (fixed 263 x 768 inputs only);
``head="adaptive"`` average-pools the last feature map to the reference's 3 x 9 so any clip length works
with the same number of parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wav2emo.models.blocks import FRAME_INPUTS, ConvBlock, frame_inputs, module_dtype
from wav2emo.models.standardizer import Standardizer

HEADS = ("reference", "adaptive")
POOL = 3


def pooled_length(n: int, n_blocks: int, pool: int = POOL) -> int:
    """Size of an axis of length ``n`` after ``n_blocks`` MaxPool(pool) layers (floor division each)."""
    for _ in range(n_blocks):
        n //= pool
    return n


class FeVGGEncoder(nn.Module):
    """Conv stack + head up to the ``hidden``-unit Linear -> ReLU embedding (shared by FeVGG and fusion)."""

    def __init__(
        self,
        in_channels: int = 12,
        widths: Sequence[int] = (24, 48, 96, 192),
        convs_per_block: Sequence[int] = (2, 2, 3, 3),
        hidden: int = 64,
        head: str = "adaptive",
        input_frames: int = 263,
        feature_dim: int = 768,
        pooled_size: Sequence[int] = (3, 9),
        input_key: str = "ssl",
        fused_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        if input_key not in FRAME_INPUTS:
            raise ValueError(f"FeVGG input_key must be one of {FRAME_INPUTS}, got {input_key!r}")
        self.input_key = input_key
        widths, convs_per_block = tuple(int(w) for w in widths), tuple(int(c) for c in convs_per_block)
        if head not in HEADS:
            raise ValueError(f"FeVGG head must be one of {HEADS}, got {head!r}")
        if len(widths) != len(convs_per_block) or not widths:
            raise ValueError(
                f"widths {widths} and convs_per_block {convs_per_block} must be non-empty and of equal length"
            )
        self.in_channels, self.feature_dim, self.head = int(in_channels), int(feature_dim), head
        self.input_frames = int(input_frames)
        chans = (self.in_channels, *widths)
        self.blocks = nn.Sequential(
            *(ConvBlock(chans[i], chans[i + 1], n, fused_batchnorm=fused_batchnorm)
              for i, n in enumerate(convs_per_block))
        )
        # Four MaxPool(3) collapse any axis shorter than 3**4 = 81: the adaptive head zero-pads up to it.
        self.min_size = POOL ** len(widths)
        if head == "reference":
            out_t, out_d = (
                pooled_length(self.input_frames, len(widths)),
                pooled_length(self.feature_dim, len(widths)),
            )
            if out_t < 1 or out_d < 1:
                raise ValueError(
                    f"reference head: a {self.input_frames} x {self.feature_dim} input collapses to "
                    f"{out_t} x {out_d} after {len(widths)} MaxPool({POOL}); need at least {self.min_size} per axis"
                )
            self.pool: nn.Module = nn.Identity()
        else:
            out_t, out_d = (int(s) for s in pooled_size)
            self.pool = nn.AdaptiveAvgPool2d((out_t, out_d))
        self.flat_dim = widths[-1] * out_t * out_d
        self.fc = nn.Linear(self.flat_dim, hidden)
        self.hidden = hidden

    def compile_targets(self) -> list[nn.Module]:
        """What ``EmotionClassifier(compile=...)`` compiles: the conv stack, not the length-dependent head."""
        return [self.blocks]

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = frame_inputs(batch, self.input_key, self.in_channels, self.feature_dim, module_dtype(self))
        if self.head == "reference" and x.shape[2] != self.input_frames:
            raise ValueError(
                f"FeVGG(head='reference') accepts only {self.in_channels} x {self.input_frames} x "
                f"{self.feature_dim} inputs (channels x frames x dims), got {tuple(x.shape[1:])}; "
                "set frames to the reference length or use head='adaptive'"
            )
        if mask is not None:
            # Masked frames become zeros: the reference zero-padded every clip to the longest one.
            # masked_fill, not a product: NaN/inf in padding would survive multiplication by 0.
            x = x.masked_fill(~mask[:, None, :, None], 0)
        if self.head == "adaptive":
            pad_t, pad_d = max(0, self.min_size - x.shape[2]), max(0, self.min_size - x.shape[3])
            if pad_t or pad_d:
                x = F.pad(x, (0, pad_d, 0, pad_t))
        if x.is_cuda:  # channels-last: see EmotionClassifier._use_channels_last
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.pool(self.blocks(x))
        return F.relu(self.fc(torch.flatten(x, 1)))


class FeVGG(nn.Module):
    """The reference ``fe_vgg``: CNN -> Linear(hidden) -> ReLU -> Dropout -> Linear(num_classes).

    ``input_key="logmel"`` reads a log-mel spectrogram (B, T, M) as a one-channel image instead.
    """

    inputs: tuple[str, ...] = ("ssl",)

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 8,
        widths: Sequence[int] = (24, 48, 96, 192),
        convs_per_block: Sequence[int] = (2, 2, 3, 3),
        hidden: int = 64,
        dropout: float = 0.1,
        head: str = "adaptive",
        input_frames: int = 263,
        feature_dim: int = 768,
        pooled_size: Sequence[int] = (3, 9),
        input_key: str = "ssl",
        fused_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = FeVGGEncoder(
            in_channels, widths, convs_per_block, hidden, head, input_frames, feature_dim, pooled_size, input_key,
            fused_batchnorm,
        )
        self.inputs = (input_key,)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_classes)

    @property
    def flat_dim(self) -> int:
        return self.encoder.flat_dim

    def embed(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The (B, hidden) representation after the Linear -> ReLU, before dropout and the classifier."""
        return self.encoder(batch)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(batch)))


class FeVGGEgemaps(nn.Module):
    """The reference ``fe_vgg_eGeMAPS`` fusion.

    CNN embedding (hidden) and eGeMAPS branch Standardizer -> Linear(egemaps_dim, egemaps_hidden) -> ReLU,
    concatenated -> Linear(fusion_hidden) -> ReLU -> Dropout -> Linear(num_classes).
    """

    inputs: tuple[str, ...] = ("ssl", "egemaps")

    def __init__(
        self,
        in_channels: int = 12,
        num_classes: int = 8,
        egemaps_dim: int = 88,
        widths: Sequence[int] = (24, 48, 96, 192),
        convs_per_block: Sequence[int] = (2, 2, 3, 3),
        hidden: int = 64,
        dropout: float = 0.1,
        head: str = "adaptive",
        input_frames: int = 263,
        feature_dim: int = 768,
        pooled_size: Sequence[int] = (3, 9),
        egemaps_hidden: int = 64,
        fusion_hidden: int = 64,
        fused_batchnorm: bool = False,
    ) -> None:
        super().__init__()
        self.encoder = FeVGGEncoder(
            in_channels, widths, convs_per_block, hidden, head, input_frames, feature_dim, pooled_size,
            fused_batchnorm=fused_batchnorm,
        )
        self.egemaps_norm = Standardizer(egemaps_dim, input_name="egemaps")
        self.egemaps_fc = nn.Linear(egemaps_dim, egemaps_hidden)
        self.fusion = nn.Linear(hidden + egemaps_hidden, fusion_hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(fusion_hidden, num_classes)

    def embed(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The (B, fusion_hidden) fused representation, before dropout and the classifier."""
        if "egemaps" not in batch:
            raise KeyError(f"FeVGGEgemaps needs batch['egemaps'] (keys: {sorted(batch)})")
        g = self.egemaps_norm(batch["egemaps"]).to(module_dtype(self))
        g = F.relu(self.egemaps_fc(g))
        return F.relu(self.fusion(torch.cat([self.encoder(batch), g], dim=1)))

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return self.classifier(self.dropout(self.embed(batch)))
