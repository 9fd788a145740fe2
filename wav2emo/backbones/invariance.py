"""Batch invariance: padding a batch must not change any clip's hidden states.

Why it needs work: wav2vec2-base normalises its first conv layer with GroupNorm(512 groups, 512
channels), i.e. per channel over the *whole time axis*.  Zero-padding a clip to the longest clip of its
batch therefore changes its statistics, and every frame of every clip then depends on which clips shared
the batch (transformers PR 10117).  :class:`BatchInvariance` replaces that GroupNorm by
:class:`MaskedGroupNorm`, which takes the statistics over each clip's valid frames only; with the
attention mask (HF zeroes padded frames before the positional conv and masks them in attention) a clip's
features are then the same, up to float rounding, whatever batch it is in.  "Layer"-norm backbones
(large, XLSR) normalise per frame, so the attention mask alone suffices for them.  Extraction and
fine-tuning from waveforms both use it, so both compute the same hidden states.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from wav2emo.backbones.fixed_shapes import host_to_device
from wav2emo.backbones.source import BackboneError


class MaskedGroupNorm(nn.Module):
    """GroupNorm whose statistics cover each clip's first ``lengths[b]`` frames only.

    With ``lengths`` unset it is exactly ``nn.GroupNorm``.  Padded frames are set to zero.  It shares the
    wrapped layer's parameters, so state dicts and weights are unchanged.  Two ways, equal up to float
    rounding (``tests/test_masked_group_norm.py``): ``fused`` (the default) normalises the whole batch at
    once with masked statistics (a fixed handful of kernels, in chunks of clips that bound the temporary
    memory); ``fused = False`` runs ``F.group_norm`` once per clip, as a batch of one would (the previous way,
    about 2 kernels per clip: ``benchmarks/finetune_benchmark.py`` measures both).
    """

    fused: bool = True
    chunk_elements: int = 2**26  # float32 elements per chunk of clips in the fused way (256 MiB per temporary)

    def __init__(self, norm: nn.GroupNorm) -> None:
        super().__init__()
        self.num_groups, self.num_channels, self.eps = norm.num_groups, norm.num_channels, norm.eps
        self.weight, self.bias = norm.weight, norm.bias
        self.lengths: list[int] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.lengths is None:
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if len(self.lengths) != x.shape[0] or max(self.lengths) > x.shape[-1]:
            raise RuntimeError(f"MaskedGroupNorm: lengths {self.lengths} do not fit input {tuple(x.shape)}")
        if min(self.lengths) == x.shape[-1]:
            # No clip is padded (prediction's windows are all one length): each clip's statistics already cover
            # its own frames only, so one call over the batch gives what the per-clip calls give (GroupNorm
            # normalises every clip apart), without the copies of the loop.
            return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        if self.fused:
            return self._fused(x, self.lengths)
        out: torch.Tensor | None = None
        for b, n in enumerate(self.lengths):
            y = F.group_norm(x[b : b + 1, :, :n], self.num_groups, self.weight, self.bias, self.eps)
            if out is None:
                out = x.new_zeros(x.shape, dtype=y.dtype)
            out[b : b + 1, :, :n] = y
        assert out is not None
        return out

    def _fused(self, x: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        # F.group_norm's result dtype: float32 under CUDA autocast (its float32 op list), else x's (CPU too).
        dtype = torch.float32 if x.device.type == "cuda" and torch.is_autocast_enabled("cuda") else x.dtype
        per_clip = max(1, x[0].numel())
        step = max(1, self.chunk_elements // per_clip)
        if step >= x.shape[0]:
            return self._fused_chunk(x, lengths).to(dtype)
        out = torch.empty(x.shape, dtype=dtype, device=x.device)
        for s in range(0, x.shape[0], step):
            out[s : s + step] = self._fused_chunk(x[s : s + step], lengths[s : s + step])
        return out

    def _fused_chunk(self, x: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
        b, c, t = x.shape
        g = self.num_groups
        n = host_to_device(lengths, x.device, torch.float32)  # no wait for the GPU here
        mask = (torch.arange(t, device=x.device)[None, :] < n[:, None]).to(torch.float32)  # (b, t)
        m = mask[:, None, None, :]
        xf = x.float().reshape(b, g, c // g, t)
        count = (n * (c // g))[:, None, None, None]
        mean = (xf * m).sum(dim=(2, 3), keepdim=True) / count
        d = (xf - mean) * m  # two passes, as group_norm: the variance never subtracts large squares
        var = d.square().sum(dim=(2, 3), keepdim=True) / count
        y = (d * torch.rsqrt(var + self.eps)).reshape(b, c, t)
        if self.weight is not None:
            y = y * self.weight.float()[None, :, None]
        if self.bias is not None:
            y = y + self.bias.float()[None, :, None]
        return y * mask[:, None, :]


def conv_output_length(num_samples: int, kernels: Sequence[int], strides: Sequence[int]) -> int:
    n = int(num_samples)
    for k, s in zip(kernels, strides, strict=True):
        n = (n - int(k)) // int(s) + 1 if n >= k else 0
    return max(n, 0)


class BatchInvariance:
    """Patches a wav2vec2-style model so that padding a batch does not change any clip's features."""

    def __init__(self, model: nn.Module) -> None:
        config = model.config
        conv_layers = getattr(getattr(model, "feature_extractor", None), "conv_layers", None)
        if conv_layers is None or not hasattr(config, "conv_kernel"):
            raise BackboneError(
                f"{type(model).__name__}: not a wav2vec2-style model (expected feature_extractor.conv_layers, "
                "as in wav2vec2, HuBERT, WavLM, data2vec-audio)"
            )
        self.kernels, self.strides = list(config.conv_kernel), list(config.conv_stride)
        self.norms: list[tuple[int, MaskedGroupNorm]] = []
        for i, layer in enumerate(conv_layers):
            norm = getattr(layer, "layer_norm", None)
            if isinstance(norm, nn.GroupNorm):
                masked = MaskedGroupNorm(norm)
                layer.layer_norm = masked
                self.norms.append((i, masked))
            elif isinstance(norm, MaskedGroupNorm):
                self.norms.append((i, norm))
        others = [name for name, m in model.named_modules() if isinstance(m, nn.GroupNorm)]
        if others:
            raise BackboneError(
                f"{type(model).__name__}: GroupNorm layers {others[:3]} normalise over time outside the conv "
                "front end; batched extraction would not be batch-invariant"
            )

    def num_frames(self, num_samples: int) -> int:
        return conv_output_length(num_samples, self.kernels, self.strides)

    @contextmanager
    def lengths(self, num_samples: Sequence[int]) -> Iterator[None]:
        """Within the block, the masked norms use these per-clip sample counts."""
        for i, norm in self.norms:
            norm.lengths = [conv_output_length(n, self.kernels[: i + 1], self.strides[: i + 1]) for n in num_samples]
        try:
            yield
        finally:
            for _, norm in self.norms:
                norm.lengths = None


def conv_receptive_field(kernels: Sequence[int], strides: Sequence[int]) -> int:
    rf, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        rf += (int(k) - 1) * jump
        jump *= int(s)
    return rf
