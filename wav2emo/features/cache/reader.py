"""Reading a finished cache: :class:`FeatureCache` opens, validates and serves per-clip arrays as memmap views."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.features.cache.format import (
    _REQUIRED_META,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    META_FILE,
    REBUILD_HINT,
    STAMP_FILE,
    VERIFY_MODES,
    CacheError,
    _check_shard_file,
    _damaged,
    shard_mismatches,
)
from wav2emo.files import atomic_write_text, file_stamp

log = logging.getLogger(__name__)

_VERIFIED: dict[tuple[str, str], list[int]] = {}  # (shard path, index sha256) -> stamp, in this process
_UNCHECKED: set[str] = set()  # caches without checksums already warned about, in this process


# Reading ----------------------------------------------------------------------------------------------
def row_indices(rows: Iterable[int]) -> np.ndarray:
    """``rows`` (any iterable of clip indices) as an int64 array, for indexing a cache's per-clip tables."""
    return np.asarray(rows if isinstance(rows, np.ndarray) else list(rows), dtype=np.int64)


@dataclass(frozen=True)
class Spans:
    """Where clips lie in cache files, for a reader that copies their bytes as stored: clip ``k`` starts at byte
    ``offset[k]`` of shard ``shard[k]`` of ``caches[cache[k]]`` (:meth:`FeatureCache.read_span`), its frames of
    ``frame_shape`` ``dtype`` one after another, time first."""

    caches: tuple[FeatureCache, ...]
    cache: np.ndarray
    shard: np.ndarray
    offset: np.ndarray
    frame_shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def frame_bytes(self) -> int:
        return math.prod(self.frame_shape) * self.dtype.itemsize

    @staticmethod
    def concat(parts: Sequence[Spans]) -> Spans:
        """The clips of ``parts`` end to end (one frame shape and dtype)."""
        first = parts[0]
        if any((p.frame_shape, p.dtype) != (first.frame_shape, first.dtype) for p in parts):
            raise ValueError(f"spans of different frames: {[(p.frame_shape, str(p.dtype)) for p in parts]}")
        caches: list[FeatureCache] = []
        index = []
        for p in parts:
            index.append(np.asarray(p.cache) + len(caches))
            caches.extend(p.caches)
        return Spans(tuple(caches), np.concatenate(index), np.concatenate([p.shard for p in parts]),
                     np.concatenate([p.offset for p in parts]), first.frame_shape, first.dtype)


class FeatureCache:
    """A finished, validated cache: per-clip arrays ``(T_i, *feature_shape)`` read as memmap views.

    Opening reads only meta.json, index.json and the shard headers; :meth:`read` slices a memory map,
    so one clip costs its own bytes and never the whole cache.
    """

    def __init__(self, path: Path, meta: dict[str, Any], index: dict[str, list], shards: list[np.memmap]) -> None:
        self.path = path
        self._meta = meta
        self._clip_ids: list[str] = list(index["clip_id"])
        self._sha1: list[str] = list(index["sha1"])
        self._shard = np.asarray(index["shard"], dtype=np.int64)
        self._offset = np.asarray(index["offset"], dtype=np.int64)
        self._lengths = np.asarray(index["length"], dtype=np.int64)
        self._lengths.setflags(write=False)
        self._shards = shards
        self._pos = {c: i for i, c in enumerate(self._clip_ids)}
        # Each clip's first byte in its shard's file (what read_copy and locate read from).
        shard_starts = np.asarray([int(m.offset) for m in shards], dtype=np.int64)
        frame_bytes = math.prod(int(d) for d in meta["feature_shape"]) * np.dtype(meta["dtype"]).itemsize
        self._byte_offset = shard_starts[self._shard] + self._offset * frame_bytes

    @classmethod
    def open(cls, path: str | Path, *, verify: str = "stamp") -> FeatureCache:
        """Open and validate the cache at ``path``; :class:`CacheError` names what is wrong.

        ``verify``: ``stamp`` hashes the shards changed since their last verification (see the module
        docstring), ``full`` hashes every shard, ``none`` checks only sizes and headers.
        """
        if verify not in VERIFY_MODES:
            raise ValueError(f"verify={verify!r}; expected one of {VERIFY_MODES}")
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise CacheError(
                f"{meta_path}: not found, so {path} is not a finished feature cache (an extraction was "
                "interrupted or is still running). get_features resumes it; or delete the folder."
            )
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise _damaged(path, f"{meta_path}: not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise _damaged(path, f"{meta_path}: expected a JSON object, found {type(meta).__name__}")
        missing = [k for k in _REQUIRED_META if k not in meta]
        if missing:
            raise _damaged(path, f"{meta_path}: missing fields {missing}")
        if meta["format"] != FORMAT or meta["format_version"] != FORMAT_VERSION:
            raise _damaged(
                path,
                f"{meta_path}: format {meta['format']!r} v{meta['format_version']}, expected {FORMAT!r} "
                f"v{FORMAT_VERSION}",
            )
        try:
            feature_shape = tuple(int(s) for s in meta["feature_shape"])
            dtype = np.dtype(meta["dtype"])
            n = int(meta["num_clips"])
            shard_specs = [(str(s["file"]), int(s["frames"])) for s in meta["shards"]]
            index_file, index_sha = str(meta["index"]["file"]), str(meta["index"]["sha256"])
        except (TypeError, ValueError, KeyError) as e:
            raise _damaged(path, f"{meta_path}: malformed field ({type(e).__name__}: {e})") from None

        index = cls._load_index(path, path / index_file, index_sha, n, len(shard_specs))
        shards: list[np.memmap] = []
        for file, frames in shard_specs:
            shard_path = path / file
            shape = (frames, *feature_shape)
            try:
                offset = _check_shard_file(shard_path, shape, dtype)
            except ValueError as e:
                raise _damaged(path, f"{shard_path}: {e}; expected a {dtype} .npy of shape {shape}") from None
            shards.append(np.memmap(shard_path, dtype=dtype, mode="r", offset=offset, shape=shape))
        cls._check_layout(path, index, [f for _, f in shard_specs])
        if verify != "none":
            cls._verify(path, index, index_sha, shards, math.prod(feature_shape) * dtype.itemsize, full=verify == "full")
        return cls(path, meta, index, shards)

    @staticmethod
    def _verify(path: Path, index: Mapping[str, list], index_sha: str, shards: Sequence[np.memmap], row_bytes: int,
                *, full: bool) -> None:
        """Check the crc32 of every clip in the shards that changed since their last verification."""
        if "crc32" not in index:
            if str(path) in _UNCHECKED:
                return
            _UNCHECKED.add(str(path))
            log.warning("%s has no checksums (built by an older wav2emo); damage inside a shard cannot be detected. "
                        "Delete the folder and extract again to add them.", path)
            return
        stamp_path = path / STAMP_FILE
        try:
            stamp = json.loads(stamp_path.read_text())
            if not isinstance(stamp, dict) or stamp.get("index_sha256") != index_sha:
                stamp = {}
        except (OSError, ValueError):
            stamp = {}
        known: dict[str, list[int]] = dict(stamp.get("shards", {})) if not full else {}
        per_shard: dict[int, list[tuple[str, int, int, int]]] = {}
        for cid, sh, off, n, crc in zip(index["clip_id"], index["shard"], index["offset"], index["length"],
                                         index["crc32"], strict=True):
            per_shard.setdefault(int(sh), []).append((cid, int(off), int(n), int(crc)))
        damaged, changed = [], False
        for s, mm in enumerate(shards):
            file = Path(mm.filename)
            now = file_stamp(file)
            memo_key = (str(file), index_sha)
            if not full and (known.get(file.name) == now or _VERIFIED.get(memo_key) == now):
                continue
            bad = shard_mismatches(file, int(mm.offset), row_bytes, sorted(per_shard.get(s, []), key=lambda c: c[1]))
            if bad:
                damaged.append(f"{file.name}: clips {', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}")
                continue
            _VERIFIED[memo_key] = now
            if known.get(file.name) != now:
                known[file.name], changed = now, True
        if damaged:
            raise CacheError(
                f"the feature cache {path} is damaged: {len(damaged)} shard(s) fail their crc32 checksums "
                f"({'; '.join(damaged[:5])}); the files changed after they were written (bit flips, a partial "
                f"overwrite). Nothing was read from them. To rebuild the damaged shards, {REBUILD_HINT}"
            )
        if changed:
            try:
                atomic_write_text(stamp_path, json.dumps({"index_sha256": index_sha, "shards": known}), durable=False)
            except OSError as e:  # a read-only cache: verified again by the next process
                log.debug("cannot record %s (%s)", stamp_path, e)

    @staticmethod
    def _load_index(path: Path, index_path: Path, sha: str, n: int, n_shards: int) -> dict[str, list]:
        try:
            raw = index_path.read_bytes()
        except OSError as e:
            raise _damaged(path, f"{index_path}: cannot be read ({e})") from None
        if hashlib.sha256(raw).hexdigest() != sha:
            raise _damaged(path, f"{index_path}: content does not match the sha256 recorded in meta.json")
        index = json.loads(raw)
        for col in ("clip_id", "sha1", "shard", "offset", "length", *(("crc32",) if "crc32" in index else ())):
            if len(index.get(col, ())) != n:
                raise _damaged(path, f"{index_path}: column {col!r} should list {n} clips")
        return index

    @staticmethod
    def _check_layout(path: Path, index: Mapping[str, list], shard_frames: Sequence[int]) -> None:
        shard = np.asarray(index["shard"], dtype=np.int64)
        offset = np.asarray(index["offset"], dtype=np.int64)
        length = np.asarray(index["length"], dtype=np.int64)
        if len(shard) and (shard.min() < 0 or shard.max() >= len(shard_frames)):
            raise _damaged(path, f"{path / INDEX_FILE}: shard numbers outside 0..{len(shard_frames) - 1}")
        ends = offset + length
        limits = np.asarray(shard_frames, dtype=np.int64)[shard] if len(shard) else ends
        if (length < 1).any() or (offset < 0).any() or (ends > limits).any():
            raise _damaged(path, f"{path / INDEX_FILE}: clip offsets/lengths outside their shards")
        covered = np.bincount(shard, weights=length, minlength=len(shard_frames))
        if not np.array_equal(covered.astype(np.int64), np.asarray(shard_frames, dtype=np.int64)):
            raise _damaged(path, f"{path / INDEX_FILE}: clip lengths do not add up to the shard sizes")

    def __reduce__(self):  # DataLoader workers re-open (and re-validate) instead of pickling memmaps
        return (FeatureCache.open, (str(self.path),))

    def __repr__(self) -> str:
        return (
            f"FeatureCache({str(self.path)!r}, clips={self.num_clips}, feature_shape={self.feature_shape}, "
            f"dtype={self.dtype})"
        )

    # Description ---------------------------------------------------------------------------------------
    @property
    def meta(self) -> dict[str, Any]:
        return self._meta

    @property
    def key(self) -> str:
        return str(self._meta["key"])

    @property
    def kind(self) -> str:
        return str(self._meta["kind"])

    @property
    def num_clips(self) -> int:
        return len(self._clip_ids)

    def __len__(self) -> int:
        return self.num_clips

    @property
    def clip_ids(self) -> list[str]:
        return list(self._clip_ids)

    @property
    def sha1s(self) -> list[str]:
        return list(self._sha1)

    @property
    def lengths(self) -> np.ndarray:
        """Frames per clip (int64, read-only); 1 for functionals."""
        return self._lengths

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._meta["feature_shape"])

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self._meta["dtype"])

    @property
    def frame_rate(self) -> float | None:
        """Frames per second of audio; None for per-clip functionals."""
        rate = self._meta.get("frame_rate")
        return None if rate is None else float(rate)

    @property
    def layer_names(self) -> list[str] | None:
        """Names of the hidden states along axis 1 (``ssl_hidden_states`` only)."""
        names = self._meta.get("layer_names")
        return None if names is None else list(names)

    @property
    def feature_names(self) -> list[str] | None:
        names = self._meta.get("feature_names")
        return None if names is None else list(names)

    @property
    def nbytes(self) -> int:
        return int(sum(s.nbytes for s in self._shards))

    # Access -----------------------------------------------------------------------------------------------
    def index_of(self, clip_id: str) -> int:
        try:
            return self._pos[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in the feature cache {self.path}") from None

    def rows_for(self, clips: Iterable[Any]) -> np.ndarray:
        """Cache rows of these manifest clips, refusing any whose audio (sha1) differs from what was cached."""
        rows = []
        for clip in clips:
            i = self.index_of(clip.clip_id)
            if self._sha1[i] != clip.sha1:
                raise CacheError(
                    f"clip {clip.clip_id!r}: audio sha1 {clip.sha1} differs from {self._sha1[i]} in the cache "
                    f"{self.path}; the features belong to other audio"
                )
            rows.append(i)
        return np.asarray(rows, dtype=np.int64)

    def read(self, i: int) -> np.ndarray:
        """Clip ``i``'s features ``(T_i, *feature_shape)``: a read-only memmap view, nothing is loaded."""
        i = int(i)
        if not -self.num_clips <= i < self.num_clips:
            raise IndexError(f"clip index {i} out of range for a cache of {self.num_clips} clips ({self.path})")
        i %= self.num_clips
        o, n = int(self._offset[i]), int(self._lengths[i])
        return self._shards[int(self._shard[i])][o : o + n]

    def read_many(self, indices: Iterable[int]) -> list[np.ndarray]:
        return [self.read(i) for i in indices]

    def read_copy(self, i: int) -> np.ndarray:
        """Clip ``i``'s features copied into a new array with one ``pread``.

        Unlike :meth:`read`, nothing stays mapped into the process afterwards, so a training run that
        visits every clip each epoch keeps its resident memory independent of the cache size (the
        kernel's page cache still speeds up repeated reads, and is reclaimable).
        """
        i = int(i)
        if not -self.num_clips <= i < self.num_clips:
            raise IndexError(f"clip index {i} out of range for a cache of {self.num_clips} clips ({self.path})")
        i %= self.num_clips
        out = np.empty((int(self._lengths[i]), *self.feature_shape), dtype=self.dtype)
        self.read_span(int(self._shard[i]), int(self._byte_offset[i]), memoryview(out).cast("B"), f"clip {i}")
        return out

    def locate(self, rows: Iterable[int]) -> Spans:
        """Where clips ``rows`` lie on disk (:class:`Spans`): each one's shard, and the byte offset of its first
        frame in that shard's file; its :attr:`lengths` frames follow, time first."""
        rows = row_indices(rows)
        return Spans((self,), np.zeros(len(rows), dtype=np.int64), self._shard[rows], self._byte_offset[rows],
                     self.feature_shape, self.dtype)

    def read_span(self, shard: int, offset: int, out: memoryview, what: str = "a span") -> None:
        """Bytes ``offset .. offset + len(out)`` of shard ``shard``'s file (offsets from :meth:`locate`) into the
        writable byte buffer ``out``, with one ``pread``; a short read is an error naming the file and ``what``."""
        memmap = self._shards[int(shard)]
        end = int(memmap.offset) + memmap.nbytes
        if not int(memmap.offset) <= offset <= offset + out.nbytes <= end:
            raise IndexError(f"{what}: bytes {offset}..{offset + out.nbytes} are outside the rows of "
                             f"{memmap.filename} (bytes {int(memmap.offset)}..{end})")
        got = os.preadv(self._fd(int(shard), memmap.filename), [out], offset)
        if got != out.nbytes:
            raise _damaged(self.path, f"{memmap.filename}: short read ({got} of {out.nbytes} bytes) for {what}")

    def _fd(self, shard: int, filename: str) -> int:
        # One descriptor per shard and process; pread needs no shared file position, so forked
        # DataLoader workers may use inherited descriptors safely.
        # Reader threads may open a shard at once: the first descriptor stored is kept, the others closed.
        fds = self.__dict__.setdefault("_fds", {})
        fd = fds.get(shard)
        if fd is None:
            opened = os.open(filename, os.O_RDONLY)
            fd = fds.setdefault(shard, opened)
            if fd != opened:
                os.close(opened)
        return fd


# Writing ----------------------------------------------------------------------------------------------
