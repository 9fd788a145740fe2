"""One input file's prediction: its windows, their probabilities and its mean, or why it could not be predicted."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wav2emo.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class FileResult:
    """One file's windows (samples at 16 kHz), their probabilities, and the file's mean; or why it failed."""

    path: Path
    num_samples: int = 0
    windows: list = field(default_factory=list)
    probs: list[np.ndarray | None] = field(default_factory=list)
    error: str | None = None
    read: bool = False  # every window has been read (or the file failed)

    @property
    def done(self) -> bool:
        return self.read and (self.error is not None or all(p is not None for p in self.probs))

    @property
    def mean(self) -> np.ndarray | None:
        if self.error is not None or not self.probs:
            return None
        return np.mean(np.stack(self.probs), axis=0)

    def fail(self, e: BaseException | str) -> None:
        if self.error is None:
            self.error = e if isinstance(e, str) else reason(e, self.path)


def reason(e: BaseException, path: Path) -> str:
    """One line for a failed file's row: the error's message without the file's name (the row names it)."""
    msg = str(e).strip().splitlines()[0].strip() if str(e).strip() else type(e).__name__
    for prefix in (f"{path}: ", f"{path.name}: "):
        if msg.startswith(prefix):
            msg = msg[len(prefix):]
    if not isinstance(e, UserError | ValueError):
        msg = f"{type(e).__name__}: {msg}"
    return msg


def fail_file(result: FileResult, e: BaseException, warned: set[str]) -> None:
    """Mark ``result`` failed; an unexpected kind of error also goes to the log with its traceback, once per kind
    (``warned`` holds the kinds already logged)."""
    if not isinstance(e, UserError | ValueError) and type(e).__name__ not in warned:
        warned.add(type(e).__name__)
        log.warning("predicting %s failed", result.path, exc_info=e)
    result.fail(e)
