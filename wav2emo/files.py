"""Files written safely and files identified by content: the helpers every room that writes or checks files uses.

* :func:`atomic_write_text`: a reader sees the old file or the new one, never half of one, and a crash leaves
  the old one (written beside the target, then renamed over it; ``durable`` also fsyncs file and folder).
* :func:`file_digest`: a file's SHA-1 / SHA-256, read in blocks (corpus clips, stored models, checkpoints).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    if durable:
        fsync_dir(path.parent)


def file_digest(path: str | Path, algorithm: str = "sha1", block: int = 1 << 20) -> str:
    """Hex digest of a file's bytes (``algorithm``: any of hashlib's, e.g. ``sha1``, ``sha256``)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()
