"""The feature cache: per-clip arrays computed once, stored memory-mapped, reused by every training run.

One folder holds one feature set of one corpus::

    <cache_dir>/<manifest name>/<spec name>-<key[:16]>/
        meta.json            what the cache is (spec, backbone, shapes, versions); written LAST, so its
                             presence means "complete"
        index.json           per clip, in manifest order: clip_id, sha1 of the audio, shard, offset, length
        shard-00000.npy ...  clips of shape (T_i, *feature_shape) concatenated along axis 0 (.npy files,
                             readable by ``np.load(mmap_mode="r")``)
        shard-00000.crc.json per shard: the crc32 of each of its clips (written before the shard's rename)
        verified.json        a stamp: (size, mtime, ctime, inode) of every shard when its checksums last held
        plan.json            only while building: the shard plan, so an interrupted build resumes
        build.lock           the lock parallel jobs take before building

``key`` is the sha256 of a canonical JSON of everything that changes the numbers (corpus content hash,
feature spec, backbone identity): a different corpus or config gets a different folder and never
mixes with an old one.  Shards are written as ``*.partial`` and renamed when complete, so a shard
file with its final name is always whole; a crash leaves finished shards to be reused and a partial
one to be discarded.

Checksums: every clip's bytes get a crc32 when written (in the writer threads, ~2 GB/s, no read-back),
kept in index.json (itself sha256-checked by meta.json) and in a small sidecar per shard.  Opening a
cache compares each shard's ``stat`` with the stamp in verified.json and hashes only shards whose
size, mtime, ctime or inode changed since they were last verified (a same-size overwrite changes
mtime and ctime), so a training start-up costs a few ``stat`` calls and a damaged shard is named
before any batch is read.  ``verify="full"`` hashes everything (crc32 runs at ~1.8 GB/s per core
here: a 5.3 GB cache in about 3 s from the page cache, longer from disk).  crc32 detects accidental
damage (bit flips, partial overwrites); it is not a defence against a deliberate forger, who could
rewrite index.json and meta.json too.  A damaged cache is never rebuilt silently: the error says
how to ask for it (``rebuild=true``), and then only the damaged shards are computed again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import re
import shutil
import threading
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.errors import UserError

log = logging.getLogger(__name__)

FORMAT = "wav2emo-feature-cache"
FORMAT_VERSION = 1
META_FILE = "meta.json"
INDEX_FILE = "index.json"
PLAN_FILE = "plan.json"
LOCK_FILE = "build.lock"
PARTIAL_SUFFIX = ".partial"
STAMP_FILE = "verified.json"
CRC_SUFFIX = ".crc.json"
VERIFY_MODES = ("stamp", "full", "none")
REBUILD_HINT = (
    "run `python -m wav2emo.extract rebuild=true` with the same data= and features= overrides as the run "
    "that built it (only damaged shards are computed again), or delete the folder"
)
_CHUNK = 16 * 2**20  # bytes hashed per read when verifying
DEFAULT_SHARD_BYTES = 256 * 2**20  # ~one GPU batch of hidden states: several shards are in flight at once

_REQUIRED_META = ("format", "format_version", "key", "kind", "num_clips", "feature_shape", "dtype", "shards", "index")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class CacheError(UserError, RuntimeError):
    """A cache folder that cannot be used as it is; the message names the file and what was expected."""


class DiskFullError(CacheError):
    """The disk filled up while a cache was written; finished shards and every other cache are intact."""


def _damaged(path: Path, problem: str) -> CacheError:
    return CacheError(
        f"{problem}. The feature cache {path} is damaged or incomplete: delete that folder and run again "
        "to rebuild it (or run `python -m wav2emo.extract rebuild=true` with the same data= and features= "
        "overrides, which keeps its sound shards)."
    )


# Keys and paths ------------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> str:
    """The one JSON text of ``obj`` (sorted keys, no spaces, no NaN) that the cache key hashes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def cache_key(fields: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(fields).encode()).hexdigest()


def check_name(value: str, what: str) -> str:
    """Names become folder names: refuse anything that could escape or confuse the cache tree."""
    if not isinstance(value, str) or not _SAFE_NAME.match(value) or value in (".", ".."):
        raise ValueError(
            f"{what}={value!r} cannot name a cache folder; expected letters, digits and . _ + - "
            "(starting with a letter or digit)"
        )
    return value


def cache_path(cache_dir: str | Path, manifest_name: str, spec_name: str, key: str) -> Path:
    check_name(manifest_name, "manifest name")
    check_name(spec_name, "feature spec name")
    return Path(cache_dir) / manifest_name / f"{spec_name}-{key[:16]}"


# Small atomic-file helpers ------------------------------------------------------------------------------
def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str, *, durable: bool = True) -> None:
    """Write ``text`` to a temporary sibling, then rename it over ``path``: readers see old or new, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of an .npy file, reading only its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy version {version}")
        return tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), f.tell()


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.npy"


def _check_shard_file(path: Path, shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Raise ValueError unless ``path`` is a whole .npy of this shape and dtype; returns its data offset."""
    if not path.is_file():
        raise ValueError("the file is missing")
    try:
        found_shape, found_dtype, fortran, offset = _read_npy_header(path)
    except Exception as e:  # truncated header, not an .npy at all
        raise ValueError(f"its .npy header cannot be read ({type(e).__name__}: {e})") from None
    if found_shape != shape or found_dtype != dtype or fortran:
        raise ValueError(f"it holds {found_dtype} {found_shape}{' (Fortran order)' if fortran else ''}")
    size, expected = path.stat().st_size, offset + math.prod(shape) * dtype.itemsize
    if size != expected:
        raise ValueError(f"it is {size} bytes long (truncated or padded)")
    return offset


def _crc_name(s: int) -> str:
    return f"shard-{s:05d}{CRC_SUFFIX}"


def file_stamp(path: Path) -> list[int]:
    """What changes when a file's bytes change: size, mtime, ctime (which no utime call can restore), inode."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


def range_crc32(fd: int, start: int, nbytes: int) -> int:
    """crc32 of ``nbytes`` bytes of ``fd`` from ``start``, read in chunks (bounded memory for long clips)."""
    crc, done = 0, 0
    while done < nbytes:
        want = min(_CHUNK, nbytes - done)
        data = os.pread(fd, want, start + done)
        if len(data) != want:
            raise ValueError(f"short read ({start + done + len(data)} of {start + nbytes} bytes)")
        crc = zlib.crc32(data, crc)
        done += want
    return crc


def shard_mismatches(
    path: Path, data_offset: int, row_bytes: int, clips: Sequence[tuple[str, int, int, int]]
) -> list[str]:
    """Clips ``(clip_id, frame offset, frames, crc32)`` of one shard whose bytes no longer match their crc32."""
    bad = []
    fd = os.open(path, os.O_RDONLY)
    try:
        for clip_id, offset, length, crc in clips:
            try:
                got = range_crc32(fd, data_offset + offset * row_bytes, length * row_bytes)
            except ValueError as e:
                bad.append(f"{clip_id!r} ({e})")
                continue
            if got != crc:
                bad.append(f"{clip_id!r} (frames {offset}..{offset + length - 1})")
    finally:
        os.close(fd)
    return bad


_VERIFIED: dict[tuple[str, str], list[int]] = {}  # (shard path, index sha256) -> stamp, in this process
_UNCHECKED: set[str] = set()  # caches without checksums already warned about, in this process


# Reading ----------------------------------------------------------------------------------------------
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
        shard = self._shards[int(self._shard[i])]
        row_bytes = int(np.prod(self.feature_shape, dtype=np.int64)) * self.dtype.itemsize
        out = np.empty((int(self._lengths[i]), *self.feature_shape), dtype=self.dtype)
        fd = self._fd(int(self._shard[i]), shard.filename)
        want = out.nbytes
        got = os.preadv(fd, [memoryview(out).cast("B")], int(shard.offset) + int(self._offset[i]) * row_bytes)
        if got != want:
            raise _damaged(self.path, f"{shard.filename}: short read ({got} of {want} bytes) for clip {i}")
        return out

    def _fd(self, shard: int, filename: str) -> int:
        # One descriptor per shard and process; pread needs no shared file position, so forked
        # DataLoader workers may use inherited descriptors safely.
        fds = self.__dict__.setdefault("_fds", {})
        if shard not in fds:
            fds[shard] = os.open(filename, os.O_RDONLY)
        return fds[shard]


# Writing ----------------------------------------------------------------------------------------------
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
def prepare_rebuild(path: str | Path) -> bool:
    """Turn a damaged finished cache back into an unfinished build that resumes from its sound shards.

    Returns False (and changes nothing) when the cache verifies in full.  Otherwise the shard plan is
    written back from meta.json and index.json (when they are readable), meta.json, index.json and the
    stamp are removed, and the next build keeps every shard whose bytes still match its crc32 sidecar:
    only damaged shards are computed again.  The caller holds the build lock.
    """
    path = Path(path)
    try:
        FeatureCache.open(path, verify="full")
        return False
    except CacheError as e:
        log.warning("rebuilding the damaged parts of %s: %s", path, e)
    try:
        meta = json.loads((path / META_FILE).read_text())
        index = json.loads((path / INDEX_FILE).read_text())
        order = sorted(range(len(index["clip_id"])), key=lambda i: (index["shard"][i], index["offset"][i]))
        plan = {
            "format_version": FORMAT_VERSION,
            "feature_shape": [int(s) for s in meta["feature_shape"]],
            "dtype": np.dtype(meta["dtype"]).str,
            "clips": [[index["clip_id"][i], index["sha1"][i], int(index["length"][i])] for i in order],
            "shards": [int(s["clips"]) for s in meta["shards"]],
        }
        atomic_write_text(path / PLAN_FILE, json.dumps(plan))
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("%s: the shard plan cannot be recovered (%s); every shard is computed again", path, e)
    for name in (META_FILE, INDEX_FILE, STAMP_FILE):
        (path / name).unlink(missing_ok=True)
    return True


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stale_tmp(p: Path) -> bool:
    """A ``.<name>.<pid>.<thread>.tmp`` file of :func:`atomic_write_text` whose writer process is gone."""
    parts = p.name.split(".")
    try:
        return not _pid_alive(int(parts[-3]))
    except (IndexError, ValueError):
        return False


def _is_cache_folder(folder: Path) -> bool:
    return any((folder / f).exists() for f in (PLAN_FILE, META_FILE)) or any(folder.glob("shard-*"))


def clean_stale_partials(root: str | Path) -> list[Path]:
    """Delete partial shards and temporary files in the cache folders just under ``root`` that no live
    process is writing; returns what was deleted.

    A ``shard-*.npy.partial`` goes only when the folder's build lock is free (a live build holds it;
    the kernel releases it when its holder dies, however it dies); a temporary file only when the
    process named in it is gone.  Finished shards of unfinished folders stay (a later run with the same
    key resumes from them), and folders that are not feature caches are never touched.
    """
    from filelock import FileLock, Timeout

    removed: list[Path] = []
    root = Path(root)
    if not root.is_dir():
        return removed
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        partials = list(folder.glob(f"shard-*.npy{PARTIAL_SUFFIX}"))
        tmps = [p for p in folder.glob(".*.tmp") if _stale_tmp(p)]
        if not (partials or tmps) or not _is_cache_folder(folder):
            continue
        junk = tmps
        if partials:
            lock = FileLock(str(folder / LOCK_FILE))
            try:
                lock.acquire(timeout=0)
            except Timeout:
                partials = []  # a live build is writing them
            else:
                try:
                    junk = [*folder.glob(f"shard-*.npy{PARTIAL_SUFFIX}"), *tmps]
                    _unlink_all(junk, removed)
                finally:
                    lock.release()
                continue
        _unlink_all(junk, removed)
    return removed


def _unlink_all(paths: Iterable[Path], removed: list[Path]) -> None:
    for p in paths:
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
        log.info("removed %s (%.1f MB), left by an interrupted extraction", p, size / 2**20)
