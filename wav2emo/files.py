"""Files written safely and files identified by content: the helpers every room that writes or checks files uses.

* :func:`atomic_write_text`: a reader sees the old file or the new one, never half of one, and a crash leaves
  the old one (written beside the target, then renamed over it; ``durable`` also fsyncs file and folder).
* :func:`file_digest`: a file's SHA-1 / SHA-256, read in blocks (corpus clips, stored models, checkpoints).
"""

from __future__ import annotations

import hashlib
import os
import threading
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
