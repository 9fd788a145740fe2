"""Where a fold's features live during training: on the GPU (resident) or read from the memory-mapped cache.

``loader.resident: auto`` (the default) holds the fold on the training device when that device is a GPU and
the fold fits in its free memory with room left for training; otherwise batches are read from the memory-mapped
cache.  One log line says which, and why.  A resident fold is what makes a GPU epoch fast: no host I/O, no
worker processes, batches gathered by index on the device (``benchmarks/reports/train_*.md``).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from wav2emo.cores import usable_cores
from wav2emo.errors import ConfigError

log = logging.getLogger(__name__)

GiB = 2**30


def parse_auto_bool(value, key: str) -> str | bool:
    """``"auto"``, True or False from a setting ``key`` (also the strings YAML and the command line give)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        low = value.strip().lower()
        if low in ("auto", "true", "false"):
            return "auto" if low == "auto" else low == "true"
    raise ConfigError(f"{key}={value!r}: expected auto, true or false")


def split_bytes(dataset) -> int:
    """Bytes a split takes once collated on a device: every clip padded to the split's longest one.

    Estimated from the first clip's bytes per frame and the cached lengths, without reading the split.
    """
    n = len(dataset)
    if n == 0:
        return 0
    first = dataset[0]
    lengths = dataset.lengths()
    longest = int(np.max(lengths)) if lengths is not None else None
    total = 0
    for value in first.values():
        if not isinstance(value, torch.Tensor):
            continue
        per_clip = value.numel() * value.element_size()
        # Frame-indexed inputs (ssl (H, T, D), logmel (T, M), wave (S,)) grow to the longest clip's length.
        if longest is not None and int(lengths[0]) > 0 and int(lengths[0]) in tuple(value.shape):
            per_clip = per_clip // int(lengths[0]) * longest
        total += per_clip * n
    return int(total)


@dataclass(frozen=True)
class Placement:
    resident: bool
    reason: str


def decide(setting: str | bool, device: torch.device, datasets: Iterable, headroom_gib: float = 8.0) -> Placement:
    """Resident or memory-mapped, for ``loader.resident`` = ``setting`` on ``device``.

    ``auto`` is resident on a CUDA device when the fold plus ``headroom_gib`` (activations, gradients and the
    optimizer of the model) fits in the device's free memory; never on a CPU, where the memory map already
    is the page cache and a copy would only double the memory taken.
    """
    if setting is True:
        return Placement(True, "loader.resident=true")
    if setting is False:
        return Placement(False, "loader.resident=false")
    if device.type != "cuda":
        return Placement(False, f"training on {device.type}: the memory-mapped cache is read directly")
    need = sum(split_bytes(ds) for ds in datasets)
    free, total = free_memory(device)
    want = need + headroom_gib * GiB
    if want > free:
        return Placement(False, (
            f"the fold takes {need / GiB:.1f} GiB on {device} and training needs about {headroom_gib:g} GiB more, "
            f"but only {free / GiB:.1f} GiB of {total / GiB:.1f} GiB are free: batches are read from the "
            f"memory-mapped cache instead (slower; loader.resident_headroom_gib sets the margin)"))
    return Placement(True, f"the fold ({need / GiB:.1f} GiB) is held on {device} "
                           f"({free / GiB:.1f} GiB free; loader.resident=false reads the memory-mapped cache)")


def free_memory(device: torch.device) -> tuple[int, int]:
    """The bytes this process can still allocate on CUDA ``device`` (the driver's free memory plus what torch's
    caching allocator holds unused: an earlier fold's, once collected by :func:`collect_earlier_folds`), and the
    device's total."""
    free, total = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), total


def collect_earlier_folds() -> None:
    """At a fold's start: collect what an earlier fold of this process (``-m`` folds, ``fold=all``) left in reference
    cycles, its trainer, module and resident split, so that their GPU memory is free before this fold measures and
    takes it.  Without it, an H100 with 78 GiB free before fold 0 showed 66 and then 53 GiB free before folds 1
    and 2 (two folds' 7 GiB splits and their training still held), and a smaller GPU would have read the later
    folds from the memory-mapped cache instead.  A process that has not started CUDA yet has no such garbage and
    skips the collection (0.1-0.2 s with torch and Lightning loaded)."""
    if torch.cuda.is_initialized():
        gc.collect()


def reading_threads() -> int:
    """How many threads read a resident split (``pread``, numpy's and torch's copies release the GIL)."""
    return min(8, usable_cores())


def read_items(dataset, threads: int | None = None) -> list:
    """Every item of ``dataset``, read by :func:`reading_threads` threads: a resident split of inputs that cannot
    stream (feeding/streamed_upload.py; audio) is read whole before it is padded on the device."""
    n = len(dataset)
    threads = threads or reading_threads()
    if threads <= 1 or n < 64:
        return [dataset[i] for i in range(n)]
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wav2emo-resident") as pool:
        return list(pool.map(dataset.__getitem__, range(n), chunksize=16))
