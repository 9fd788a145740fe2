"""The CPU cores this process may use, and torch's thread count for one block of work.

Shared by what sizes its own workers or threads (eGeMAPS worker processes, the augmented copies' workers,
prediction's network threads, a resident split's readers), so each asks the same question the same way.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, which ``taskset`` or a batch system narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` inside the block and put back after it (None: left alone)."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
