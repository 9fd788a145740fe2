"""Building blocks shared by the nets: the reference CNN's conv block and batch-input handling."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from wav2emo.models.fused_batchnorm import FusedBatchNorm2d

CHANNEL_MULTIPLE = 8  # cuDNN's tensor-core convolution kernels want channel counts in multiples of 8


class ChannelPaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` that on a GPU zero-pads its input channels (and weight) to a multiple of 8.

    With 12 stacked layers as input channels cuDNN falls back to a generic kernel that took 1.8 ms of a
    15 ms step on an H100; padded to 16 it runs tensor-core kernels (benchmarks/step_variants.py).  Zero
    channels against zero weights add nothing, the parameters and the state_dict are those of the
    plain ``nn.Conv2d``, and on a CPU the forward is exactly the plain one.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = -self.in_channels % CHANNEL_MULTIPLE
        if pad == 0 or not x.is_cuda or self.groups != 1:
            return super().forward(x)
        weight = F.pad(self.weight, (0, 0, 0, 0, 0, pad))
        return self._conv_forward(F.pad(x, (0, 0, 0, 0, 0, pad)), weight, self.bias)


class ConvBlock(nn.Sequential):
    """``n_convs`` x (conv3x3 pad 1 -> BatchNorm2d -> ReLU), then MaxPool2d(3).

    The convolutions have no bias: the BatchNorm right after subtracts the per-channel mean, which would
    cancel any bias anyway (the usual DoubleConv layout). With ``fused_batchnorm``, training on a GPU runs each batch
    norm and the ReLU after it as fused passes (:mod:`wav2emo.models.fused_batchnorm`; ``nn.BatchNorm2d``'s
    parameters and state_dict).
    """

    def __init__(self, in_channels: int, out_channels: int, n_convs: int = 2, pool: int = 3,
                 fused_batchnorm: bool = False) -> None:
        if n_convs < 1:
            raise ValueError(f"ConvBlock needs at least one convolution, got n_convs={n_convs}")
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [
                ChannelPaddedConv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=False),
                FusedBatchNorm2d(out_channels, fused=fused_batchnorm),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.MaxPool2d(pool))
        super().__init__(*layers)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv -> BN -> ReLU ... -> conv -> BN -> pool -> ReLU: the last ReLU runs after the pooling.

        Max-pooling and ReLU commute (ReLU is monotone, and a window whose maximum is <= 0 passes no gradient
        either way), so values and gradients are exactly those of the layers in their listed order, while the
        last ReLU and its backward touch a ninth of the elements (the first block's full-resolution activations
        are the step's main memory traffic; tests/test_models.py checks the equality).
        """
        *body, relu, pool = self
        i = 0
        while i < len(body):
            layer = body[i]
            if isinstance(layer, FusedBatchNorm2d) and i + 1 < len(body) and isinstance(body[i + 1], nn.ReLU):
                x, i = layer.forward_relu(x), i + 2  # batch norm and its ReLU in one pass
            else:
                x, i = layer(x), i + 1
        return relu(pool(x))


def module_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype of a module's parameters (inputs are cast to it: caches hold float16)."""
    for p in module.parameters():
        if p.is_floating_point():
            return p.dtype
    return torch.get_default_dtype()


FRAME_INPUTS = ("ssl", "logmel")  # frame-level inputs a CNN reads as an image (B, C, T, F)


def frame_inputs(
    batch: Mapping[str, Any], key: str, in_channels: int, feature_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The frame-level input ``key`` as an image (B, C, T, F) cast to ``dtype``, and its mask (B, T) or None.

    ``ssl`` is (B, L, T, D) as it comes from the featurizer; ``logmel`` (B, T, M) is one channel.
    """
    if key not in FRAME_INPUTS:
        raise ValueError(f"frame input must be one of {FRAME_INPUTS}, got {key!r}")
    if key == "ssl":
        return ssl_inputs(batch, in_channels, feature_dim, dtype)
    if "logmel" not in batch:
        raise KeyError(f"batch has no 'logmel' entry (keys: {sorted(batch)})")
    x = batch["logmel"]
    if x.dim() != 3 or in_channels != 1 or x.shape[2] != feature_dim:
        raise ValueError(
            f"logmel must have shape (B, T, M={feature_dim}) read as 1 channel (in_channels=1, got "
            f"{in_channels}), got {tuple(x.shape)}; feature_dim must match the log-mel cache's n_mels"
        )
    return _with_mask(x[:, None].to(dtype), batch.get("logmel_mask"), "logmel_mask")


def ssl_inputs(
    batch: Mapping[str, Any], in_channels: int, feature_dim: int, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validated ``ssl`` (B, L, T, D) cast to ``dtype`` and its ``ssl_mask`` (B, T) bool, or None.

    A missing mask means every frame is real.
    """
    if "ssl" not in batch:
        raise KeyError(f"batch has no 'ssl' entry (keys: {sorted(batch)})")
    x = batch["ssl"]
    if x.dim() != 4 or x.shape[1] != in_channels or x.shape[3] != feature_dim:
        raise ValueError(
            f"ssl must have shape (B, L={in_channels}, T, D={feature_dim}), got {tuple(x.shape)}; "
            "in_channels/feature_dim must match the featurizer's layers and the feature cache"
        )
    return _with_mask(x.to(dtype), batch.get("ssl_mask"), "ssl_mask")


def _with_mask(x: torch.Tensor, mask: torch.Tensor | None, name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    if mask is not None:
        if mask.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"{name} must have shape (B, T) = {(x.shape[0], x.shape[2])}, got {tuple(mask.shape)}")
        mask = mask.to(device=x.device, dtype=torch.bool)
    return x, mask
