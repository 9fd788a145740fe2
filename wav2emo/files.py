"""Files written safely and files identified by content: the helpers every room that writes or checks files uses.

* :func:`atomic_write_text`: a reader sees the old file or the new one, never half of one, and a crash leaves
  the old one (written beside the target, then renamed over it; ``durable`` also fsyncs file and folder).
* :func:`file_digest`: a file's SHA-1 / SHA-256, read in blocks (corpus clips, stored models, checkpoints).
* :func:`remembered_digest`: the same, computed once per file version (its :func:`file_stamp`) in a process, and
  across processes inside :func:`digests_remembered_in` (a local backbone's weights: 0.2 s of hashing for wav2vec2-base).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


def atomic_write_text(path: str | Path, text: str, *, durable: bool = False) -> None:
    """Write ``text`` to a temporary sibling of ``path`` (its folder created), then rename it over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(temporary_name(path.name))
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


def temporary_name(name: str) -> str:
    """``.<name>.<pid>.<thread>.tmp``: the writer's process is in the name, so a temporary whose writer died can
    be told from one being written (:func:`writer_gone`)."""
    return f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"


def writer_gone(path: Path) -> bool:
    """A :func:`temporary_name` file whose writing process no longer exists."""
    parts = path.name.split(".")
    try:
        pid = int(parts[-3])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def file_digest(path: str | Path, algorithm: str = "sha1", block: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (``algorithm``: any of hashlib's, e.g. ``sha1``, ``sha256``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def file_stamp(path: Path) -> list[int]:
    """What changes when a file's bytes change: size, mtime, ctime (which no utime call can restore), inode."""
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ctime_ns), int(st.st_ino)]


_DIGESTS: dict[str, str] = {}  # memo key (algorithm, resolved path, stamp) -> hex digest, in this process
_DIGESTS_LOCK = threading.Lock()


def _memo_key(path: Path, algorithm: str) -> str:
    return json.dumps([algorithm, str(path.resolve()), file_stamp(path)])


def _still_current(key: str) -> bool:
    """A memo entry whose file still exists at its path with the stamp it was hashed at (others are dropped)."""
    try:
        _, path, stamp = json.loads(key)
        return file_stamp(Path(path)) == stamp
    except (OSError, ValueError, TypeError):
        return False


def remembered_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """:func:`file_digest`, computed once per version of the file: a file whose stamp (size, mtime, ctime, inode)
    is unchanged is not read again (in this process, and across processes inside :func:`digests_remembered_in`)."""
    key = _memo_key(Path(path), algorithm)
    with _DIGESTS_LOCK:
        known = _DIGESTS.get(key)
    if known is None:
        known = file_digest(path, algorithm, block=1 << 22)
        with _DIGESTS_LOCK:
            _DIGESTS[key] = known
    return known


@contextmanager
def digests_remembered_in(memo_file: Path) -> Iterator[None]:
    """Inside the block, :func:`remembered_digest` also answers from ``memo_file`` (digests that earlier processes
    computed, each under its file's path and stamp), and the digests computed in the block are added to it.

    A memo that cannot be read or written (malformed, read-only folder) only costs the hashing: it is never an
    error, and an entry is only ever used for the exact file version (stamp) it was computed from."""
    memo_file = Path(memo_file)
    try:
        stored = json.loads(memo_file.read_text())
        stored = {k: v for k, v in stored.items() if isinstance(k, str) and isinstance(v, str)}
    except (OSError, ValueError, AttributeError):
        stored = {}
    with _DIGESTS_LOCK:
        before = dict(_DIGESTS)
        _DIGESTS.update(stored)
    try:
        yield
    finally:
        with _DIGESTS_LOCK:
            new = {k: v for k, v in _DIGESTS.items() if k not in stored and k not in before}
        if new:
            try:
                fresh = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
                fresh = fresh if isinstance(fresh, dict) else {}
            except (OSError, ValueError):
                fresh = {}
            kept = {k: v for k, v in {**fresh, **new}.items() if _still_current(k)}  # others' entries kept
            try:
                atomic_write_text(memo_file, json.dumps(kept, indent=0, sort_keys=True))
            except OSError:
                pass
