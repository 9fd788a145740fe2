"""Additive noise at a signal-to-noise ratio drawn uniformly in dB, per example.

Kinds: ``white``; ``pink`` (1/f power, white noise shaped in the frequency domain); ``babble`` (the sum of
``babble_speakers`` other clips of the same batch, each scaled to unit power and looped to cover the clip);
``folder`` (files from ``folder``, read and checked when the transform is built, looped from a random offset).
SNR is measured on each clip's real samples only; padding stays zero. A silent clip gets no noise (its SNR
is undefined), and a batch of one clip gets no babble (there is nobody else to talk).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from wav2emo.augment.base import check_range, check_wave_batch, choice, length_mask, rand, randn, uniform
from wav2emo.errors import ConfigError

KINDS = ("white", "pink", "babble", "folder")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")


def pink(shape: tuple[int, int], generator: torch.Generator, device) -> torch.Tensor:
    """Pink (1/f power) noise: white noise whose spectrum amplitude is scaled by 1/sqrt(f); DC removed."""
    white = randn(shape, generator, device)
    spec = torch.fft.rfft(white, dim=-1)
    f = torch.arange(spec.shape[-1], device=device, dtype=white.dtype)
    spec = spec * torch.where(f > 0, f.clamp(min=1).rsqrt(), torch.zeros_like(f))
    return torch.fft.irfft(spec, n=shape[-1], dim=-1)


class NoiseBank:
    """All noise files of a folder, decoded at ``sample_rate`` into one tensor; refused up front when the
    folder is missing, holds no audio files, or any file is unreadable, empty or silent."""

    def __init__(self, folder: str | Path, sample_rate: int) -> None:
        from wav2emo.data.audio import load_audio

        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"augment noise.folder {str(folder)!r}: no such folder; expected a folder of "
                              f"noise recordings ({', '.join(AUDIO_SUFFIXES)})")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
        if not files:
            raise ConfigError(f"augment noise.folder {str(folder)!r}: holds no audio files; expected at least "
                              f"one of {', '.join(AUDIO_SUFFIXES)}")
        waves = []
        for p in files:
            try:
                w = torch.from_numpy(load_audio(p, sample_rate))
            except Exception as e:  # AudioError names the file; anything else is wrapped to name it
                raise ConfigError(f"augment noise.folder: {p} cannot be used as noise ({e})") from e
            if not bool((w != 0).any()):
                raise ConfigError(f"augment noise.folder: {p} is silent; expected audible noise")
            waves.append(w)
        self.files = [str(p) for p in files]
        self.lengths = torch.tensor([len(w) for w in waves])
        self.starts = torch.cumsum(self.lengths, 0) - self.lengths
        self.audio = torch.cat(waves)
        self._on: dict = {}

    def _to(self, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.audio.to(device), self.lengths.to(device), self.starts.to(device))
        return self._on[key]

    def sample(self, n: int, width: int, generator: torch.Generator, device) -> torch.Tensor:
        """``(n, width)`` noise: a random file each, looped from a random offset."""
        audio, lengths, starts = self._to(device)
        f = choice(n, len(self.files), generator).to(device)
        offset = (rand(n, generator, device) * lengths[f]).long()
        t = torch.arange(width, device=device)[None, :]
        return audio[starts[f, None] + (offset[:, None] + t) % lengths[f, None]]


def babble(wave: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor, speakers: int,
           generator: torch.Generator) -> torch.Tensor:
    """For each of ``rows``, the sum of ``speakers`` other clips of the batch (unit power each, looped)."""
    b, width = wave.shape
    out = torch.zeros(len(rows), width, device=wave.device, dtype=wave.dtype)
    power = (wave.square().sum(1) / lengths.clamp(min=1)).clamp(min=1e-12)
    usable = lengths > 0
    t = torch.arange(width, device=wave.device)[None, :]
    for _ in range(speakers):
        # another clip: shift by 1..b-1 so a row never babbles with itself
        other = (rows + 1 + (rand(len(rows), generator, wave.device) * (b - 1)).long()) % b
        length = lengths[other].clamp(min=1)
        clip = wave[other[:, None], t % length[:, None]] / power[other].sqrt()[:, None]
        out += clip * usable[other][:, None]
    return out


class AddNoise:
    def __init__(self, snr_db: tuple[float, float] = (10.0, 20.0), kinds: Sequence[str] = ("white", "pink", "babble"),
                 folder: str | Path | None = None, babble_speakers: int = 3, sample_rate: int = 16000) -> None:
        self.snr_db = check_range("noise.snr_db", snr_db, lo=-30.0, hi=100.0)
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        bad = [k for k in kinds if k not in KINDS]
        if not kinds or bad:
            raise ConfigError(f"augment noise.kinds: {kinds}; expected a non-empty list from {list(KINDS)}")
        if ("folder" in kinds) != (folder is not None):
            raise ConfigError(f"augment noise: kinds {kinds} with folder {folder!r}; a noise folder is read "
                              "exactly when 'folder' is one of the kinds")
        if not (isinstance(babble_speakers, int) and babble_speakers >= 1):
            raise ConfigError(f"augment noise.babble_speakers: {babble_speakers!r}; expected an integer >= 1")
        self.kinds = kinds
        self.babble_speakers = babble_speakers
        self.bank = NoiseBank(folder, sample_rate) if folder is not None else None

    def noise(self, kind: str, wave: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor,
              generator: torch.Generator) -> torch.Tensor:
        shape = (len(rows), wave.shape[1])
        if kind == "white":
            return randn(shape, generator, wave.device)
        if kind == "pink":
            return pink(shape, generator, wave.device)
        if kind == "folder":
            return self.bank.sample(len(rows), wave.shape[1], generator, wave.device)
        if wave.shape[0] < 2:
            return torch.zeros(shape, device=wave.device, dtype=wave.dtype)
        return babble(wave, lengths, rows, self.babble_speakers, generator)

    def __call__(self, wave: torch.Tensor, lengths: torch.Tensor,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        check_wave_batch(wave, lengths, "noise")
        b = wave.shape[0]
        kind = choice(b, len(self.kinds), generator)
        snr = uniform(b, *self.snr_db, generator, wave.device)
        noise = torch.zeros_like(wave)
        for k in kind.unique().tolist():
            rows = (kind == k).nonzero().flatten().to(wave.device)
            noise[rows] = self.noise(self.kinds[k], wave, lengths, rows, generator).to(wave.dtype)
        mask = length_mask(lengths, wave.shape[1])
        noise = noise * mask
        n = lengths.clamp(min=1).to(wave.dtype)
        p_signal = wave.square().sum(1) / n
        p_noise = noise.square().sum(1) / n
        scale = torch.where(p_noise > 0, (p_signal / (p_noise.clamp(min=1e-20) * 10.0 ** (snr / 10.0))).sqrt(),
                            torch.zeros_like(p_noise))
        return wave + noise * scale[:, None].to(wave.dtype), lengths

    def identity(self) -> dict:
        out = {"kind": "noise", "snr_db": list(self.snr_db), "kinds": self.kinds, "babble_speakers": self.babble_speakers}
        if self.bank is not None:
            out["folder_files"] = self.bank.files
            out["folder_samples"] = int(self.bank.lengths.sum())
        return out
