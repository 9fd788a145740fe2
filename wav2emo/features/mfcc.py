"""MFCC statistics: a backbone-free clip-level feature (40 MFCC means and standard deviations per clip).

The classic companion of eGeMAPS in speech-emotion baselines.  Each clip is one vector
``[mean_0..mean_{n-1}, std_0..std_{n-1}]`` of its MFCCs over frames (population std, ddof 0), cached like the
eGeMAPS functionals (one row per clip), so the scikit-learn baselines read it the same way.

The MFCCs are :class:`torchaudio.transforms.MFCC` with documented parameters: ``n_mfcc`` coefficients (DCT-II,
orthonormal) of a ``n_mels``-band mel power spectrogram in dB (torchaudio's ``AmplitudeToDB``, ``top_db=80``
relative to the clip's loudest bin), 25 ms Hann window, 10 ms hop, ``center: false`` (frame ``t`` covers samples
``[t*hop, t*hop + win)``, as the log-mel feature and wav2vec2 do; no reflected padding invented at the edges).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import torch

from wav2emo.features.per_clip import WindowedKind

MFCC_DEFAULTS: dict[str, Any] = {
    "kind": "mfcc_stats",
    "name": None,
    "sample_rate": 16000,
    "n_mfcc": 40,
    "n_mels": 64,
    "win_ms": 25.0,
    "hop_ms": 10.0,
    "n_fft": None,  # None = the window length
    "f_min": 0.0,
    "f_max": None,
    "top_db": 80.0,
    "center": False,
    "num_workers": 1,
    "durable": True,
    "shard_mb": 0.25,
}


class MfccStats(WindowedKind):
    """Feature kind ``mfcc_stats``: ``(1, 2 * n_mfcc)`` float32 per clip, MFCC means then standard deviations."""

    DEFAULTS = MFCC_DEFAULTS
    LABEL = "MFCC statistics"

    def __init__(self, spec: Mapping[str, Any], device: Any = None) -> None:
        super().__init__(spec, device)
        n_mfcc, n_mels = int(self.spec["n_mfcc"]), int(self.spec["n_mels"])
        if not 0 < n_mfcc <= n_mels:
            raise ValueError(f"mfcc spec {dict(self.spec)}: expected 0 < n_mfcc <= n_mels "
                             f"(got n_mfcc={n_mfcc}, n_mels={n_mels})")

    @property
    def dim(self) -> int:
        return 2 * int(self.spec["n_mfcc"])

    def key_fields(self) -> dict[str, Any]:
        return super().key_fields() | {"stats": "mean,std(ddof=0)", "dct": "type2-ortho", "log": "db"}

    @cached_property
    def _mfcc(self):
        import torchaudio.transforms as T

        return T.MFCC(
            sample_rate=int(self.spec["sample_rate"]), n_mfcc=int(self.spec["n_mfcc"]), dct_type=2, norm="ortho",
            log_mels=False,
            melkwargs={"n_fft": self.n_fft, "win_length": self.win, "hop_length": self.hop,
                       "f_min": float(self.spec["f_min"]), "f_max": self.spec["f_max"],
                       "n_mels": int(self.spec["n_mels"]), "center": bool(self.spec["center"]), "power": 2.0},
        )

    def prepare(self) -> None:
        _ = self._mfcc  # build the transform once, before threads share it

    def extra_meta(self) -> dict[str, Any]:
        return {"feature_names": self.feature_names(), "frame_rate": None, "frame_shift_s": None}

    def frames(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform -> ``(T, n_mfcc)`` float32 MFCCs (the frames the statistics are taken over)."""
        if not self.spec["center"] and len(wave) < self.n_fft:
            raise ValueError(f"{len(wave)} samples are shorter than one {self.n_fft}-sample analysis window")
        with torch.inference_mode():
            m = self._mfcc(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32)))
        return m.T.contiguous().numpy()

    def compute(self, wave: np.ndarray) -> np.ndarray:
        """Mono waveform -> ``(1, 2 * n_mfcc)`` float32: per-coefficient mean, then std over frames."""
        m = self.frames(wave).astype(np.float64)
        return np.concatenate([m.mean(0), m.std(0)])[None, :].astype(np.float32)

    def feature_names(self) -> list[str]:
        n = int(self.spec["n_mfcc"])
        return [f"mfcc{i}_mean" for i in range(n)] + [f"mfcc{i}_std" for i in range(n)]
