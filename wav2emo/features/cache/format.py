"""The feature cache's on-disk format: file names, the key of a feature set, shard files and their checksums.

See :mod:`wav2emo.features.cache` for the layout of a cache folder."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import threading
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.errors import UserError

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


# The header numpy writes for a plain array: {'descr': '<f2', 'fortran_order': False, 'shape': (12, 768), }
_NPY_HEADER = re.compile(r"\{'descr': '(?P<descr>[<>|=]?[a-zA-Z]\d*)', 'fortran_order': (?P<fortran>True|False), "
                         r"'shape': \((?P<shape>(?:\d+, ?)*\d*)\), \}\s*")
_AST_LOCK = threading.Lock()


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran_order, data offset) of an .npy file, reading only its header.

    A plain array's header is parsed here, not by numpy's reader: that one calls ``ast.literal_eval``, and on
    CPython 3.11 two threads building ASTs at once can fail with ``SystemError: AST constructor recursion depth
    mismatch`` (python/cpython#106905; the cache's shards are checked by several threads). Any other header goes
    to numpy's reader, one thread at a time.
    """
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"unsupported .npy version {version}")
        size_bytes = 2 if version == (1, 0) else 4
        start = f.tell()
        raw = f.read(size_bytes)
        if len(raw) != size_bytes:
            raise ValueError("the header is cut short")
        text = f.read(int.from_bytes(raw, "little")).decode("latin1")
        found = _NPY_HEADER.fullmatch(text)
        if found is not None:
            shape = tuple(int(v) for v in found["shape"].replace(" ", "").split(",") if v)
            return shape, np.dtype(found["descr"]), found["fortran"] == "True", f.tell()
        f.seek(start)
        with _AST_LOCK:
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
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


