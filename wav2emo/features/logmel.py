"""Log-mel spectrograms: a backbone-free frame-level feature (baselines, and a sanity check of the pipeline).

Defaults follow common SER practice: 64 mel bands, 25 ms Hann window, 10 ms hop, power spectrum,
``log(max(mel, floor))``.  ``center: false`` keeps frame ``t`` on samples ``[t*hop, t*hop + win)``, the
same alignment convention as wav2vec2 (no reflected padding invented at the edges).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch

from wav2emo.features.cache.format import DEFAULT_SHARD_BYTES
from wav2emo.features.per_clip import WindowedKind

LOGMEL_DEFAULTS: dict[str, Any] = {
    "kind": "logmel",
    "name": None,
    "sample_rate": 16000,
    "n_mels": 64,
    "win_ms": 25.0,
    "hop_ms": 10.0,
    "n_fft": None,  # None = the window length
    "f_min": 0.0,
    "f_max": None,
    "log_floor": 1e-6,
    "center": False,
    "num_workers": 2,
    "durable": True,
    "shard_mb": DEFAULT_SHARD_BYTES / 2**20,
}


class LogMelFrontend(torch.nn.Module):
    """Batched log-mel on any device: ``(wave (B, S), lengths (B,)) -> (feats (B, T, n_mels), mask (B, T))``.

    Row ``b`` holds exactly what the log-mel cache stores for that clip alone (its first ``num_frames(length)``
    frames; padded frames are zero, as the collate pads). With ``center: false`` a frame never reads past its
    clip's end, so the whole padded batch goes through one STFT; with ``center: true`` the reflected padding
    depends on the clip's end, so each row is computed on its own samples.
    """

    def __init__(self, spec: Mapping[str, Any]) -> None:
        super().__init__()
        import torchaudio.transforms as T

        spec = {**LOGMEL_DEFAULTS, **spec}
        sr = int(spec["sample_rate"])
        self.win = round(float(spec["win_ms"]) * sr / 1000)
        self.hop = round(float(spec["hop_ms"]) * sr / 1000)
        self.n_fft = int(spec["n_fft"] or self.win)
        self.center = bool(spec["center"])
        self.log_floor = float(spec["log_floor"])
        if not (0 < self.hop and 0 < self.win <= self.n_fft) or self.log_floor <= 0:
            raise ValueError(f"logmel spec {dict(spec)}: expected 0 < win <= n_fft, hop > 0, log_floor > 0")
        self.mel = T.MelSpectrogram(
            sample_rate=sr, n_fft=self.n_fft, win_length=self.win, hop_length=self.hop,
            f_min=float(spec["f_min"]), f_max=spec["f_max"], n_mels=int(spec["n_mels"]),
            center=self.center, power=2.0,
        )

    def num_frames(self, num_samples: torch.Tensor | int):
        """Frames of a clip of ``num_samples`` samples (works on ints and on a lengths tensor)."""
        if self.center:
            return num_samples // self.hop + 1
        if isinstance(num_samples, int):
            return (num_samples - self.n_fft) // self.hop + 1 if num_samples >= self.n_fft else 0
        return torch.where(num_samples >= self.n_fft, (num_samples - self.n_fft) // self.hop + 1,
                           torch.zeros_like(num_samples))

    def one(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip ``(S,)`` -> ``(T, n_mels)``."""
        mel = self.mel(wave)
        return torch.log(torch.clamp(mel, min=self.log_floor)).transpose(-1, -2).contiguous()

    def forward(self, wave: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if wave.dim() != 2:
            raise ValueError(f"LogMelFrontend: expected a (B, S) waveform batch, got {tuple(wave.shape)}")
        if lengths is None:
            lengths = torch.full((wave.shape[0],), wave.shape[1], dtype=torch.long, device=wave.device)
        frames = self.num_frames(lengths.to(wave.device).long())
        t_max = max(1, int(frames.max())) if len(frames) else 1
        if self.center:
            out = wave.new_zeros(wave.shape[0], t_max, self.mel.n_mels)
            for b, n in enumerate(lengths.tolist()):
                out[b, : int(frames[b])] = self.one(wave[b, :n])
        else:
            width = max(wave.shape[1], self.n_fft)
            out = self.one(torch.nn.functional.pad(wave, (0, width - wave.shape[1])))[:, :t_max]
            out = torch.nn.functional.pad(out, (0, 0, 0, t_max - out.shape[1]))
        mask = torch.arange(t_max, device=wave.device)[None, :] < frames[:, None]
        return out * mask[..., None], mask


class LogMel(WindowedKind):
    """Feature kind ``logmel``: ``(T, n_mels)`` float32 per clip at 1000/hop_ms frames per second."""

    DEFAULTS = LOGMEL_DEFAULTS
    LABEL = "log-mel"

    def __init__(self, spec: Mapping[str, Any], device: Any = None) -> None:
        super().__init__(spec, device)
        if float(self.spec["log_floor"]) <= 0:
            raise ValueError(f"logmel spec {dict(self.spec)}: expected log_floor > 0")

    @cached_property
    def frontend(self) -> LogMelFrontend:
        """The one implementation of the numbers: the cache and the training-time (GPU) path both use it."""
        return LogMelFrontend(self.spec)

    def prepare(self) -> None:
        _ = self.frontend  # build the transform once, before the threads share it

    def num_frames(self, num_samples: int) -> int:
        if self.spec["center"]:
            return num_samples // self.hop + 1
        return (num_samples - self.n_fft) // self.hop + 1 if num_samples >= self.n_fft else 0

    def compute(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform -> ``(T, n_mels)`` float32 log-mel."""
        if self.num_frames(len(wave)) < 1:
            raise ValueError(f"{len(wave)} samples are shorter than one {self.n_fft}-sample analysis window")
        with torch.inference_mode():
            out = self.frontend.one(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        return out.numpy()
