"""Clip-level features computed from audio in a thread pool (log-mel, MFCC statistics, kinds of your own).

One place for what every such extractor needs before a cache is written: each clip read at the spec's rate, an
error naming the clip's file, a progress bar, and a refusal of non-finite values so nothing bad is cached.
:class:`WindowedKind` is the whole feature kind around it for features of short analysis windows: the spec
checked against its defaults, clips shorter than one window refused up front, and the cache written.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.features.cache.writer import build_from_arrays
from wav2emo.features.limits import check_durations


def compute_per_clip(
    manifest: Manifest,
    compute: Callable[[np.ndarray], np.ndarray],
    sample_rate: int,
    num_workers: int,
    *,
    desc: str,
    what: str,
    progress: bool = True,
) -> list[np.ndarray]:
    """``compute(audio)`` for every clip of ``manifest``, in manifest order (``what`` names the values in errors)."""
    from tqdm.auto import tqdm

    def one(clip) -> np.ndarray:
        try:
            return compute(load_audio(clip.path, sample_rate))
        except ValueError as e:
            raise ValueError(f"{clip.path}: {e}") from e

    with ThreadPoolExecutor(max(1, int(num_workers))) as pool:
        arrays = list(tqdm(pool.map(one, manifest), total=len(manifest), unit="clip", desc=desc,
                           disable=not progress, leave=False))
    bad = [c.clip_id for c, a in zip(manifest, arrays, strict=True) if not np.isfinite(a).all()]
    if bad:
        raise ValueError(f"non-finite {what} for clips {bad[:5]}; nothing was cached")
    return arrays


class WindowedKind:
    """A feature kind computed clip by clip over analysis windows of ``win_ms`` every ``hop_ms``.

    Subclasses set ``DEFAULTS`` (every allowed spec field with its default; ``sample_rate``, ``win_ms``,
    ``hop_ms``, ``n_fft``, ``center``, ``num_workers``, ``durable`` and ``shard_mb`` among them), ``LABEL`` (how
    errors and progress name it) and implement ``compute(wave) -> (T, ...) float32`` and ``key_fields()``;
    ``prepare()`` builds what threads share, ``extra_meta()`` adds to the cache's meta (``frame_rate``, ...).
    """

    DEFAULTS: dict[str, Any] = {}
    LABEL = "features"
    NOT_IN_KEY = ("name", "num_workers", "durable", "shard_mb")

    def __init__(self, spec: Mapping[str, Any], device: Any = None) -> None:
        unknown = sorted(set(spec) - set(self.DEFAULTS))
        if unknown:
            raise ValueError(f"feature spec {spec.get('name')!r}: unknown fields {unknown}; expected {sorted(self.DEFAULTS)}")
        self.spec = {**self.DEFAULTS, **spec}
        sr = int(self.spec["sample_rate"])
        self.win = round(float(self.spec["win_ms"]) * sr / 1000)
        self.hop = round(float(self.spec["hop_ms"]) * sr / 1000)
        self.n_fft = int(self.spec["n_fft"] or self.win)
        if not (0 < self.hop and 0 < self.win <= self.n_fft):
            raise ValueError(f"{self.LABEL} spec {dict(self.spec)}: expected 0 < win <= n_fft, hop > 0")

    def key_fields(self) -> dict[str, Any]:
        return {k: v for k, v in self.spec.items() if k not in self.NOT_IN_KEY} | {"storage_dtype": "float32"}

    def check_clips(self, manifest: Manifest) -> None:
        """Refuse clips shorter than one analysis window before any audio is decoded."""
        sr = int(self.spec["sample_rate"])
        check_durations(manifest, what=f"{self.LABEL} ({self.spec['name']})",
                        min_s=None if self.spec["center"] else self.n_fft / sr,
                        min_reason=f"one {self.n_fft}-sample analysis window at {sr} Hz")

    def compute(self, wave: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def prepare(self) -> None:
        """Build what the extraction threads share (a transform), once, before they start."""

    def extra_meta(self) -> dict[str, Any]:
        sr = int(self.spec["sample_rate"])
        return {"frame_rate": sr / self.hop, "frame_shift_s": self.hop / sr}

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        start = time.perf_counter()
        self.check_clips(manifest)
        sr = int(self.spec["sample_rate"])
        self.prepare()
        arrays = compute_per_clip(manifest, self.compute, sr, self.spec["num_workers"], desc=self.LABEL,
                                  what=f"{self.LABEL} values", progress=progress)
        meta = {
            **base_meta,
            **self.extra_meta(),
            "sample_rate": sr,
            "build": {**base_meta.get("build", {}), "device": "cpu", "seconds": round(time.perf_counter() - start, 3),
                      "clips_computed": len(manifest)},
        }
        return build_from_arrays(
            path, clip_ids=manifest.clip_ids, sha1s=[c.sha1 for c in manifest], arrays=arrays,
            dtype=np.float32, meta=meta, shard_bytes=max(1, int(float(self.spec["shard_mb"]) * 2**20)),
            durable=bool(self.spec["durable"]),
        )
