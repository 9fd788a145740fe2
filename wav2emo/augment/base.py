"""Shared helpers for the batched transforms: shape checks, length masks, random draws from one generator.

Every transform takes a zero-padded ``(B, S)`` batch and its ``(B,)`` lengths, and draws all randomness from
the ``torch.Generator`` it is handed, so a run is reproducible per seed and fresh per step (the caller seeds
the generator from seed, epoch and step). Draws happen on the generator's device and are then moved to the
data's device, so a CPU generator also works for CUDA batches (a generator on the data's device is faster).
"""

from __future__ import annotations

from typing import Protocol

import torch

from wav2emo.errors import ConfigError


class WaveTransform(Protocol):
    """``(wave (B, S), lengths (B,), generator) -> (wave (B, S'), lengths (B,))``; padding stays zero."""

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]: ...


def check_wave_batch(wave: torch.Tensor, lengths: torch.Tensor, what: str) -> None:
    """Refuse a batch that is not ``(B, S)`` float with ``(B,)`` lengths in ``[0, S]``: a wrong shape would
    otherwise broadcast into silently wrong audio."""
    if wave.dim() != 2 or not wave.is_floating_point():
        raise ValueError(f"{what}: expected a float (B, S) waveform batch, got {tuple(wave.shape)} {wave.dtype}")
    if lengths.shape != (wave.shape[0],):
        raise ValueError(f"{what}: expected lengths of shape ({wave.shape[0]},), got {tuple(lengths.shape)}")
    if len(lengths) and (int(lengths.min()) < 0 or int(lengths.max()) > wave.shape[1]):
        raise ValueError(f"{what}: lengths must lie in [0, {wave.shape[1]}], got {lengths.tolist()}")


def length_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, width)`` bool, True on the real samples (or frames) of each row."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def rand(n: int | tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) floats drawn from ``generator`` (on its own device), returned on ``device``."""
    shape = (n,) if isinstance(n, int) else n
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def randn(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.randn(shape, generator=generator, device=generator.device).to(device)


def uniform(n: int, lo: float, hi: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return lo + (hi - lo) * rand(n, generator, device)


def choice(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` indices drawn uniformly from ``range(k)``, on the CPU (they drive Python-side grouping)."""
    return torch.randint(k, (n,), generator=generator, device=generator.device).cpu()


def pad_to(wave: torch.Tensor, width: int) -> torch.Tensor:
    """Crop or zero-pad the time axis (last) to ``width``."""
    if wave.shape[-1] >= width:
        return wave[..., :width]
    return torch.nn.functional.pad(wave, (0, width - wave.shape[-1]))


def check_range(name: str, value, *, lo: float | None = None, hi: float | None = None) -> tuple[float, float]:
    """A ``[low, high]`` config pair with ``low <= high`` inside ``[lo, hi]``; ConfigError naming ``name``."""
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"augment {name}: expected a [low, high] pair of numbers, got {value!r}") from None
    if a > b:
        raise ConfigError(f"augment {name}: range [{a}, {b}] is reversed; expected low <= high")
    if (lo is not None and a < lo) or (hi is not None and b > hi):
        raise ConfigError(f"augment {name}: [{a}, {b}] lies outside the allowed [{lo}, {hi}]")
    return a, b
