"""A cross-process lock around building one cache, so parallel fold jobs extract a feature set once.

The lock is an OS file lock (``filelock``, flock on Linux): it is released by the kernel when its
holder dies, so a crashed extraction never leaves the cache locked for ever.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from wav2emo.errors import UserError

log = logging.getLogger(__name__)


class LockTimeout(UserError, TimeoutError):
    """Another process held the build lock longer than the caller agreed to wait."""


@contextmanager
def build_lock(lock_path: str | Path, *, timeout: float | None = None) -> Iterator[float]:
    """Hold the lock at ``lock_path`` for the body; yields the seconds spent waiting for it.

    ``timeout=None`` waits as long as it takes (the other process is doing the same work this one
    would do); a number raises :class:`LockTimeout` after that many seconds.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    start = time.perf_counter()
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.info("waiting for %s: another process is building this cache", lock_path)
        try:
            lock.acquire(timeout=-1 if timeout is None else timeout)
        except Timeout:
            raise LockTimeout(
                f"{lock_path}: still locked after {timeout:.0f} s by another process building the same "
                "cache; wait for it to finish, or stop it and run again"
            ) from None
    try:
        yield time.perf_counter() - start
    finally:
        lock.release()
