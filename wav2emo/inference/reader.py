"""Reading every input's windows in a thread of its own, ahead of the network: prediction's producer.

:class:`WindowReader` opens the files in order (:class:`~wav2emo.inference.audio.AudioStream`: any format
soundfile reads, mixed to mono, resampled to 16 kHz), plans each one's windows, reads them one after another and
queues each window's eGeMAPS on the worker pool at once (``prefetch``).  It can start as soon as the checkpoints
are read, before their backbones and models are built, so the eGeMAPS workers are busy while the rest loads and
while the GPU runs.  It hands its events on in reading order through a queue of at most ``ahead`` windows, so
what it holds stays bounded whatever the length of a file.  A file that cannot be read is handed on with its
reason and never stops the others.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.audio import TARGET_SAMPLE_RATE
from wav2emo.inference.audio import AudioStream
from wav2emo.inference.results import FileResult, fail_file
from wav2emo.inference.windows import Window, active_frames, frame_levels_db, plan_windows, speech_windows

SR = TARGET_SAMPLE_RATE


@dataclass
class WindowSettings:
    window_s: float = 4.0
    hop_s: float = 2.0
    vad: bool = False
    vad_min_speech: float = 0.1  # fraction of a window's 25 ms frames that must pass the energy check
    vad_floor_dbfs: float = -50.0
    vad_range_db: float = 35.0
    vad_frame_s: float = 0.025


def plan_file(stream: AudioStream, settings: WindowSettings) -> list[Window]:
    """The windows of one recording; only those where the energy check finds sound when ``settings.vad``."""
    windows = plan_windows(stream.num_samples, SR, settings.window_s, settings.hop_s)
    if settings.vad:
        frame = max(1, round(settings.vad_frame_s * SR))
        levels = frame_levels_db(stream.blocks(frame * 2400), frame)  # read once in 60 s blocks
        active = active_frames(levels, floor_dbfs=settings.vad_floor_dbfs, range_db=settings.vad_range_db)
        windows = speech_windows(active, frame, windows, min_speech=settings.vad_min_speech)
        if not windows:
            raise ValueError("no window with sound (energy check; window.vad=false predicts every window)")
    return windows


def check_length(num_samples: int, min_samples: int) -> None:
    """Refuse a recording shorter than the model's features need, in one line."""
    if num_samples < min_samples:
        raise ValueError(f"{num_samples / SR:.4f} s of audio is shorter than the {min_samples} samples "
                         f"({min_samples / SR:.3f} s at 16 kHz) the model's features need")


@dataclass
class FileOpened:
    """A file was opened and its windows planned (``result.windows``), or it failed (``result.error``)."""

    result: FileResult


@dataclass
class WindowRead:
    """Window ``index`` of a file, read; ``prefetched``: what ``prefetch`` started for it."""

    result: FileResult
    index: int
    wave: np.ndarray
    prefetched: Any


@dataclass
class FileRead:
    """Every window of a file has been handed on (or it failed part way: ``result.error``)."""

    result: FileResult


Event = FileOpened | WindowRead | FileRead


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_END = object()


class WindowReader:
    """Reads ``files`` in a thread started at once; iterate it (once) for its events in reading order."""

    def __init__(self, files: Sequence[str | Path], settings: WindowSettings,
                 prefetch: Callable[[np.ndarray], Any], ahead: int) -> None:
        self.files, self.settings, self.prefetch = list(files), settings, prefetch
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, int(ahead)))
        self._stop = threading.Event()
        self._warned: set[str] = set()
        self._thread = threading.Thread(target=self._run, name="wav2emo-window-reader", daemon=True)
        self._thread.start()

    def _put(self, event: Any) -> bool:
        """Hand one event on, waiting while the queue is full; False once the reader is being closed."""
        while not self._stop.is_set():
            try:
                self._queue.put(event, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _read_file(self, result: FileResult) -> bool:
        stream = None
        try:
            stream = AudioStream(result.path, SR)
            result.num_samples = stream.num_samples
            result.windows = plan_file(stream, self.settings)
            result.probs = [None] * len(result.windows)
        except Exception as e:  # noqa: BLE001 - one bad file never stops the others; its row says why
            fail_file(result, e, self._warned)
        if not self._put(FileOpened(result)):
            return False
        try:
            for i, w in enumerate(result.windows if result.error is None else []):
                wave = stream.read(w.start, w.end)
                if not self._put(WindowRead(result, i, wave, self.prefetch(wave))):
                    return False
        except Exception as e:  # noqa: BLE001 - a file that breaks part way fails alone
            fail_file(result, e, self._warned)
        finally:
            if stream is not None:
                stream.close()
        return self._put(FileRead(result))

    def _run(self) -> None:
        try:
            for path in self.files:
                if not self._read_file(FileResult(Path(path))):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consuming thread, raised there
            self._put(_Failed(e))
        self._put(_END)

    def __iter__(self) -> Iterator[Event]:
        while True:
            event = self._queue.get()
            if event is _END:
                return
            if isinstance(event, _Failed):
                raise event.error
            yield event

    def close(self) -> None:
        """Stop reading (what was queued is dropped) and wait for the thread."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.1)
            except queue.Empty:
                pass
        self._thread.join()
