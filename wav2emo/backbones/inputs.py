"""Waveform input of a backbone inside a model (online augmentation, full fine-tuning): the same per-clip
normalisation and frame counts as extraction, computed on a padded batch on any device."""

from __future__ import annotations

from typing import Any

import torch

from wav2emo.backbones.invariance import conv_output_length


def normalize_waves(wave: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance per clip over its own samples (padding stays 0), in float64 as extraction's
    :func:`wav2emo.features.extractor.normalize_wave` computes it on the unpadded clip."""
    valid = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    w64, n = wave.double() * valid, lengths[:, None].double()
    mean = w64.sum(1, keepdim=True) / n
    var = (((w64 - mean) * valid) ** 2).sum(1, keepdim=True) / n
    return (((w64 - mean) / torch.sqrt(var + 1e-7)) * valid).float()


def frame_lengths(config: Any, lengths: torch.Tensor) -> list[int]:
    """Frames the CNN front end makes of each clip's ``lengths`` samples."""
    return [conv_output_length(int(n), config.conv_kernel, config.conv_stride) for n in lengths.tolist()]
