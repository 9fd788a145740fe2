"""Speed perturbation (Ko et al. 2015, Kaldi's 0.9/1.0/1.1): resample so that tempo and pitch change
together; a factor f > 1 shortens the clip to ceil(length / f) samples."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from wav2emo.augment.base import check_wave_batch, choice, length_mask, pad_to
from wav2emo.augment.resample import RESAMPLERS, rational
from wav2emo.errors import ConfigError


class Speed:
    def __init__(self, factors: Sequence[float] = (0.9, 1.0, 1.1)) -> None:
        try:
            factors = [float(f) for f in factors]
        except (TypeError, ValueError):
            raise ConfigError(f"augment speed.factors: expected a list of numbers, got {factors!r}") from None
        if not factors or any(not f > 0 for f in factors):
            raise ConfigError(f"augment speed.factors: {factors}; expected a non-empty list of factors > 0")
        if any(f > 4 or f < 0.25 for f in factors):
            raise ConfigError(f"augment speed.factors: {factors}; expected factors within [0.25, 4]")
        self.factors = factors
        self.fractions = [rational(f) for f in factors]  # exact for 0.9, 1.0, 1.1

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_wave_batch(wave, lengths, "speed")
        pick = choice(wave.shape[0], len(self.fractions), generator)
        new_len = lengths.clone()
        parts: dict[int, torch.Tensor] = {}
        for k in pick.unique().tolist():
            frac = self.fractions[k]
            rows = (pick == k).nonzero().flatten().to(wave.device)
            if frac == 1:
                continue
            # factor num/den: read num samples where den are played, i.e. resample num -> den
            parts[k] = RESAMPLERS(wave.index_select(0, rows), frac.numerator, frac.denominator)
            new_len[rows] = (lengths[rows] * frac.denominator + frac.numerator - 1) // frac.numerator
        width = max(1, int(new_len.max())) if len(new_len) else wave.shape[1]
        out = pad_to(wave, width).clone()
        for k, part in parts.items():
            rows = (pick == k).nonzero().flatten().to(wave.device)
            out[rows] = pad_to(part, width)
        return out * length_mask(new_len, width), new_len

    def identity(self) -> dict:
        return {"kind": "speed", "factors": [f"{f.numerator}/{f.denominator}" for f in self.fractions]}
