"""Pitch shift on a fixed grid of semitone steps, duration kept.

Same method as ``torchaudio.functional.pitch_shift`` (phase-vocoder time stretch by the pitch ratio r, then
resampling by 1/r back to the original length), but the ratio of each grid step is approximated by a
fraction with a small denominator (<= 100; at most 0.7 cent off on the default grid) whose kernel is built once
(:mod:`wav2emo.augment.resample`), and the STFT of the batch is taken once for all shifts. torchaudio's own
call resamples ``int(sr / rate) -> sr``, a kernel rebuilt on every call and sized by the gcd of those rates
(pytorch/audio 3447, 2414, 2359). ``benchmarks/augment_benchmark.py`` compares the two.
"""

from __future__ import annotations

import math

import torch

from wav2emo.augment.base import check_range, check_wave_batch, choice, length_mask, pad_to
from wav2emo.augment.resample import RESAMPLERS, rational
from wav2emo.errors import ConfigError

MAX_SEMITONES = 12.0


def stretch(mag: torch.Tensor, phase: torch.Tensor, rate: float, hop: int, n_fft: int) -> torch.Tensor:
    """Phase-vocoder time stretch of an STFT given as magnitude and phase ``(B, F, T)``: the same numbers as
    ``torchaudio.functional.phase_vocoder`` (which it follows step by step), but taking magnitude and phase
    once for the whole batch instead of on every gathered frame. ``rate < 1`` lengthens."""
    steps = torch.arange(0, mag.shape[-1], rate, device=mag.device, dtype=mag.dtype)
    i0 = steps.long()
    alpha = steps - i0
    advance = torch.linspace(0, math.pi * hop, mag.shape[-2], device=mag.device, dtype=mag.dtype)[:, None]
    mag_p = torch.nn.functional.pad(mag, (0, 2))
    phase_p = torch.nn.functional.pad(phase, (0, 2))
    delta = phase_p.index_select(-1, i0 + 1) - phase_p.index_select(-1, i0) - advance
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi)) + advance
    acc = torch.cat([phase[..., :1], delta[..., :-1]], dim=-1).cumsum(-1)
    m0 = mag_p.index_select(-1, i0)
    return torch.polar(m0 + alpha * (mag_p.index_select(-1, i0 + 1) - m0), acc)


class PitchShift:
    """Each example is shifted by a step drawn uniformly from ``grid`` (semitones; 0 = unchanged)."""

    def __init__(self, semitones: tuple[float, float] = (-2.0, 2.0), step: float = 0.5,
                 n_fft: int = 512, hop_length: int | None = None) -> None:
        lo, hi = check_range("pitch.semitones", semitones, lo=-MAX_SEMITONES, hi=MAX_SEMITONES)
        try:
            step = float(step)
        except (TypeError, ValueError):
            raise ConfigError(f"augment pitch.step: expected a number of semitones > 0, got {step!r}") from None
        if not step > 0:
            raise ConfigError(f"augment pitch.step: {step}; expected a step > 0 semitones")
        if int(n_fft) < 16:
            raise ConfigError(f"augment pitch.n_fft: {n_fft}; expected >= 16")
        n = int(math.floor((hi - lo) / step + 1e-9))
        self.grid = [round(lo + i * step, 6) for i in range(n + 1)]
        self.ratios = [rational(2.0 ** (s / 12.0)) for s in self.grid]
        self.n_fft = int(n_fft)
        self.hop = int(hop_length or self.n_fft // 4)
        self._windows: dict[tuple, torch.Tensor] = {}

    def effective_semitones(self) -> list[float]:
        """The shift actually applied for each grid step (the fraction's exact ratio, in semitones)."""
        return [12.0 * math.log2(float(r)) for r in self.ratios]

    def _window(self, device, dtype) -> torch.Tensor:
        key = (device, dtype)
        if key not in self._windows:
            self._windows[key] = torch.hann_window(self.n_fft, device=device, dtype=dtype)
        return self._windows[key]

    def _spec(self, wave: torch.Tensor) -> torch.Tensor:
        window = self._window(wave.device, wave.dtype)
        return torch.stft(wave, self.n_fft, self.hop, window=window, center=True, pad_mode="reflect",
                          return_complex=True)

    def shift(self, wave: torch.Tensor, ratio, polar: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Shift all rows of ``wave`` (B, S) by the fraction ``ratio`` (> 1 raises the pitch); length kept.
        ``polar``: magnitude and phase of the rows' STFT, when already computed for the whole batch."""
        if ratio == 1:
            return wave
        if polar is None:
            spec = self._spec(wave)
            polar = (spec.abs(), spec.angle())
        stretched = stretch(*polar, 1.0 / float(ratio), self.hop, self.n_fft)  # lengthen by r, pitch kept
        length = int(round(wave.shape[-1] * float(ratio)))
        longer = torch.istft(stretched, self.n_fft, self.hop, window=self._window(wave.device, wave.dtype),
                             length=length)
        # play back r times faster: resample num -> den with r = num/den, back to ~S samples
        return pad_to(RESAMPLERS(longer, ratio.numerator, ratio.denominator), wave.shape[-1])

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_wave_batch(wave, lengths, "pitch")
        if wave.shape[1] <= self.n_fft // 2:
            raise ValueError(f"pitch: a batch of {wave.shape[1]} samples is too short for the {self.n_fft}-point "
                             f"STFT; expected more than {self.n_fft // 2} samples")
        pick = choice(wave.shape[0], len(self.ratios), generator)
        todo = [k for k in pick.unique().tolist() if self.ratios[k] != 1]
        if not todo:
            return wave, lengths
        spec = self._spec(wave)
        mag, phase = spec.abs(), spec.angle()  # once for the batch, shared by every step
        out = wave.clone()
        for k in todo:
            rows = (pick == k).nonzero().flatten().to(wave.device)
            polar = (mag.index_select(0, rows), phase.index_select(0, rows))
            out[rows] = self.shift(wave.index_select(0, rows), self.ratios[k], polar)
        return out * length_mask(lengths, wave.shape[1]), lengths

    def identity(self) -> dict:
        return {"kind": "pitch", "grid": self.grid, "ratios": [f"{r.numerator}/{r.denominator}" for r in self.ratios],
                "n_fft": self.n_fft, "hop_length": self.hop}
