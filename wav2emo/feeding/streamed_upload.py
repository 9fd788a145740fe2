"""A resident split streamed to its device: read, padded into (pinned) chunks and copied, all overlapped.

The way before (:func:`~wav2emo.feeding.placement.read_items`, then :func:`~wav2emo.feeding.input_strategies.
collate` on the device) read the whole split into host memory first (about 5 GB for a fold of wav2vec2-base's
13 hidden states), then copied it clip by clip from pageable memory, which the driver stages through its own
small pinned buffer: about 0.5 s of reading, then 0.7 s of copying, one after the other, on one H100 host
(``benchmarks/reports/issue25.md``).  Here reader threads fill one of a few pinned chunks, and the main thread
sends each chunk to the device asynchronously as soon as it is full, while the threads fill the next chunks: the
copy runs under the reading, and the host never holds more than the chunks.  Two ways to fill a chunk:

* **stored bytes** (inputs whose strategy says where its rows lie in the cache files, ``stored()``: cached SSL
  states and log-mels): each thread copies a run of up to :data:`PIECE_BYTES` of the files into the chunk with
  one ``pread``, whole runs of clips at a time, exactly as stored (time first, unpadded); on the device one
  indexed copy per chunk puts every frame into its clip's padded row, transposed and converted as the strategy
  serves it.  The threads hold the GIL for a few microseconds per piece, not per clip, and the host copies
  only the clips' own bytes: fold 0's train split (1020 clips, 5.4 GB on the GPU) in 0.15-0.18 s against 0.58 s
  row by row, on one H100 host (``benchmarks/reports/upload_nvidia_h100_80gb_hbm3.md``);
* **rows** (any other input of exact lengths, e.g. speaker-normalised features): each thread reads a clip
  through its strategy and pads it into its row of the chunk.

The result is exactly :func:`collate`'s over the whole split (same keys, values, padding, masks and lengths):
only inputs whose strategies know every row's exact length before reading (cached features) are streamed;
anything else (audio, whose length after resampling is known to within a sample) returns None and the caller
takes the way before.  A row whose length differs from what its strategy announced is an error, never a
silently cut clip.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from wav2emo.feeding.input_strategies import (
    PADDED_KEYS,
    ClipDataset,
    StoredRows,
    clip_fields,
    masks_and_lengths,
    padded_length,
    torch_dtype,
)
from wav2emo.feeding.placement import reading_threads

CHUNK_BYTES = 64 << 20  # one pinned chunk (all padded keys of its rows); a few are in flight at once
CHUNKS_IN_FLIGHT = 4
PIECE_BYTES = 8 << 20  # what one reader copies from the cache files with one pread (stored bytes)
STORED_BYTES = True  # False: every row read through its strategy (the way before; benchmarks/startup_phases.py)
Unit = TypeVar("Unit")


def _exact_lengths(dataset: ClipDataset, key: str) -> np.ndarray | None:
    for strategy in dataset.strategies:
        if strategy.key == key:
            return strategy.lengths() if getattr(strategy, "exact_lengths", False) else None
    return None


def _stored_rows(dataset: ClipDataset, first: dict[str, Any], keys: list[str],
                 lengths: dict[str, np.ndarray]) -> dict[str, StoredRows] | None:
    """Every padded key's :class:`StoredRows`, or None unless each strategy offers them and they agree with what
    it serves (row 0's frame shape and dtype, every row's length)."""
    out = {}
    for key in keys:
        strategy = next(s for s in dataset.strategies if s.key == key)
        stored = strategy.stored() if hasattr(strategy, "stored") else None
        if stored is None:
            return None
        served = first[key]
        frame = tuple(d for a, d in enumerate(served.shape) if a != PADDED_KEYS[key][0])
        if (frame != tuple(stored.spans.frame_shape) or served.dtype != stored.served_dtype
                or not np.array_equal(stored.lengths, lengths[key])):
            return None
        out[key] = stored
    return out


def _padded_row(row: torch.Tensor, x: torch.Tensor, axis: int, want: int, where: str) -> None:
    """``x`` copied into the start of ``row`` along ``axis``, the rest zeroed; ``x`` must be ``want`` long."""
    if x.shape[axis] != want:
        raise ValueError(f"{where} has {x.shape[axis]} frames, its cache announced {want}: the feature cache's "
                         "index does not match its rows (rebuild the cache)")
    m = min(want, row.shape[axis])
    row.narrow(axis, 0, m).copy_(x.narrow(axis, 0, m))
    row.narrow(axis, m, row.shape[axis] - m).zero_()


def _in_chunks(chunks: Sequence[Sequence[Unit]], slots: int, threads: int, fill: Callable[[Unit, int], None],
               send: Callable[[int, int], Any]) -> None:
    """Each chunk's units filled into one of ``slots`` buffers by ``threads`` threads (``fill(unit, slot)``), then
    ``send(slot, k)`` for chunk ``k``, in order, which returns what says its copy is done (an event with
    ``synchronize()``, or None): a slot takes its next chunk once its last one has left."""
    pending: deque[tuple[int, int, list[Future]]] = deque()  # (slot, chunk, its units' fills), in order
    free: deque[tuple[int, Any]] = deque((s, None) for s in range(slots))  # (slot, its last copy)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="wav2emo-upload") as pool:
        k = 0
        try:
            while k < len(chunks) or pending:
                while k < len(chunks) and free:  # hand the threads every chunk a free slot can take
                    slot, copied = free.popleft()
                    if copied is not None:
                        copied.synchronize()
                    pending.append((slot, k, [pool.submit(fill, unit, slot) for unit in chunks[k]]))
                    k += 1
                slot, done, futures = pending.popleft()
                for f in futures:
                    f.result()
                free.append((slot, send(slot, done)))
        except BaseException:
            for _, _, futures in pending:
                for f in futures:
                    f.cancel()
            raise


def _copied(device: torch.device) -> Callable[[], torch.cuda.Event | None]:
    """What ``send`` returns: an event recorded on the device's current stream (None off CUDA: copies are done)."""
    if device.type != "cuda":
        return lambda: None
    stream = torch.cuda.current_stream(device)

    def record() -> torch.cuda.Event:
        event = torch.cuda.Event()
        event.record(stream)
        return event

    return record


def _finished(device: torch.device) -> None:
    """Wait for the device's copies (the pinned chunks are freed when the caller returns)."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


def _rows_to_device(dataset: ClipDataset, first: dict[str, Any], keys: list[str], lengths: dict[str, np.ndarray],
                    shapes: dict[str, tuple[int, ...]], device: torch.device,
                    threads: int) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Every row read through its strategies and padded into pinned chunks by the threads; the padded keys on
    ``device``, and each item without them."""
    n, cuda = len(dataset), device.type == "cuda"
    axes = {k: PADDED_KEYS[k][0] for k in keys}
    dtypes = {k: first[k].dtype for k in keys}
    row_bytes = sum(int(np.prod(shapes[k])) * dtypes[k].itemsize for k in keys)
    rows_per_chunk = max(1, CHUNK_BYTES // max(1, row_bytes))
    chunks = [range(a, min(n, a + rows_per_chunk)) for a in range(0, n, rows_per_chunk)]
    out = {k: torch.empty((n, *shapes[k]), dtype=dtypes[k], device=device) for k in keys}
    buffers = [{k: torch.empty((rows_per_chunk, *shapes[k]), dtype=dtypes[k], pin_memory=cuda) for k in keys}
               for _ in range(min(CHUNKS_IN_FLIGHT, len(chunks)))]
    small: list[dict[str, Any]] = [first] * n  # each item without its padded keys (labels, eGeMAPS, ...)
    inference = torch.is_inference_mode_enabled()  # thread-local: the readers write the buffers in the caller's mode

    def fill(i: int, slot: int) -> None:
        with torch.inference_mode(inference):
            item = first if i == 0 else dataset[i]
            for key in keys:
                _padded_row(buffers[slot][key][i % rows_per_chunk], item.pop(key), axes[key], int(lengths[key][i]),
                            f"row {i} ({item.get('clip_id')}): {key}")
            small[i] = item

    copied = _copied(device)

    def send(slot: int, k: int) -> torch.cuda.Event | None:
        begin, count = chunks[k].start, len(chunks[k])
        for key in keys:
            out[key][begin:begin + count].copy_(buffers[slot][key][:count], non_blocking=True)
        return copied()

    _in_chunks(chunks, len(buffers), threads, fill, send)
    _finished(device)
    return out, small


def _pieces(stored: StoredRows, first: int, stop: int, piece_bytes: int) -> list[tuple[int, int, int, int, int]]:
    """Rows ``first..stop-1`` as reads: ``(cache, shard, file offset, chunk offset, bytes)``, each run of rows that
    lie one after another in one file cut into reads of at most ``piece_bytes``; the chunk holds them packed."""
    spans, frame_bytes = stored.spans, stored.spans.frame_bytes
    cache, shard, offset = spans.cache.tolist(), spans.shard.tolist(), spans.offset.tolist()
    size = (stored.lengths * frame_bytes).tolist()
    pieces, at, r = [], 0, first
    while r < stop:
        run, s = size[r], r + 1
        while s < stop and (cache[s], shard[s], offset[s]) == (cache[r], shard[r], offset[r] + run):
            run += size[s]
            s += 1
        pieces += [(cache[r], shard[r], offset[r] + p, at + p, min(piece_bytes, run - p))
                   for p in range(0, run, piece_bytes)]
        at += run
        r = s
    return pieces


def _bytes_to_device(stored: StoredRows, key: str, shape: tuple[int, ...], device: torch.device,
                     threads: int) -> torch.Tensor:
    """``key``'s padded rows on ``device`` (``(n, *shape)``), the threads copying the stored bytes into pinned
    chunks and one indexed copy per chunk putting each frame into its row."""
    spans, lengths, cuda = stored.spans, stored.lengths.astype(np.int64), device.type == "cuda"
    n, frame_bytes = len(lengths), spans.frame_bytes
    row_bytes = lengths * frame_bytes
    chunk_bytes = max(CHUNK_BYTES, int(row_bytes.max()))
    ends, bounds, a = np.cumsum(row_bytes), [], 0  # whole rows per chunk, in order
    while a < n:
        b = max(a + 1, int(np.searchsorted(ends, (ends[a - 1] if a else 0) + chunk_bytes, side="right")))
        bounds.append((a, b))
        a = b
    chunks = [_pieces(stored, a, b, PIECE_BYTES) for a, b in bounds]
    frame_start = np.concatenate([[0], np.cumsum(lengths)])
    # For every stored frame: its row and its time in the row, on the device (the indexed copies' indices).
    index = torch.from_numpy(np.stack([np.repeat(np.arange(n), lengths),
                                       np.arange(frame_start[-1]) - np.repeat(frame_start[:-1], lengths)])).to(device)
    out = torch.zeros((n, *shape), dtype=stored.served_dtype, device=device)
    rows = out.movedim(1 + PADDED_KEYS[key][0], 1)  # (n, T, *frame): the stored layout, padded, a view of out
    buffers = [torch.empty(chunk_bytes, dtype=torch.uint8, pin_memory=cuda) for _ in range(min(CHUNKS_IN_FLIGHT,
                                                                                               len(chunks)))]
    views = [memoryview(b.numpy()) for b in buffers]
    stage = torch.empty(chunk_bytes, dtype=torch.uint8, device=device)
    stored_dtype = torch_dtype(spans.dtype)

    def fill(piece: tuple[int, int, int, int, int], slot: int) -> None:
        cache, shard, offset, at, size = piece
        spans.caches[cache].read_span(shard, offset, views[slot][at:at + size], f"{key} rows")

    copied = _copied(device)

    def send(slot: int, k: int) -> torch.cuda.Event | None:
        f0, f1 = (int(frame_start[r]) for r in bounds[k])
        size = (f1 - f0) * frame_bytes
        stage[:size].copy_(buffers[slot][:size], non_blocking=True)
        event = copied()  # the chunk may be filled again once its bytes are on the device
        frames = stage[:size].view(stored_dtype).view(f1 - f0, *spans.frame_shape)
        rows[index[0, f0:f1], index[1, f0:f1]] = frames.to(stored.served_dtype)
        return event

    _in_chunks(chunks, len(buffers), threads, fill, send)
    _finished(device)
    return out


def stream_to_device(dataset: ClipDataset, device: torch.device, frames_multiple: int | None = None,
                     threads: int | None = None) -> dict[str, Any] | None:
    """``collate(every item of dataset, dataset.frames, frames_multiple)`` with its padded keys on ``device``,
    or None when this dataset's inputs cannot be streamed (the caller collates the way before).

    On a CUDA device the chunks are pinned and copied asynchronously; on any other device the same chunks are
    copied as they are filled (the same code path, tested on the CPU)."""
    device = torch.device(device)
    n = len(dataset)
    if n == 0:
        return None
    first = dataset[0]
    keys = [k for k in PADDED_KEYS if k in first]
    lengths = {k: _exact_lengths(dataset, k) for k in keys}
    if not keys or any(v is None or len(v) != n for v in lengths.values()):
        return None
    shapes: dict[str, tuple[int, ...]] = {}
    for key in keys:
        shape = list(first[key].shape)
        shape[PADDED_KEYS[key][0]] = padded_length(key, int(lengths[key].max()), dataset.frames, frames_multiple)
        shapes[key] = tuple(shape)
    threads = threads or reading_threads()
    stored = _stored_rows(dataset, first, keys, lengths) if STORED_BYTES else None
    if stored is None:
        out, small = _rows_to_device(dataset, first, keys, lengths, shapes, device, threads)
    else:
        inference = torch.is_inference_mode_enabled()

        def fields() -> list[dict[str, Any]]:  # labels, eGeMAPS, ...: read beside the bytes
            with torch.inference_mode(inference):
                return [dataset.item(i, skip=keys) for i in range(n)]

        with ThreadPoolExecutor(1, thread_name_prefix="wav2emo-fields") as side:
            small_items = side.submit(fields)
            out = {k: _bytes_to_device(stored[k], k, shapes[k], device, threads) for k in keys}
            small = small_items.result()
    batch = clip_fields(small)
    for key in keys:
        batch[key] = out[key]
        masks_and_lengths(batch, key, torch.as_tensor(lengths[key], dtype=torch.long), shapes[key][PADDED_KEYS[key][0]])
    return batch
