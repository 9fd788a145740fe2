"""Predicting emotions for audio files with one checkpoint or an ensemble of fold checkpoints.

Each file is read in stretches (:class:`~wav2emo.inference.audio.AudioStream`: any format soundfile reads,
mixed to mono, resampled to 16 kHz), cut into overlapping windows, and the windows of consecutive files are fed
in batches of ``batch_size`` through every model (features computed in memory); the ensemble's probabilities
are the mean of the models'.  With eGeMAPS worker processes, windows are read ahead of the batch being run
(:attr:`Predictor.read_ahead`) so that every worker stays busy.  Memory stays bounded whatever the length of a
file: at most one batch of windows (their audio and features) plus the read-ahead's audio is held, and one row
of probabilities per window.  A file gives one
:class:`FileResult`: a row per window and the mean over its windows.  A file that cannot be used gets its
reason and never stops the others.

Batches follow the order of the inputs with the checkpoint's ``eval_batch_size`` by default, so the test clips
of a fold listed in ``wav2emo.eval``'s order are batched exactly as eval batched them (heads whose output
depends on padding, like ``fe_vgg`` with ``frames: null``, then give eval's numbers too).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2emo.data.audio import TARGET_SAMPLE_RATE
from wav2emo.errors import ConfigError, UserError
from wav2emo.feeding.input_strategies import collate
from wav2emo.inference.audio import AudioStream
from wav2emo.inference.restore import Restored
from wav2emo.inference.windows import Window, active_frames, frame_levels_db, plan_windows, speech_windows

log = logging.getLogger(__name__)

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


def ensemble_classes(models: Sequence[Any]) -> Any:
    """The class names every model of an ensemble predicts (each has ``path`` and ``class_names``); models of
    other classes, or none at all, are refused in one line."""
    if not models:
        raise ConfigError("no model to predict with")
    names = models[0].class_names
    for m in models[1:]:
        if m.class_names != names:
            raise ConfigError(f"{m.path} predicts classes {list(m.class_names)}, but {models[0].path} predicts "
                              f"{list(names)}: an ensemble needs the same classes in the same order")
    return names


class Predictor:
    """An ensemble of restored checkpoints (one or more) that all predict the same classes."""

    def __init__(self, models: Sequence[Restored], batch_size: int | None = None) -> None:
        self.models, self.class_names = list(models), ensemble_classes(models)
        self.batch_size = max(1, int(batch_size or models[0].eval_batch_size))
        self.min_samples = max(m.min_samples for m in models)
        limits = [m.features.max_samples for m in models if m.features.max_samples is not None]
        self.max_samples = min(limits) if limits else None

    @property
    def read_ahead(self) -> int:
        """How many windows to read (and queue for eGeMAPS) ahead of the batch being run: enough to keep every
        eGeMAPS worker busy while a batch waits for its own (0 without worker processes: nothing runs ahead)."""
        workers = sum(m.features.egemaps_workers for m in self.models
                      if getattr(m.features, "smile_pool", None) is not None)
        return 2 * self.batch_size + 4 * workers if workers else 0

    def prefetch(self, wave: np.ndarray) -> dict[int, Any]:
        """Start what can run ahead for one window (its eGeMAPS on the worker pool), per distinct feature set."""
        started: dict[int, Any] = {}
        for m in self.models:
            if id(m.features) not in started:
                started[id(m.features)] = m.features.submit_egemaps(wave)
        return started

    def close(self) -> None:
        """Stop the feature sets' worker processes, if any."""
        for m in self.models:
            m.features.close()

    @torch.inference_mode()
    def probabilities(self, waves: Sequence[np.ndarray], prefetched: Sequence[dict[int, Any]] | None = None) -> np.ndarray:
        """(N, C) mean class probabilities of the ensemble for N mono 16 kHz waves, as one batch
        (``prefetched``: what :meth:`prefetch` started for each wave)."""
        items_by_features: dict[int, list[dict[str, Any]]] = {}
        total = np.zeros((len(waves), len(self.class_names)))
        for m in self.models:
            key = id(m.features)
            if key not in items_by_features:  # one backbone pass per distinct feature set
                early = None if prefetched is None else [p.get(key) if p else None for p in prefetched]
                items = m.features.items(waves, egemaps=early)
                for i, it in enumerate(items):
                    it.update(label=-1, actor=-1, clip_id=str(i), index=i)
                items_by_features[key] = items
            device = m.features.device  # the padded inputs are made there (the hidden states are already there)
            batch = collate(items_by_features[key], m.frames, m.frames_multiple, padded_device=device)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            probs = m.module(batch).float().softmax(dim=1).cpu().numpy().astype(np.float64)
            if not np.isfinite(probs).all():
                raise ValueError(f"{m.path.name} gave NaN/inf probabilities")
            total += probs
        return total / len(self.models)


@dataclass
class FileResult:
    """One file's windows (samples at 16 kHz), their probabilities, and the file's mean; or why it failed."""

    path: Path
    num_samples: int = 0
    windows: list[Window] = field(default_factory=list)
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


def plan_file(stream: AudioStream, settings: WindowSettings, min_samples: int) -> list[Window]:
    """The windows of one recording; only those where the energy check finds sound when ``settings.vad``."""
    n = stream.num_samples
    if n < min_samples:
        raise ValueError(f"{n / SR:.4f} s of audio is shorter than the {min_samples} samples "
                         f"({min_samples / SR:.3f} s at 16 kHz) the model's features need")
    windows = plan_windows(n, SR, settings.window_s, settings.hop_s)
    if settings.vad:
        frame = max(1, round(settings.vad_frame_s * SR))
        levels = frame_levels_db(stream.blocks(frame * 2400), frame)  # read once in 60 s blocks
        active = active_frames(levels, floor_dbfs=settings.vad_floor_dbfs, range_db=settings.vad_range_db)
        windows = speech_windows(active, frame, windows, min_speech=settings.vad_min_speech)
        if not windows:
            raise ValueError("no window with sound (energy check; window.vad=false predicts every window)")
    return windows


class _Batcher:
    """Windows of consecutive files gathered into batches of ``predictor.batch_size``, in the order they were
    read; up to ``predictor.read_ahead`` windows wait ahead of the batch, their eGeMAPS already running."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.ahead: deque[tuple[FileResult, int, np.ndarray, dict[int, Any] | None]] = deque()
        self.items: list[tuple[FileResult, int, np.ndarray, dict[int, Any] | None]] = []
        self._read_ahead = predictor.read_ahead
        self._warned: set[str] = set()

    def add(self, result: FileResult, index: int, wave: np.ndarray) -> bool:
        """Queue one window (its eGeMAPS starts on the worker pool now); True when the batch is full (call
        :meth:`run`)."""
        self.ahead.append((result, index, wave, self.predictor.prefetch(wave)))
        if len(self.ahead) > self._read_ahead:
            self.items.append(self.ahead.popleft())
        return len(self.items) >= self.predictor.batch_size

    def finish(self) -> Iterator[None]:
        """Run what is left once every file is read, a batch at a time (yields after each batch)."""
        while self.ahead:
            self.items.append(self.ahead.popleft())
            if len(self.items) >= self.predictor.batch_size:
                self.run()
                yield
        self.run()
        yield

    def run(self) -> None:
        live = [it for it in self.items if it[0].error is None]
        self.items = []
        if not live:
            return
        try:
            probs = self.predictor.probabilities([it[2] for it in live], [it[3] for it in live])
        except Exception as e:  # noqa: BLE001 - find the window(s) at fault, one at a time
            if len(live) == 1:
                self._fail(live[0][0], e)
                return
            for it in live:
                self.items = [it[:3] + (None,)]  # computed again, alone
                self.run()
            return
        for (result, index, _, _), p in zip(live, probs, strict=True):
            result.probs[index] = p

    def _fail(self, result: FileResult, e: Exception) -> None:
        if not isinstance(e, UserError | ValueError) and type(e).__name__ not in self._warned:
            self._warned.add(type(e).__name__)  # unexpected: the traceback goes to the log, once per kind
            log.warning("predicting %s failed", result.path, exc_info=e)
        result.fail(e)


def predict_files(files: Sequence[Path], predictor: Predictor, settings: WindowSettings, *,
                  progress: bool = False) -> Iterator[FileResult]:
    """A :class:`FileResult` for every file, in order; a file that fails carries its reason in ``error``."""
    from tqdm.auto import tqdm

    pending: deque[FileResult] = deque()
    batcher = _Batcher(predictor)
    bar = tqdm(total=len(files), unit="file", desc="predict", disable=not progress, leave=False)

    def finished() -> Iterator[FileResult]:
        while pending and pending[0].done:
            bar.update(1)
            yield pending.popleft()

    try:
        for path in files:
            result = FileResult(Path(path))
            pending.append(result)
            try:
                with AudioStream(result.path, SR) as stream:
                    result.num_samples = stream.num_samples
                    result.windows = plan_file(stream, settings, predictor.min_samples)
                    result.probs = [None] * len(result.windows)
                    for i, w in enumerate(result.windows):
                        if result.error is not None:
                            break
                        if batcher.add(result, i, stream.read(w.start, w.end)):
                            batcher.run()
                            yield from finished()
            except Exception as e:  # noqa: BLE001 - one bad file never stops the others; its row says why
                batcher._fail(result, e)
            result.read = True
            yield from finished()
        for _ in batcher.finish():
            yield from finished()
    finally:
        bar.close()
    assert not pending, "every file has a result"
