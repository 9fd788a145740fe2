"""The errors of the corpus layer (corpus copies, folds), and how they list offending files."""

from __future__ import annotations

from collections.abc import Iterable

from wav2emo.errors import UserError

MAX_LISTED = 10  # offending files named in one error message


class CorpusError(UserError, ValueError):
    """A corpus copy that cannot be used as it is; the message names the files and what was expected."""


class FoldError(UserError, ValueError):
    """Folds that cannot be used as given; the message names the offending actors or values."""


def listing(items: Iterable[str], total: int | None = None) -> str:
    """``items`` as an indented block of at most :data:`MAX_LISTED` lines, with a count of the rest."""
    items = list(items)
    total = len(items) if total is None else total
    head = "\n  ".join(items[:MAX_LISTED])
    more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
    return f"  {head}{more}"
