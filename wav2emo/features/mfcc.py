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

import time
from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2emo.data.manifest import Manifest
from wav2emo.features.cache import build_from_arrays
from wav2emo.features.limits import check_durations
from wav2emo.features.per_clip import compute_per_clip

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
_NOT_IN_KEY = ("name", "num_workers", "durable", "shard_mb")


class MfccStats:
    """Feature kind ``mfcc_stats``: ``(1, 2 * n_mfcc)`` float32 per clip, MFCC means then standard deviations."""

    def __init__(self, spec: Mapping[str, Any], device: Any = None) -> None:
        unknown = sorted(set(spec) - set(MFCC_DEFAULTS))
        if unknown:
            raise ValueError(f"feature spec {spec.get('name')!r}: unknown fields {unknown}; expected {sorted(MFCC_DEFAULTS)}")
        self.spec = {**MFCC_DEFAULTS, **spec}
        sr = int(self.spec["sample_rate"])
        self.win = round(float(self.spec["win_ms"]) * sr / 1000)
        self.hop = round(float(self.spec["hop_ms"]) * sr / 1000)
        self.n_fft = int(self.spec["n_fft"] or self.win)
        n_mfcc, n_mels = int(self.spec["n_mfcc"]), int(self.spec["n_mels"])
        if not (0 < self.hop and 0 < self.win <= self.n_fft) or not (0 < n_mfcc <= n_mels):
            raise ValueError(f"mfcc spec {dict(self.spec)}: expected 0 < win <= n_fft, hop > 0, "
                             f"0 < n_mfcc <= n_mels (got n_mfcc={n_mfcc}, n_mels={n_mels})")

    @property
    def dim(self) -> int:
        return 2 * int(self.spec["n_mfcc"])

    def key_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k not in _NOT_IN_KEY} | {
            "storage_dtype": "float32", "stats": "mean,std(ddof=0)", "dct": "type2-ortho", "log": "db"}

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

    def check_clips(self, manifest: Manifest) -> None:
        """Refuse clips shorter than one analysis window before any audio is decoded."""
        sr = int(self.spec["sample_rate"])
        check_durations(manifest, what=f"MFCC statistics ({self.spec['name']})",
                        min_s=None if self.spec["center"] else self.n_fft / sr,
                        min_reason=f"one {self.n_fft}-sample analysis window at {sr} Hz")

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

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:

        start = time.perf_counter()
        self.check_clips(manifest)
        sr = int(self.spec["sample_rate"])
        _ = self._mfcc  # build the transform once, before threads share it

        arrays = compute_per_clip(manifest, self.compute, sr, self.spec["num_workers"], desc="MFCC stats",
                                  what="MFCC statistics", progress=progress)
        meta = {
            **base_meta,
            "feature_names": self.feature_names(),
            "frame_rate": None,
            "frame_shift_s": None,
            "sample_rate": sr,
            "build": {**base_meta.get("build", {}), "device": "cpu", "seconds": round(time.perf_counter() - start, 3),
                      "clips_computed": len(manifest)},
        }
        return build_from_arrays(
            path, clip_ids=manifest.clip_ids, sha1s=[c.sha1 for c in manifest], arrays=arrays,
            dtype=np.float32, meta=meta, shard_bytes=max(1, int(float(self.spec["shard_mb"]) * 2**20)),
            durable=bool(self.spec["durable"]),
        )
