"""Keeping cache folders sound: a rebuild of damaged shards prepared, and stale temporaries of dead writers removed."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from wav2emo.features.cache.format import (
    FORMAT_VERSION,
    INDEX_FILE,
    LOCK_FILE,
    META_FILE,
    PARTIAL_SUFFIX,
    PLAN_FILE,
    STAMP_FILE,
    CacheError,
)
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.files import atomic_write_text, writer_gone

log = logging.getLogger(__name__)


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
        atomic_write_text(path / PLAN_FILE, json.dumps(plan), durable=True)
    except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
        log.warning("%s: the shard plan cannot be recovered (%s); every shard is computed again", path, e)
    for name in (META_FILE, INDEX_FILE, STAMP_FILE):
        (path / name).unlink(missing_ok=True)
    return True


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
        tmps = [p for p in folder.glob(".*.tmp") if writer_gone(p)]
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

