"""A researcher's own parts, written the way the README tells a user to: this module registers them, and a run
imports it with ``plugins=[tests.plugins.toy_parts]``. Nothing in wav2emo names or imports this file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from wav2emo.augment.config import WAVE_AUGMENTATIONS
from wav2emo.features import FEATURE_KINDS
from wav2emo.features.per_clip import WindowedKind

CALLS = {"polarity": 0}


@WAVE_AUGMENTATIONS.register("toy_polarity")
class ToyPolarity:
    """Flip the sign of every waveform (counts its calls so a test can see it ran)."""

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator):
        CALLS["polarity"] += 1
        return -wave, lengths

    def identity(self) -> dict:
        return {"kind": "toy_polarity"}


@FEATURE_KINDS.register("toy_frame_energy")
class ToyFrameEnergy(WindowedKind):
    """(T, 2) per clip: log energy and zero-crossing rate of 25 ms frames every 10 ms."""

    DEFAULTS: dict[str, Any] = {"kind": "toy_frame_energy", "name": "toy-energy", "sample_rate": 16000,
                                "win_ms": 25.0, "hop_ms": 10.0, "n_fft": None, "center": False,
                                "num_workers": 1, "durable": True, "shard_mb": 1.0}
    LABEL = "toy frame energy"

    def compute(self, wave: np.ndarray) -> np.ndarray:
        n = 1 + (len(wave) - self.win) // self.hop
        frames = np.lib.stride_tricks.sliding_window_view(wave, self.win)[:: self.hop][:n]
        energy = np.log(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-8)
        zcr = np.mean(np.abs(np.diff(np.sign(frames), axis=1)) > 0, axis=1)
        return np.stack([energy, zcr], axis=1).astype(np.float32)


class ToyHead(nn.Module):
    """Masked mean over frames of any (B, T, D) input -> Linear: a user's own head, named by ``_target_``."""

    inputs: tuple[str, ...] = ("logmel",)

    def __init__(self, in_channels: int = 1, feature_dim: int = 2, num_classes: int = 8,
                 input_key: str = "logmel") -> None:
        super().__init__()
        self.input_key = input_key
        self.norm = nn.LayerNorm(feature_dim)
        self.linear = nn.Linear(feature_dim, num_classes)

    def forward(self, batch: Mapping[str, Any]) -> torch.Tensor:
        x, mask = batch[self.input_key].float(), batch[f"{self.input_key}_mask"]
        x = self.norm(x) * mask[..., None]
        return self.linear(x.sum(1) / mask.sum(1, keepdim=True).clamp_min(1))
