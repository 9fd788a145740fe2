"""eGeMAPSv02 through openSMILE: 88 functionals per clip, or 25 low-level descriptors per 10 ms frame.

Stored as float32, not float16: functionals mix scales (loudness near 0.1, spectral slopes and
formant bandwidths in the hundreds or thousands, equivalent sound level around -60 dB) and several
are small differences of large numbers; float16 keeps ~3 significant digits and would turn fine
per-speaker differences into rounding noise.  The whole eGeMAPS cache of RAVDESS is ~0.5 MB anyway.

openSMILE is imported lazily, so machines without it can still extract SSL features.  Clips are
processed in a process pool (openSMILE runs ~20x real time on one core); every value is checked:
a NaN or infinity (openSMILE fills too-short segments with NaN) is an error naming the clip and the
features, never a stored number.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.features.cache import DEFAULT_SHARD_BYTES, build_from_arrays

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
_LEVELS = {"functionals": ("Functionals", 88, None), "lld": ("LowLevelDescriptors", 25, 100.0)}
_SMILE: Any = None  # one per worker process


class EgemapsError(RuntimeError):
    """openSMILE produced unusable values or is missing; names the clip/feature or what to install."""


def make_smile(feature_set: str = "eGeMAPSv02", level: str = "functionals"):
    try:
        import opensmile
    except ImportError as e:
        raise EgemapsError(
            "eGeMAPS features need the opensmile package (pip install opensmile); it is not installed here"
        ) from e
    try:
        fs = opensmile.FeatureSet[feature_set]
    except KeyError:
        raise EgemapsError(
            f"feature_set={feature_set!r}; expected one of {[f.name for f in opensmile.FeatureSet]}"
        ) from None
    return opensmile.Smile(feature_set=fs, feature_level=getattr(opensmile.FeatureLevel, _LEVELS[level][0]))


def _init_worker(feature_set: str, level: str) -> None:
    global _SMILE
    _SMILE = make_smile(feature_set, level)


def smile_features(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip -> ``(frames, n_features)`` float64 (1 frame for functionals), using this process's Smile."""
    return _SMILE.process_signal(wave, sample_rate).to_numpy(dtype=np.float64)


def _process_path(path: str) -> np.ndarray:
    return smile_features(load_audio(path, SAMPLE_RATE), SAMPLE_RATE)


def compute_egemaps(
    paths: Sequence[str],
    *,
    feature_set: str = "eGeMAPSv02",
    level: str = "functionals",
    num_workers: int = 1,
    progress: bool = False,
) -> list[np.ndarray]:
    """openSMILE on each file (mono, 16 kHz via load_audio), in ``num_workers`` processes when > 1."""
    from tqdm.auto import tqdm

    bar = dict(total=len(paths), unit="clip", desc=f"eGeMAPS {level}", disable=not progress, leave=False)
    if num_workers <= 1:
        _init_worker(feature_set, level)
        return [_process_path(p) for p in tqdm(paths, **bar)]
    # forkserver/spawn, not fork: forking after torch started its threads can deadlock the children.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context(method), initializer=_init_worker,
        initargs=(feature_set, level),
    ) as pool:
        chunk = max(1, min(16, len(paths) // (4 * num_workers)))
        return list(tqdm(pool.map(_process_path, paths, chunksize=chunk), **bar))


def check_finite(arrays: Sequence[np.ndarray], clip_ids: Sequence[str], names: Sequence[str]) -> None:
    """Raise :class:`EgemapsError` naming the clips and features that are NaN or infinite."""
    problems = []
    for cid, arr in zip(clip_ids, arrays, strict=True):
        bad = ~np.isfinite(arr)
        if bad.any():
            cols = sorted({names[j] for j in np.flatnonzero(bad.any(axis=0))})
            problems.append(f"{cid}: {cols[:6]}{' ...' if len(cols) > 6 else ''}")
    if problems:
        raise EgemapsError(
            f"openSMILE returned NaN/inf for {len(problems)} clip(s) (too short or unusual audio?): "
            + "; ".join(problems[:10])
            + ". Nothing was cached; fix or drop these clips."
        )


class _OpenSmileKind:
    level = "functionals"
    defaults: dict[str, Any] = {"name": None, "feature_set": "eGeMAPSv02", "num_workers": None, "durable": True}

    def __init__(self, spec: Mapping[str, Any], device: Any = None) -> None:
        allowed = {"kind", *self.defaults}
        unknown = sorted(set(spec) - allowed)
        if unknown:
            raise ValueError(f"feature spec {spec.get('name')!r}: unknown fields {unknown}; expected {sorted(allowed)}")
        self.spec = {**self.defaults, **spec}

    def key_fields(self) -> dict[str, Any]:
        return {
            "feature_set": str(self.spec["feature_set"]),
            "feature_level": self.level,
            "sample_rate": SAMPLE_RATE,
            "storage_dtype": "float32",
        }

    def _workers(self, n_clips: int) -> int:
        n = self.spec["num_workers"]
        n = min(8, os.cpu_count() or 1) if n is None else int(n)
        return 1 if n_clips < 200 else max(1, n)  # starting processes (~3 s) costs more than a few clips

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        start = time.perf_counter()
        name, n_features, frame_rate = _LEVELS[self.level]
        names = list(make_smile(self.spec["feature_set"], self.level).feature_names)
        if len(names) != n_features:
            raise EgemapsError(f"{self.spec['feature_set']} {name}: {len(names)} features, expected {n_features}")
        workers = self._workers(len(manifest))
        arrays = compute_egemaps(
            [c.path for c in manifest], feature_set=self.spec["feature_set"], level=self.level,
            num_workers=workers, progress=progress,
        )
        check_finite(arrays, manifest.clip_ids, names)
        bad_shape = [(c.clip_id, a.shape) for c, a in zip(manifest, arrays, strict=True) if a.ndim != 2 or a.shape[1] != n_features]
        if bad_shape or (self.level == "functionals" and any(a.shape[0] != 1 for a in arrays)):
            raise EgemapsError(f"unexpected openSMILE output shapes: {bad_shape[:5]}")
        if any(a.shape[0] < 1 for a in arrays):
            raise EgemapsError(f"clips {[c.clip_id for c, a in zip(manifest, arrays, strict=True) if a.shape[0] < 1][:5]} gave no frames")
        meta = {
            **base_meta,
            "feature_names": names,
            "frame_rate": frame_rate,
            "frame_shift_s": None if frame_rate is None else 1.0 / frame_rate,
            "sample_rate": SAMPLE_RATE,
            "opensmile": {"version": metadata.version("opensmile"), "feature_set": self.spec["feature_set"], "level": name},
            "build": {**base_meta.get("build", {}), "device": "cpu", "num_workers": workers,
                      "seconds": round(time.perf_counter() - start, 3), "clips_computed": len(manifest)},
        }
        return build_from_arrays(
            path, clip_ids=manifest.clip_ids, sha1s=[c.sha1 for c in manifest], arrays=arrays,
            dtype=np.float32, meta=meta, shard_bytes=DEFAULT_SHARD_BYTES, durable=bool(self.spec["durable"]),
        )


class EgemapsFunctionals(_OpenSmileKind):
    """Feature kind ``egemaps_functionals``: 88 eGeMAPSv02 functionals per clip, shape (1, 88)."""

    level = "functionals"


class EgemapsLLD(_OpenSmileKind):
    """Feature kind ``egemaps_lld``: 25 eGeMAPSv02 low-level descriptors per 10 ms frame, shape (T, 25)."""

    level = "lld"
