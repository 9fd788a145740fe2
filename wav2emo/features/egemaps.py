"""eGeMAPSv02 through openSMILE: 88 functionals per clip, or 25 low-level descriptors per 10 ms frame.

Stored as float32, not float16: functionals mix scales (loudness near 0.1, spectral slopes and
formant bandwidths in the hundreds or thousands, equivalent sound level around -60 dB) and several
are small differences of large numbers; float16 keeps ~3 significant digits and would turn fine
per-speaker differences into rounding noise.  The whole eGeMAPS cache of RAVDESS is ~0.5 MB anyway.

openSMILE runs ~40-60x real time on one core (60-100 ms for a RAVDESS clip) and is not thread-safe, so clips are
processed in worker processes, one per core by default (:mod:`wav2emo.features.smile_pool`), each calling
openSMILE's C API directly (:mod:`wav2emo.features.smile_api`: the values of ``Smile.process_signal``
without its pandas wrapper), longest clips first, and written into the cache as they finish, in small
shards, so an interrupted run resumes.  Clips shorter than openSMILE's minimum are refused before any work;
every value is still checked: a NaN or infinity is an error naming the clip and the features, never a
stored number.  Built beside an SSL cache (:func:`wav2emo.features.overlap.get_features_many`), the pool
runs while the backbone extracts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.cores import usable_cores
from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.errors import UserError
from wav2emo.features.cache.writer import CacheBuilder
from wav2emo.features.limits import check_durations
from wav2emo.features.overlap import check_stop, current_background

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# openSMILE's eGeMAPSv02 gives NaN for every feature (functionals and LLDs alike) below 960 samples at
# 16 kHz (measured: 920 samples NaN, 960 finite, for speech-like tones, silence and noise alike).
MIN_CLIP_S = 0.06
_LEVELS = {"functionals": ("Functionals", 88, None), "lld": ("LowLevelDescriptors", 25, 100.0)}
_ENGINE: Any = None  # this process's openSMILE engine (smile_api.SmileEngine), one per process
POOL_MIN_CLIPS = 16  # fewer clips (and no num_workers set) run in this process: no worker start-up at all


class EgemapsError(UserError, RuntimeError):
    """openSMILE produced unusable values or is missing; names the clip/feature or what to install."""


def make_smile(feature_set: str = "eGeMAPSv02", level: str = "functionals"):
    """An ``opensmile.Smile`` (pandas output), for callers that want opensmile-python's own interface."""
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


def init_engine(feature_set: str, level: str) -> list[str]:
    """Make this process's openSMILE engine (kept for the next call with the same settings); its feature names."""
    global _ENGINE
    from wav2emo.features.smile_api import SmileApiError, SmileEngine

    if _ENGINE is None or (_ENGINE.feature_set, _ENGINE.level) != (feature_set, level):
        try:
            _ENGINE = SmileEngine(feature_set, level)
        except SmileApiError as e:
            raise EgemapsError(str(e)) from e
    return list(_ENGINE.feature_names)


def smile_features(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip -> ``(frames, n_features)`` float32 (1 frame for functionals), with this process's engine."""
    return _ENGINE.process(wave, sample_rate)


def _process_path(path: str) -> np.ndarray:
    return smile_features(load_audio(path, SAMPLE_RATE), SAMPLE_RATE)


def default_workers(n_clips: int) -> int:
    """One worker process per usable core, at least ~8 clips each; none (this process) under
    :data:`POOL_MIN_CLIPS` clips or on one core."""
    cores = usable_cores()
    if n_clips < POOL_MIN_CLIPS or cores <= 1:
        return 1
    return max(1, min(cores, -(-n_clips // 8)))


def start_pool(num_workers: int, feature_set: str, level: str):
    """Worker processes starting now (returns at once); at lower priority inside a background build."""
    from wav2emo.features.smile_pool import SmilePool

    bg = current_background()
    return SmilePool(num_workers, feature_set, level, nice=bg.nice if bg is not None else 0, error=EgemapsError)


def iter_egemaps(
    paths: Sequence[str],
    *,
    feature_set: str = "eGeMAPSv02",
    level: str = "functionals",
    num_workers: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(i, openSMILE output of paths[i])`` (float32) for every file, in order in this process when
    ``num_workers <= 1``, as finished in a pool of worker processes otherwise."""
    if num_workers <= 1:
        init_engine(feature_set, level)
        for i, p in enumerate(paths):
            check_stop()
            yield i, _process_path(p)
        return
    with start_pool(num_workers, feature_set, level) as pool:
        yield from pool.imap_unordered(paths)


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

    out: list[Any] = [None] * len(paths)
    results = iter_egemaps(paths, feature_set=feature_set, level=level, num_workers=num_workers)
    with closing(results), tqdm(total=len(paths), unit="clip", desc=f"eGeMAPS {level}", disable=not progress,
                                leave=False) as bar:
        for i, arr in results:
            out[i] = arr
            bar.update(1)
    return out


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
    runs_in_processes = True  # builds in its own worker processes: overlaps with an SSL build (features.overlap)
    defaults: dict[str, Any] = {
        "name": None, "feature_set": "eGeMAPSv02", "num_workers": None, "durable": True,
        # Small shards (~90 clips of functionals): a Ctrl-C or crash keeps the finished ones to resume from.
        "shard_mb": 0.03125,
        "min_clip_s": MIN_CLIP_S,
    }

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

    def check_clips(self, manifest: Manifest) -> None:
        """Refuse clips too short for openSMILE before any of them is processed."""
        check_durations(manifest, what=f"{self.spec['feature_set']} {self.level}", min_s=float(self.spec["min_clip_s"]),
                        min_reason="openSMILE returns NaN for every feature below it")

    def _workers(self, n_clips: int) -> int:
        """``num_workers`` when set (1 = in this process); by default :func:`default_workers`."""
        n = self.spec["num_workers"]
        if n is not None:
            return max(1, min(int(n), n_clips))
        return default_workers(n_clips)

    def _frames(self, clip: Any) -> int:
        if self.level == "functionals":
            return 1
        from wav2emo.features.extraction_batches import expected_samples

        return max(0, (expected_samples(clip, SAMPLE_RATE) - 800) // 160 + 1)  # 60 ms windows every 10 ms

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        self.check_clips(manifest)
        feature_set = str(self.spec["feature_set"])
        name, n_features, frame_rate = _LEVELS[self.level]
        builder = CacheBuilder(
            path, clip_ids=manifest.clip_ids, sha1s=[c.sha1 for c in manifest],
            lengths=[self._frames(c) for c in manifest], feature_shape=(n_features,), dtype=np.float32,
            shard_bytes=max(1, int(float(self.spec["shard_mb"]) * 2**20)), durable=bool(self.spec["durable"]),
        )
        # Longest clips first: the workers' last clips are short ones, so none of them finishes long after the rest.
        pending = sorted(builder.pending, key=lambda i: (-float(manifest[i].duration or 0.0), i))
        workers = self._workers(len(pending))
        paths = [manifest[i].path for i in pending]
        pool = start_pool(workers, feature_set, self.level) if workers > 1 and pending else None
        problems: list[str] = []
        try:  # closing the pool on any exit (Ctrl-C included) stops the worker processes at once
            names = pool.feature_names() if pool is not None else init_engine(feature_set, self.level)
            ready_s = time.perf_counter() - start  # checks, cache plan, workers started and ready
            if len(names) != n_features:
                raise EgemapsError(f"{feature_set} {name}: {len(names)} features, expected {n_features}")
            results = pool.imap_unordered(paths) if pool is not None else iter_egemaps(paths, feature_set=feature_set,
                                                                                       level=self.level)
            with closing(results), tqdm(total=len(pending), unit="clip", desc=f"eGeMAPS {self.level}",
                                        disable=not progress, leave=False) as bar:
                for j, arr in results:
                    bar.update(1)
                    clip = manifest[pending[j]]
                    values = np.asarray(arr, dtype=np.float32)
                    expected = (int(builder.lengths[pending[j]]), n_features)
                    if values.shape != expected:
                        problems.append(f"{clip.clip_id}: openSMILE gave shape {values.shape}, expected {expected}")
                        continue
                    bad = ~np.isfinite(values)
                    if bad.any():
                        cols = sorted({names[k] for k in np.flatnonzero(bad.any(axis=0))})
                        problems.append(f"{clip.clip_id}: {cols[:6]}{' ...' if len(cols) > 6 else ''}")
                        continue
                    builder.write(pending[j], values)
        finally:
            if pool is not None:
                pool.close()
            builder.close()
        if problems:
            raise EgemapsError(
                f"openSMILE returned unusable values (NaN/inf, or unexpected shapes) for {len(problems)} clip(s) "
                "(too short or unusual audio?): " + "; ".join(problems[:10])
                + ". Nothing was stored for them and the cache is unfinished; fix or drop these clips."
            )
        meta = {
            **base_meta,
            "feature_names": names,
            "frame_rate": frame_rate,
            "frame_shift_s": None if frame_rate is None else 1.0 / frame_rate,
            "sample_rate": SAMPLE_RATE,
            "opensmile": {"version": metadata.version("opensmile"), "feature_set": feature_set, "level": name},
            "build": {**base_meta.get("build", {}), "device": "cpu", "num_workers": workers,
                      "overlapped": current_background() is not None, "ready_s": round(ready_s, 3),
                      "seconds": round(time.perf_counter() - start, 3), "clips_computed": len(pending),
                      "shards_reused": builder.shards_reused},
        }
        return builder.finish(meta)


class EgemapsFunctionals(_OpenSmileKind):
    """Feature kind ``egemaps_functionals``: 88 eGeMAPSv02 functionals per clip, shape (1, 88)."""

    level = "functionals"


class EgemapsLLD(_OpenSmileKind):
    """Feature kind ``egemaps_lld``: 25 eGeMAPSv02 low-level descriptors per 10 ms frame, shape (T, 25)."""

    level = "lld"
