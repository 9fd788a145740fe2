"""SpecAugment-style masking (Park et al. 2019) of frame features ``(B, T, F)`` or ``(B, H, T, F)``.

Masks are drawn inside each example's real frames only (``mask`` (B, T), True = real frame), so padding is
never touched and a short clip is never masked beyond ``time_max_frac`` of its length per mask. Masked
values are set to each example's mean over its real frames (``fill: mean``, neutral for log-mel, whose
zero is not silence) or to zero (``fill: zero``, for standardised features).
"""

from __future__ import annotations

import torch

from wav2emo.augment.base import rand
from wav2emo.errors import ConfigError


def _count(name: str, value, lo: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"augment spec.{name}: {value!r}; expected an integer >= {lo}")
    return value


def _spans(n: int, count: int, max_width: torch.Tensor, limit: torch.Tensor, width: int,
           generator: torch.Generator, device) -> torch.Tensor:
    """``(n, width)`` bool: ``count`` spans per row, each of width U{0..max_width} starting inside ``limit``."""
    hit = torch.zeros(n, width, dtype=torch.bool, device=device)
    pos = torch.arange(width, device=device)[None, :]
    for _ in range(count):
        u = rand((n, 2), generator, device)
        w = (u[:, 0] * (max_width + 1)).floor().long()
        start = (u[:, 1] * (limit - w + 1).clamp(min=1)).floor().long()
        hit |= (pos >= start[:, None]) & (pos < (start + w)[:, None])
    return hit


class SpecAugment:
    def __init__(self, time_masks: int = 2, time_width: int = 40, time_max_frac: float = 0.2,
                 freq_masks: int = 2, freq_width: int = 8, fill: str = "mean") -> None:
        self.time_masks = _count("time_masks", time_masks)
        self.time_width = _count("time_width", time_width)
        self.freq_masks = _count("freq_masks", freq_masks)
        self.freq_width = _count("freq_width", freq_width)
        try:
            self.time_max_frac = float(time_max_frac)
        except (TypeError, ValueError):
            raise ConfigError(f"augment spec.time_max_frac: {time_max_frac!r}; expected a number in [0, 1]") from None
        if not 0 <= self.time_max_frac <= 1:
            raise ConfigError(f"augment spec.time_max_frac: {time_max_frac}; expected a number in [0, 1]")
        if fill not in ("mean", "zero"):
            raise ConfigError(f"augment spec.fill: {fill!r}; expected 'mean' or 'zero'")
        self.fill = fill

    def __call__(self, feats: torch.Tensor, mask: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if feats.dim() not in (3, 4) or mask.shape != (feats.shape[0], feats.shape[-2]) or mask.dtype != torch.bool:
            raise ValueError(f"spec augment: expected features (B, T, F) or (B, H, T, F) with a bool (B, T) mask, "
                             f"got {tuple(feats.shape)} and {tuple(mask.shape)} {mask.dtype}")
        b, t, f = feats.shape[0], feats.shape[-2], feats.shape[-1]
        dev = feats.device
        lengths = mask.sum(1)
        max_t = torch.minimum(torch.full_like(lengths, self.time_width), (lengths * self.time_max_frac).floor().long())
        time_hit = _spans(b, self.time_masks, max_t, lengths, t, generator, dev) & mask
        freq_hit = _spans(b, self.freq_masks, torch.full((b,), min(self.freq_width, f), device=dev),
                          torch.full((b,), f, device=dev), f, generator, dev)
        hit = time_hit[:, :, None] | freq_hit[:, None, :]  # (B, T, F)
        hit &= mask[:, :, None]
        if feats.dim() == 4:
            hit = hit[:, None]
        if self.fill == "zero":
            value = torch.zeros((), dtype=feats.dtype, device=dev)
        else:
            m = mask[:, None, :, None] if feats.dim() == 4 else mask[:, :, None]
            value = (feats * m).sum((-2, -1), keepdim=True) / (m.sum((-2,), keepdim=True) * f).clamp(min=1)
        return torch.where(hit, value.to(feats.dtype), feats)

    def identity(self) -> dict:
        return {"kind": "spec", **{k: getattr(self, k) for k in ("time_masks", "time_width", "time_max_frac",
                                                                  "freq_masks", "freq_width", "fill")}}
