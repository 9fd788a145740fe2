"""The extraction pipeline around a frozen backbone: background audio loading, pinned host buffers, writer threads.

It keeps the GPU busy: a thread pool decodes and resamples audio ahead of it, a copy stream brings float16
results back into pinned memory while the next batch runs, and writer threads put each clip's exact frames
(no padding, no crop) into the cache shards.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from wav2emo.backbones import Backbone, ExtractionError
from wav2emo.data.audio import load_audio
from wav2emo.features.cache.writer import CacheBuilder
from wav2emo.features.extraction_batches import plan_batches


def _in_background(items: Iterator[Any], maxsize: int, stop: threading.Event) -> Iterator[Any]:
    """Run an iterator in a thread, ``maxsize`` items ahead; its exceptions surface in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=maxsize)
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put(done)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(e)

    thread = threading.Thread(target=produce, name="wav2emo-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=10)


class _HostBuffers:
    """A few pinned host buffers, each big enough for the largest batch, reused for every batch.

    Why not ``torch.empty(..., pin_memory=True)`` per batch: torch's caching host allocator rounds
    requests up to a power of two (a 337 MB batch would pin 512 MB) and keeps one block per size, and
    pinning costs ~0.1 s per GB; a fixed pool pins the minimum once.  ``get`` blocks while every
    buffer is still being written out, which is the back-pressure that keeps host memory bounded.
    """

    def __init__(self, count: int, numel: int, dtype: torch.dtype) -> None:
        self.count, self.numel, self.dtype = count, numel, dtype
        self.free: queue.Queue[torch.Tensor] = queue.Queue()
        self.pin_s = 0.0
        self.pin_error: BaseException | None = None
        # Pin in the background while the first batches run on the GPU (~0.2 s per GB of pinning).
        self._thread = threading.Thread(target=self._pin_all, name="wav2emo-pin", daemon=True)
        self._thread.start()

    def _pin_all(self) -> None:
        start = time.perf_counter()
        try:
            for _ in range(self.count):
                self.free.put(torch.empty(self.numel, dtype=self.dtype, pin_memory=True))
        except BaseException as e:  # noqa: BLE001 - reported by get()
            self.pin_error = e
        self.pin_s = time.perf_counter() - start

    def get(self, numel: int, error: Callable[[], BaseException | None]) -> torch.Tensor:
        if numel > self.numel:
            raise RuntimeError(f"batch of {numel} values exceeds the host buffer of {self.numel}")
        while True:
            err = error() or self.pin_error
            if err is not None:
                raise err
            try:
                return self.free.get(timeout=0.05)
            except queue.Empty:
                continue

    def put(self, buf: torch.Tensor) -> None:
        self.free.put(buf)


class _Writers:
    """Writer threads: wait for a batch's copy to land in host memory, then write its clips' frames."""

    def __init__(self, builder: CacheBuilder, n_threads: int, release: Callable[[Any], None], depth: int) -> None:
        self.builder, self.release = builder, release
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.seconds_busy = 0.0
        self._lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, name=f"wav2emo-writer-{k}", daemon=True) for k in range(max(1, n_threads))
        ]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            try:
                if self.error is None:
                    self._write(*item[:-1])
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                self.error = e
            finally:
                self.release(item[-1])

    def _write(self, event, host: torch.Tensor, flag: torch.Tensor, clips: list[int], frames: list[int]) -> None:
        if event is not None:
            event.synchronize()
        start = time.perf_counter()
        if bool(flag.item()):  # some value is NaN/inf: find out whether it is in a clip's real frames
            arr = host.float().numpy()
            bad = [
                self.builder.clip_ids[c]
                for b, (c, f) in enumerate(zip(clips, frames, strict=True))
                if not np.isfinite(arr[b, :f]).all()
            ]
            if bad:
                raise ExtractionError(
                    f"non-finite hidden states (NaN/inf, or beyond the float16 range) for clips {bad[:5]}; "
                    "nothing was stored for them. Check the audio, or try precision=fp32"
                )
        arr = host.numpy()
        for b, (c, f) in enumerate(zip(clips, frames, strict=True)):
            self.builder.write(c, arr[b, :f])
        with self._lock:
            self.seconds_busy += time.perf_counter() - start

    def put(self, item: tuple) -> float:
        """Queue a batch; returns the seconds spent waiting for room (the writers were behind)."""
        start = time.perf_counter()
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.q.put(item, timeout=0.1)
                return time.perf_counter() - start
            except queue.Full:
                continue

    def close(self) -> None:
        for _ in self.threads:
            self.q.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error


def extract_to_builder(
    backbone: Backbone,
    builder: CacheBuilder,
    paths: Sequence[str],
    samples: Sequence[int],
    *,
    batch_size: int = 32,
    num_workers: int = 4,
    writer_threads: int = 3,
    length_bucket_s: float = 0.0,
    max_batch_s: float | None = None,
    progress: bool = True,
    load: Callable[[str, int], np.ndarray] = load_audio,
    layers: Sequence[int] | None = None,
    reduce: Callable[[torch.Tensor, list[int]], tuple[torch.Tensor, list[int]]] | None = None,
) -> dict[str, Any]:
    """Compute ``builder.pending`` clips in batches of ``batch_size`` (in layout order) and write them.

    ``paths[i]`` / ``samples[i]`` are clip ``i``'s audio file and its expected sample count at the
    backbone's rate; a file that decodes to another length is an error (the plan would not fit).
    Batches are padded to a multiple of ``length_bucket_s`` seconds (see :meth:`Backbone.pad`)
    and hold at most ``max_batch_s`` seconds of padded audio (see :func:`plan_batches`).
    Returns timings: ``wait_input_s`` (GPU starved of audio), ``wait_writer_s`` / ``wait_buffer_s``
    (writers behind, or host buffers still being pinned), ``pin_s`` (background pinning),
    ``batch_s`` (wall time of each batch in the main loop).  ``layers``: the hidden states to store (None:
    all); ``reduce``: turns each batch's frames into what is stored (e.g. per-clip time statistics).
    """
    from tqdm.auto import tqdm

    pending = builder.pending
    sr = backbone.sampling_rate
    budget = int(max_batch_s * sr) if max_batch_s else None
    batches = plan_batches(pending, samples, max(1, batch_size), budget)
    stop = threading.Event()
    cuda = backbone.device.type == "cuda"
    row = backbone.num_hidden_states * backbone.hidden_size * (2 if reduce is not None else 1)
    multiple = max(1, round(length_bucket_s * sr))
    largest = max(
        (len(b) * backbone.num_frames(-(-max(samples[i] for i in b) // multiple) * multiple) * row for b in batches),
        default=0,
    )

    def load_one(i: int) -> np.ndarray:
        wave = load(paths[i], sr)
        if len(wave) != samples[i]:
            raise ExtractionError(
                f"{paths[i]}: decoded to {len(wave)} samples at {sr} Hz, but the manifest implies {samples[i]}; "
                "the manifest does not describe this file (prepare the corpus again)"
            )
        return backbone.prepare(wave)

    def assemble(pool: ThreadPoolExecutor) -> Iterator[tuple[list[int], torch.Tensor, list[int]]]:
        ahead: deque[list[Future]] = deque()
        submitted = 0
        prefetch = max(2, -(-2 * num_workers // max(1, batch_size)) + 1)  # batches decoded ahead
        for k, batch in enumerate(batches):
            while submitted < len(batches) and submitted <= k + prefetch:
                ahead.append([pool.submit(load_one, i) for i in batches[submitted]])
                submitted += 1
            waves = [f.result() for f in ahead.popleft()]
            x, lengths = backbone.pad(waves, multiple)
            yield batch, x, lengths

    buffers = _HostBuffers(writer_threads + 1, largest, torch.float16) if cuda else None
    writers = _Writers(
        builder, writer_threads, release=buffers.put if buffers else (lambda _: None), depth=writer_threads + 2
    )
    copy_stream = torch.cuda.Stream(backbone.device) if cuda else None
    timings: dict[str, Any] = {"wait_input_s": 0.0, "wait_writer_s": 0.0, "wait_buffer_s": 0.0, "batch_s": []}
    bar = tqdm(total=len(pending), unit="clip", desc="hidden states", disable=not progress, leave=False)
    start = time.perf_counter()
    try:
        with ThreadPoolExecutor(max(1, num_workers), thread_name_prefix="wav2emo-audio") as pool:
            stream = _in_background(assemble(pool), maxsize=2, stop=stop)
            while True:
                t0 = t_batch = time.perf_counter()
                try:
                    clips, x, lengths = next(stream)
                except StopIteration:
                    break
                timings["wait_input_s"] += time.perf_counter() - t0
                res, frames = backbone.extract_batch(x, lengths, torch.float16, layers=layers)
                if reduce is not None:
                    res, frames = reduce(res, frames)
                bad = ~torch.isfinite(res).all()
                if cuda:
                    assert buffers is not None and copy_stream is not None
                    t0 = time.perf_counter()
                    buf = buffers.get(res.numel(), lambda: writers.error)
                    timings["wait_buffer_s"] += time.perf_counter() - t0
                    host = buf[: res.numel()].view(res.shape)
                    flag = torch.empty((), dtype=torch.bool, pin_memory=True)
                    copy_stream.wait_stream(torch.cuda.current_stream(backbone.device))
                    with torch.cuda.stream(copy_stream):
                        host.copy_(res, non_blocking=True)
                        flag.copy_(bad, non_blocking=True)
                        event = torch.cuda.Event()
                        event.record(copy_stream)
                    res.record_stream(copy_stream)
                    bad.record_stream(copy_stream)
                    timings["wait_writer_s"] += writers.put((event, host, flag, clips, frames, buf))
                else:
                    timings["wait_writer_s"] += writers.put((None, res, bad, clips, frames, None))
                bar.update(len(clips))
                timings["batch_s"].append(round(time.perf_counter() - t_batch, 3))
            stop.set()
        writers.close()
    except BaseException:
        stop.set()
        try:
            writers.close()
        except BaseException:  # noqa: BLE001 - the first error is the one to report
            pass
        builder.close()
        raise
    finally:
        bar.close()
    timings["extract_s"] = time.perf_counter() - start
    timings["write_busy_s"] = writers.seconds_busy
    timings["pin_s"] = buffers.pin_s if buffers is not None else 0.0
    timings["clips_computed"] = float(len(pending))
    return timings
