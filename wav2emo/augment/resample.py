"""Resampling by small rational ratios with kernels built once and reused.

``torchaudio.functional.resample`` (and hence ``pitch_shift``) rebuilds its sinc kernel on every call, sized
by the rates divided by their gcd: ``pitch_shift`` asks for ``int(sr / rate) -> sr``, whose gcd can be 1, so
cost swings from milliseconds to seconds and some shifts fail to allocate (pytorch/audio 3447, 2414, 2359).
Here every ratio is first approximated by a fraction with a small denominator (at most ``MAX_DENOMINATOR``)
and its kernel is kept per device in a ``torchaudio.transforms.Resample`` module.
"""

from __future__ import annotations

from fractions import Fraction

import torch

MAX_DENOMINATOR = 100


def rational(ratio: float, max_denominator: int = MAX_DENOMINATOR) -> Fraction:
    """``ratio`` as a fraction with a denominator <= ``max_denominator`` (error < 1/(2 * den**2))."""
    if not ratio > 0:
        raise ValueError(f"resampling ratio must be > 0, got {ratio}")
    return Fraction(ratio).limit_denominator(max_denominator)


class ResamplerCache:
    """``Resample(orig, new)`` modules keyed by (orig, new, device, dtype); kernels are computed once."""

    def __init__(self) -> None:
        self._mods: dict[tuple, torch.nn.Module] = {}

    def __call__(self, wave: torch.Tensor, orig: int, new: int) -> torch.Tensor:
        """Resample the last axis of ``wave`` from ``orig`` to ``new`` (output length ceil(S * new / orig))."""
        if orig == new:
            return wave
        key = (orig, new, wave.device, wave.dtype)
        mod = self._mods.get(key)
        if mod is None:
            import torchaudio.transforms as T

            mod = T.Resample(orig, new, dtype=wave.dtype).to(wave.device)
            self._mods[key] = mod
        return mod(wave)


RESAMPLERS = ResamplerCache()
