"""A resident split streamed to its device: read, padded into (pinned) chunks and copied, all overlapped.

The way before (:func:`~wav2emo.feeding.placement.read_items`, then :func:`~wav2emo.feeding.input_strategies.
collate` on the device) read the whole split into host memory first (about 5 GB for a fold of wav2vec2-base's
13 hidden states), then copied it clip by clip from pageable memory, which the driver stages through its own
small pinned buffer: about 0.5 s of reading, then 0.7 s of copying, one after the other, on one H100 host
(``benchmarks/reports/issue25.md``).  Here reader threads write each clip's padded rows straight into one of a
few pinned chunks, and the main thread sends each chunk to the device asynchronously as soon as its rows are
in, while the threads fill the next chunks: the copy runs under the reading, and the host never holds more
than the chunks.

The result is exactly :func:`collate`'s over the whole split (same keys, values, padding, masks and lengths):
only inputs whose strategies know every row's exact length before reading (cached features) are streamed;
anything else (audio, whose length after resampling is known to within a sample) returns None and the caller
takes the way before.  A row whose length differs from what its strategy announced is an error, never a
silently cut clip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from wav2emo.feeding.input_strategies import (
    PADDED_KEYS,
    ClipDataset,
    clip_fields,
    masks_and_lengths,
    padded_length,
)
from wav2emo.feeding.placement import reading_threads

CHUNK_BYTES = 64 << 20  # one pinned chunk (all padded keys of its rows); a few are in flight at once
CHUNKS_IN_FLIGHT = 4


def _exact_lengths(dataset: ClipDataset, key: str) -> np.ndarray | None:
    for strategy in dataset.strategies:
        if strategy.key == key:
            return strategy.lengths() if getattr(strategy, "exact_lengths", False) else None
    return None


def _padded_row(row: torch.Tensor, x: torch.Tensor, axis: int, want: int, where: str) -> None:
    """``x`` copied into the start of ``row`` along ``axis``, the rest zeroed; ``x`` must be ``want`` long."""
    if x.shape[axis] != want:
        raise ValueError(f"{where} has {x.shape[axis]} frames, its cache announced {want}: the feature cache's "
                         "index does not match its rows (rebuild the cache)")
    m = min(want, row.shape[axis])
    row.narrow(axis, 0, m).copy_(x.narrow(axis, 0, m))
    row.narrow(axis, m, row.shape[axis] - m).zero_()


def _in_chunks(n: int, rows_per_chunk: int, slots: int, threads: int, fill: Callable[[int, int], None],
               send: Callable[[int, int, int], Any]) -> None:
    """Rows ``0..n-1`` in chunks, each filled into one of ``slots`` buffers by ``threads`` threads
    (``fill(row, slot)``), then ``send(slot, first_row, count)`` in order, which returns what says its copy is
    done (an event with ``synchronize()``, or None): a slot takes its next chunk once its last one has left."""
    pending: deque[tuple[int, int, list[Future]]] = deque()  # (slot, first row, its rows' fills), in order
    free: deque[tuple[int, Any]] = deque((s, None) for s in range(slots))  # (slot, its last copy)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wav2emo-upload") as pool:
        start = 0
        try:
            while start < n or pending:
                while start < n and free:  # hand the threads every chunk a free slot can take
                    slot, copied = free.popleft()
                    if copied is not None:
                        copied.synchronize()
                    stop = min(n, start + rows_per_chunk)
                    pending.append((slot, start, [pool.submit(fill, i, slot) for i in range(start, stop)]))
                    start = stop
                slot, begin, futures = pending.popleft()
                for f in futures:
                    f.result()
                free.append((slot, send(slot, begin, len(futures))))
        except BaseException:
            for _, _, futures in pending:
                for f in futures:
                    f.cancel()
            raise


def stream_to_device(dataset: ClipDataset, device: torch.device, frames_multiple: int | None = None,
                     threads: int | None = None) -> dict[str, Any] | None:
    """``collate(every item of dataset, dataset.frames, frames_multiple)`` with its padded keys on ``device``,
    or None when this dataset's inputs cannot be streamed (the caller collates the way before).

    On a CUDA device the chunks are pinned and copied asynchronously; on any other device the same chunks are
    copied as they are filled (the same code path, tested on the CPU)."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    n = len(dataset)
    if n == 0:
        return None
    first = dataset[0]
    keys = [k for k in PADDED_KEYS if k in first]
    lengths = {k: _exact_lengths(dataset, k) for k in keys}
    if not keys or any(v is None or len(v) != n for v in lengths.values()):
        return None
    axes = {k: PADDED_KEYS[k][0] for k in keys}
    shapes: dict[str, tuple[int, ...]] = {}
    for key in keys:
        shape = list(first[key].shape)
        shape[axes[key]] = padded_length(key, int(lengths[key].max()), dataset.frames, frames_multiple)
        shapes[key] = tuple(shape)
    dtypes = {k: first[k].dtype for k in keys}
    row_bytes = sum(int(np.prod(shapes[k])) * dtypes[k].itemsize for k in keys)
    rows_per_chunk = max(1, CHUNK_BYTES // max(1, row_bytes))
    out = {k: torch.empty((n, *shapes[k]), dtype=dtypes[k], device=device) for k in keys}
    buffers = [{k: torch.empty((rows_per_chunk, *shapes[k]), dtype=dtypes[k], pin_memory=cuda) for k in keys}
               for _ in range(min(CHUNKS_IN_FLIGHT, -(-n // rows_per_chunk)))]
    small: list[dict[str, Any]] = [first] * n  # each item without its padded keys (labels, eGeMAPS, ...)
    inference = torch.is_inference_mode_enabled()  # thread-local: the readers write the buffers in the caller's mode

    def fill(i: int, slot: int) -> None:
        with torch.inference_mode(inference):
            item = first if i == 0 else dataset[i]
            for key in keys:
                _padded_row(buffers[slot][key][i % rows_per_chunk], item.pop(key), axes[key], int(lengths[key][i]),
                            f"row {i} ({item.get('clip_id')}): {key}")
            small[i] = item

    stream = torch.cuda.current_stream(device) if cuda else None

    def send(slot: int, begin: int, count: int) -> torch.cuda.Event | None:
        for key in keys:
            out[key][begin:begin + count].copy_(buffers[slot][key][:count], non_blocking=True)
        if stream is None:
            return None
        event = torch.cuda.Event()
        event.record(stream)
        return event

    _in_chunks(n, rows_per_chunk, len(buffers), threads or reading_threads(), fill, send)
    if stream is not None:
        stream.synchronize()  # the pinned buffers are freed when this returns
    batch = clip_fields(small)
    for key in keys:
        batch[key] = out[key]
        masks_and_lengths(batch, key, torch.as_tensor(lengths[key], dtype=torch.long), shapes[key][axes[key]])
    return batch
