"""eGeMAPSv02 through openSMILE: 88 functionals per clip, or 25 low-level descriptors per 10 ms frame.

Stored as float32, not float16: functionals mix scales (loudness near 0.1, spectral slopes and
formant bandwidths in the hundreds or thousands, equivalent sound level around -60 dB) and several
are small differences of large numbers; float16 keeps ~3 significant digits and would turn fine
per-speaker differences into rounding noise.  The whole eGeMAPS cache of RAVDESS is ~0.5 MB anyway.

openSMILE is imported lazily, so machines without it can still extract SSL features.  Clips are
processed in worker processes (openSMILE runs ~20x real time on one core; it is not thread-safe, so
processes it is: see :mod:`wav2emo.features.smile_worker`) and written into the cache as they finish,
in small shards, so an interrupted run resumes.  Clips shorter than openSMILE's minimum are refused
before any work; every value is still checked: a NaN or infinity is an error naming the clip and the
features, never a stored number.
"""

from __future__ import annotations

import json
import logging
import math
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.errors import UserError
from wav2emo.features.cache import CacheBuilder
from wav2emo.features.limits import check_durations

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# openSMILE's eGeMAPSv02 gives NaN for every feature (functionals and LLDs alike) below 960 samples at
# 16 kHz (measured: 920 samples NaN, 960 finite, for speech-like tones, silence and noise alike).
MIN_CLIP_S = 0.06
_LEVELS = {"functionals": ("Functionals", 88, None), "lld": ("LowLevelDescriptors", 25, 100.0)}
_SMILE: Any = None  # one per worker process


class EgemapsError(UserError, RuntimeError):
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


class SmilePool:
    """openSMILE in ``n`` worker processes (:mod:`wav2emo.features.smile_worker`), fed by one thread each.

    Stopping is prompt and complete: :meth:`close` (also on Ctrl-C or any error in the caller) closes
    the workers' input, sends SIGTERM, and SIGKILL to any still alive after ``grace_s``; the workers
    ignore SIGINT, so a Ctrl-C to the process group reaches only the parent, which then stops them.
    """

    def __init__(self, num_workers: int, feature_set: str, level: str, *, grace_s: float = 2.0) -> None:
        self.grace_s = grace_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.procs: list[subprocess.Popen] = []
        try:
            for _ in range(max(1, num_workers)):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "wav2emo.features.smile_worker", feature_set, level],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                ))
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> SmilePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self, proc: subprocess.Popen, jobs: queue.Queue, results: queue.Queue) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        while not self._stop.is_set():
            try:
                i, path = jobs.get_nowait()
            except queue.Empty:
                return
            try:
                proc.stdin.write((json.dumps(path) + "\n").encode())
                proc.stdin.flush()
                (size,) = struct.unpack("<Q", _read_exact(proc.stdout, 8))
                header = json.loads(_read_exact(proc.stdout, size))
                if "error" in header:
                    results.put((i, EgemapsError(f"{path}: openSMILE failed: {header['error']}")))
                    continue
                shape = tuple(header["shape"])
                data = _read_exact(proc.stdout, 8 * math.prod(shape))
                results.put((i, np.frombuffer(data, dtype="<f8").reshape(shape).astype(np.float64)))
            except (OSError, ValueError, EOFError) as e:
                if not self._stop.is_set():
                    results.put((i, EgemapsError(
                        f"{path}: the openSMILE worker process {proc.pid} stopped (exit code {proc.poll()}; {e})")))
                return

    def imap_unordered(self, paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
        """``(i, features of paths[i])`` as the workers finish them; the first failure is raised."""
        jobs: queue.Queue = queue.Queue()
        results: queue.Queue = queue.Queue()
        for item in enumerate(paths):
            jobs.put(item)
        self._threads = [
            threading.Thread(target=self._serve, args=(p, jobs, results), name=f"wav2emo-smile-{p.pid}", daemon=True)
            for p in self.procs
        ]
        for t in self._threads:
            t.start()
        for _ in range(len(paths)):
            while True:
                try:  # a short timeout keeps the main thread responsive to Ctrl-C
                    i, res = results.get(timeout=0.1)
                    break
                except queue.Empty:
                    if not any(t.is_alive() for t in self._threads) and results.empty():
                        raise EgemapsError("every openSMILE worker process stopped before the work was done") from None
            if isinstance(res, BaseException):
                raise res
            yield i, res

    def close(self) -> None:
        """Stop every worker now (no waiting for queued clips); never leaves a process behind."""
        self._stop.set()
        for p in self.procs:
            for f in (p.stdin,):
                try:
                    if f is not None:
                        f.close()
                except OSError:
                    pass
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + self.grace_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for t in self._threads:
            t.join(timeout=1.0)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise EOFError(f"expected {n} bytes from the worker, got {0 if data is None else len(data)}")
    return data


def iter_egemaps(
    paths: Sequence[str],
    *,
    feature_set: str = "eGeMAPSv02",
    level: str = "functionals",
    num_workers: int = 1,
) -> Iterator[tuple[int, np.ndarray]]:
    """``(i, openSMILE output of paths[i])`` for every file, in order when serial, as finished otherwise."""
    if num_workers <= 1:
        _init_worker(feature_set, level)
        for i, p in enumerate(paths):
            yield i, _process_path(p)
        return
    with SmilePool(num_workers, feature_set, level) as pool:
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
        """``num_workers`` when set; by default one process per core (8 at most), none under 200 clips
        (starting worker processes, ~2 s, costs more than a few clips)."""
        n = self.spec["num_workers"]
        if n is not None:
            return max(1, min(int(n), n_clips))
        return 1 if n_clips < 200 else min(8, os.cpu_count() or 1)

    def _frames(self, clip: Any) -> int:
        if self.level == "functionals":
            return 1
        from wav2emo.features.extraction import expected_samples

        return max(0, (expected_samples(clip, SAMPLE_RATE) - 800) // 160 + 1)  # 60 ms windows every 10 ms

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        from tqdm.auto import tqdm

        start = time.perf_counter()
        self.check_clips(manifest)
        name, n_features, frame_rate = _LEVELS[self.level]
        names = list(make_smile(self.spec["feature_set"], self.level).feature_names)
        if len(names) != n_features:
            raise EgemapsError(f"{self.spec['feature_set']} {name}: {len(names)} features, expected {n_features}")
        builder = CacheBuilder(
            path, clip_ids=manifest.clip_ids, sha1s=[c.sha1 for c in manifest],
            lengths=[self._frames(c) for c in manifest], feature_shape=(n_features,), dtype=np.float32,
            shard_bytes=max(1, int(float(self.spec["shard_mb"]) * 2**20)), durable=bool(self.spec["durable"]),
        )
        pending = builder.pending
        workers = self._workers(len(pending))
        problems: list[str] = []
        results = iter_egemaps([manifest[i].path for i in pending], feature_set=self.spec["feature_set"],
                               level=self.level, num_workers=workers)
        try:  # closing the generator on any exit (Ctrl-C included) stops the worker processes at once
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
            "opensmile": {"version": metadata.version("opensmile"), "feature_set": self.spec["feature_set"], "level": name},
            "build": {**base_meta.get("build", {}), "device": "cpu", "num_workers": workers,
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
