"""Gain: scale each example by a level drawn uniformly in decibels (no clipping; waveforms are float)."""

from __future__ import annotations

import torch

from wav2emo.augment.base import check_range, check_wave_batch, uniform


class Gain:
    def __init__(self, gain_db: tuple[float, float] = (-6.0, 6.0)) -> None:
        self.gain_db = check_range("gain.gain_db", gain_db, lo=-60.0, hi=60.0)

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_wave_batch(wave, lengths, "gain")
        db = uniform(wave.shape[0], *self.gain_db, generator, wave.device)
        return wave * (10.0 ** (db / 20.0)).to(wave.dtype)[:, None], lengths

    def identity(self) -> dict:
        return {"kind": "gain", "gain_db": list(self.gain_db)}
