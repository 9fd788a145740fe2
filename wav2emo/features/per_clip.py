"""Clip-level features computed from audio in a thread pool (log-mel, MFCC statistics).

One place for what every such extractor needs before a cache is written: each clip read at the spec's rate, an
error naming the clip's file, a progress bar, and a refusal of non-finite values so nothing bad is cached.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest


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
