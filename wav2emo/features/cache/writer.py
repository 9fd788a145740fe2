"""Writing a cache: :class:`CacheBuilder` plans shards, writes clips from several threads, resumes an
interrupted build and writes meta.json last; :func:`build_from_arrays` for arrays computed in one go."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import shutil
import threading
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.features.cache.format import (
    CRC_SUFFIX,
    DEFAULT_SHARD_BYTES,
    FORMAT,
    FORMAT_VERSION,
    INDEX_FILE,
    META_FILE,
    PARTIAL_SUFFIX,
    PLAN_FILE,
    STAMP_FILE,
    CacheError,
    DiskFullError,
    _check_shard_file,
    _crc_name,
    _shard_name,
    shard_mismatches,
)
from wav2emo.files import atomic_write_text, file_stamp, fsync_dir

log = logging.getLogger(__name__)


class _Shard:
    """Book-keeping of one shard while it is written."""

    def __init__(self, number: int, clips: list[int], frames: int) -> None:
        self.number, self.clips, self.frames = number, clips, frames
        self.done_frames = 0
        self.fd: int | None = None
        self.data_offset = 0
        self.complete = False


class CacheBuilder:
    """Writes one cache folder, resumably; the caller holds the build lock.

    The clips are laid out in ``order`` (extraction order, e.g. sorted by length) and cut into shards
    of about ``shard_bytes``.  :attr:`pending` lists the clips still to compute: on a resumed build the
    clips of shards finished earlier are not in it.  :meth:`write` may be called from several threads
    (each shard is its own file; writes are positioned ``pwrite`` calls, which avoid the page faults of
    writing through a memmap); :meth:`finish` writes index.json and then meta.json.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        clip_ids: Sequence[str],
        sha1s: Sequence[str],
        lengths: Sequence[int],
        feature_shape: Sequence[int],
        dtype: str | np.dtype,
        order: Sequence[int] | None = None,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        durable: bool = True,
    ) -> None:
        self.path = Path(path)
        self.clip_ids = list(clip_ids)
        self.sha1s = list(sha1s)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.feature_shape = tuple(int(s) for s in feature_shape)
        self.dtype = np.dtype(dtype)
        self.durable = durable
        n = len(self.clip_ids)
        if n == 0:
            raise ValueError(f"{self.path}: a cache needs at least one clip")
        if not (len(self.sha1s) == len(self.lengths) == n):
            raise ValueError(f"{self.path}: clip_ids, sha1s and lengths must have the same length")
        bad = [self.clip_ids[i] for i in np.flatnonzero(self.lengths < 1)[:5]]
        if bad:
            raise ValueError(f"{self.path}: clips {bad} would have no frames; expected at least 1 frame each")
        self.order = list(range(n)) if order is None else [int(i) for i in order]
        if sorted(self.order) != list(range(n)):
            raise ValueError(f"{self.path}: order must be a permutation of the {n} clip indices")
        self.row_bytes = math.prod(self.feature_shape) * self.dtype.itemsize
        self._lock = threading.Lock()
        self._plan(max(1, int(shard_bytes)))
        self._written = np.zeros(n, dtype=bool)
        self._crc = np.zeros(n, dtype=np.int64)
        self._disk_full = False
        self.path.mkdir(parents=True, exist_ok=True)
        self.shards_reused = self._prepare_folder()
        for sh in self._shards:
            if sh.complete:
                self._written[sh.clips] = True

    def _plan(self, shard_bytes: int) -> None:
        groups: list[list[int]] = [[]]
        size = 0
        for i in self.order:
            nbytes = int(self.lengths[i]) * self.row_bytes
            if groups[-1] and size + nbytes > shard_bytes:
                groups.append([])
                size = 0
            groups[-1].append(i)
            size += nbytes
        self._shard_of = np.empty(len(self.clip_ids), dtype=np.int64)
        self._offset = np.empty(len(self.clip_ids), dtype=np.int64)
        self._shards: list[_Shard] = []
        for s, clips in enumerate(groups):
            frames = 0
            for i in clips:
                self._shard_of[i], self._offset[i] = s, frames
                frames += int(self.lengths[i])
            self._shards.append(_Shard(s, clips, frames))

    def _plan_record(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype.str,
            "clips": [[self.clip_ids[i], self.sha1s[i], int(self.lengths[i])] for i in self.order],
            "shards": [len(sh.clips) for sh in self._shards],
        }

    def _prepare_folder(self) -> int:
        """Drop stale partial shards, keep whole shards of the same plan; returns how many were kept."""
        for p in [*self.path.glob(f"shard-*.npy{PARTIAL_SUFFIX}"), *self.path.glob(".*.tmp")]:
            log.info("discarding %s, left by an interrupted extraction", p)
            p.unlink(missing_ok=True)
        plan_path = self.path / PLAN_FILE
        plan = self._plan_record()
        old_plan = None
        if plan_path.is_file():
            try:
                old_plan = json.loads(plan_path.read_text())
            except (OSError, json.JSONDecodeError):
                old_plan = None
        if old_plan != plan:
            stale = sorted([*self.path.glob("shard-*.npy"), *self.path.glob(f"shard-*{CRC_SUFFIX}")])
            if stale:
                log.info("%s: the shard plan changed; discarding %d shards of the earlier plan", self.path, len(stale))
            for p in stale:
                p.unlink()
            atomic_write_text(plan_path, json.dumps(plan), durable=self.durable)
            return 0
        kept = 0
        for sh in self._shards:
            final = self.path / _shard_name(sh.number)
            if not final.exists():
                continue
            try:
                data_offset = _check_shard_file(final, (sh.frames, *self.feature_shape), self.dtype)
                self._check_kept_shard(sh, final, data_offset)
            except ValueError as e:
                log.warning("%s: %s; computing this shard again", final, e)
                final.unlink()
                (self.path / _crc_name(sh.number)).unlink(missing_ok=True)
                continue
            sh.complete, sh.done_frames = True, sh.frames
            kept += 1
        return kept

    def _check_kept_shard(self, sh: _Shard, final: Path, data_offset: int) -> None:
        """A shard kept from an earlier run must match the crc32s it was written with (its sidecar)."""
        try:
            recorded = json.loads((self.path / _crc_name(sh.number)).read_text())["clips"]
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"its checksum file {_crc_name(sh.number)} is missing or unreadable") from None
        order = sorted(sh.clips, key=lambda i: self._offset[i])
        if [r[0] for r in recorded] != [self.clip_ids[i] for i in order]:
            raise ValueError(f"its checksum file {_crc_name(sh.number)} lists other clips")
        clips = [(self.clip_ids[i], int(self._offset[i]), int(self.lengths[i]), int(r[1]))
                 for i, r in zip(order, recorded, strict=True)]
        bad = shard_mismatches(final, data_offset, self.row_bytes, clips)
        if bad:
            raise ValueError(f"clips {bad[:3]} fail their crc32 checksums")
        for i, r in zip(order, recorded, strict=True):
            self._crc[i] = int(r[1])

    @property
    def num_shards(self) -> int:
        return len(self._shards)

    @property
    def pending(self) -> list[int]:
        """Clip indices still to compute, in layout order."""
        return [i for i in self.order if not self._written[i]]

    @property
    def total_bytes(self) -> int:
        return int(self.lengths.sum()) * self.row_bytes

    def check_free_space(self) -> None:
        need = sum(sh.frames for sh in self._shards if not sh.complete) * self.row_bytes
        free = shutil.disk_usage(self.path).free
        if need > free:
            raise CacheError(
                f"{self.path}: the cache needs {need / 1e9:.2f} GB more but only {free / 1e9:.2f} GB are free "
                "there; free space or point paths.cache_dir elsewhere"
            )

    def write(self, clip: int, data: np.ndarray) -> None:
        """Store clip ``clip``'s array (exactly ``(length, *feature_shape)`` of the cache dtype); thread-safe."""
        clip = int(clip)
        expected = (int(self.lengths[clip]), *self.feature_shape)
        if tuple(data.shape) != expected or data.dtype != self.dtype:
            raise ValueError(
                f"clip {self.clip_ids[clip]!r}: got {data.dtype} {tuple(data.shape)}, expected {self.dtype} "
                f"{expected} for {self.path}"
            )
        data = np.ascontiguousarray(data)
        sh = self._shards[int(self._shard_of[clip])]
        with self._lock:
            if self._written[clip]:
                raise ValueError(f"clip {self.clip_ids[clip]!r} was written twice to {self.path}")
            self._written[clip] = True
            if sh.fd is None:
                self._open_shard(sh)
            fd = sh.fd
        assert fd is not None
        position = sh.data_offset + int(self._offset[clip]) * self.row_bytes
        buf = memoryview(data.reshape(-1).view(np.uint8))
        self._crc[clip] = zlib.crc32(buf)  # releases the GIL: writer threads hash in parallel
        try:
            while len(buf):
                written = os.pwrite(fd, buf, position)
                buf, position = buf[written:], position + written
        except OSError as e:
            raise self._write_error(self.path / (_shard_name(sh.number) + PARTIAL_SUFFIX), e) from e
        with self._lock:
            sh.done_frames += expected[0]
            finished = sh.done_frames == sh.frames
        if finished:
            self._finalize_shard(sh)

    def _write_error(self, file: Path, e: OSError) -> CacheError:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            self._disk_full = True
            try:
                free = f"{shutil.disk_usage(self.path).free / 1e9:.2f} GB free now"
            except OSError:
                free = "free space unknown"
            return DiskFullError(
                f"{file}: no space left on the device ({e.strerror}; {free}) while writing the feature cache "
                f"{self.path}, which needs {self.total_bytes / 1e9:.2f} GB in all. Its unfinished shards are "
                "removed, its finished shards kept for the next run to resume from, and no other cache was "
                "touched. Free space (or set paths.cache_dir to a larger disk) and run again."
            )
        return CacheError(f"{file}: write failed ({e}); the feature cache {self.path} is unfinished and resumes next run")

    def _open_shard(self, sh: _Shard) -> None:
        partial = self.path / (_shard_name(sh.number) + PARTIAL_SUFFIX)
        try:
            mm = np.lib.format.open_memmap(partial, mode="w+", dtype=self.dtype, shape=(sh.frames, *self.feature_shape))
        except OSError as e:
            raise self._write_error(partial, e) from e
        sh.data_offset = int(mm.offset)
        del mm  # only the header and the file size were wanted; data goes through pwrite
        sh.fd = os.open(partial, os.O_WRONLY)

    def _finalize_shard(self, sh: _Shard) -> None:
        """Close a fully written shard, record its clips' crc32s, then give it its final name (fsynced when durable)."""
        assert sh.fd is not None
        if self.durable:
            os.fsync(sh.fd)
        os.close(sh.fd)
        sh.fd = None
        name = _shard_name(sh.number)
        order = sorted(sh.clips, key=lambda i: self._offset[i])
        sums = {"clips": [[self.clip_ids[i], int(self._crc[i])] for i in order]}
        try:
            atomic_write_text(self.path / _crc_name(sh.number), json.dumps(sums), durable=self.durable)
        except OSError as e:
            raise self._write_error(self.path / _crc_name(sh.number), e) from e
        os.replace(self.path / (name + PARTIAL_SUFFIX), self.path / name)
        sh.complete = True

    def close(self) -> None:
        """Release open shard files without finishing them (after an error).

        Partial files stay (the next build discards them) unless the disk is full: then they go now,
        so that the space they hold is given back at once.
        """
        with self._lock:
            for sh in self._shards:
                if sh.fd is not None:
                    os.close(sh.fd)
                    sh.fd = None
            if self._disk_full:
                for sh in self._shards:
                    if not sh.complete:
                        (self.path / (_shard_name(sh.number) + PARTIAL_SUFFIX)).unlink(missing_ok=True)

    def finish(self, meta: Mapping[str, Any]) -> dict[str, Any]:
        """Write index.json, then meta.json (the completion mark); returns the meta written."""
        missing = [self.clip_ids[i] for i in np.flatnonzero(~self._written)[:5]]
        unfinished = [sh.number for sh in self._shards if not sh.complete]
        if missing or unfinished:
            raise CacheError(f"{self.path}: cannot finish, clips {missing} / shards {unfinished} were not written")
        index = {
            "clip_id": self.clip_ids,
            "sha1": self.sha1s,
            "shard": self._shard_of.tolist(),
            "offset": self._offset.tolist(),
            "length": self.lengths.tolist(),
            "crc32": self._crc.tolist(),
        }
        index_text = json.dumps(index, separators=(",", ":"))
        try:
            atomic_write_text(self.path / INDEX_FILE, index_text, durable=self.durable)
        except OSError as e:
            raise self._write_error(self.path / INDEX_FILE, e) from e
        full = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            **meta,
            "num_clips": len(self.clip_ids),
            "total_frames": int(self.lengths.sum()),
            "feature_shape": list(self.feature_shape),
            "dtype": self.dtype.name,
            "shards": [
                {"file": _shard_name(sh.number), "frames": sh.frames, "clips": len(sh.clips)} for sh in self._shards
            ],
            "index": {"file": INDEX_FILE, "sha256": hashlib.sha256(index_text.encode()).hexdigest()},
        }
        if self.durable:
            fsync_dir(self.path)
        index_sha = full["index"]["sha256"]
        stamp = {"index_sha256": index_sha,
                 "shards": {_shard_name(sh.number): file_stamp(self.path / _shard_name(sh.number)) for sh in self._shards}}
        try:  # the checksums were computed from the bytes written: no need to hash them again on first open
            atomic_write_text(self.path / STAMP_FILE, json.dumps(stamp), durable=False)
            atomic_write_text(self.path / META_FILE, json.dumps(full, indent=2, allow_nan=False) + "\n",
                              durable=self.durable)
        except OSError as e:
            raise self._write_error(self.path / META_FILE, e) from e
        (self.path / PLAN_FILE).unlink(missing_ok=True)
        return full

    def __enter__(self) -> CacheBuilder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def build_from_arrays(
    path: str | Path,
    *,
    clip_ids: Sequence[str],
    sha1s: Sequence[str],
    arrays: Sequence[np.ndarray],
    dtype: str | np.dtype,
    meta: Mapping[str, Any],
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    durable: bool = True,
) -> dict[str, Any]:
    """Write a cache from per-clip arrays already in memory (small features: eGeMAPS, log-mel)."""
    dtype = np.dtype(dtype)
    shapes = {tuple(a.shape[1:]) for a in arrays}
    if len(shapes) != 1:
        raise ValueError(f"{path}: per-clip arrays disagree on their feature shape: {sorted(shapes)[:5]}")
    with CacheBuilder(
        path,
        clip_ids=clip_ids,
        sha1s=sha1s,
        lengths=[a.shape[0] for a in arrays],
        feature_shape=shapes.pop(),
        dtype=dtype,
        shard_bytes=shard_bytes,
        durable=durable,
    ) as builder:
        for i in builder.pending:
            builder.write(i, np.ascontiguousarray(arrays[i], dtype=dtype))
        return builder.finish({**meta, "build": {**meta.get("build", {}), "shards_reused": builder.shards_reused}})


# Repair and clean-up -------------------------------------------------------------------------------------------
