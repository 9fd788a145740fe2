"""Predicting emotions for audio files with one checkpoint or an ensemble of fold checkpoints.

Each file's windows come from a :class:`~wav2emo.inference.reader.WindowReader` (read in a thread of its own, in
order, each window's eGeMAPS queued on the worker pool as soon as it is read) and the windows of consecutive
files are fed in batches of ``batch_size`` through every model (features computed in memory); the ensemble's
probabilities are the mean of the models'.  The reader runs up to :func:`read_ahead` windows ahead of the batch
being run, enough to keep every eGeMAPS worker busy.
Memory stays bounded whatever the length of a file: one batch of windows (their audio and features) plus the
read-ahead's audio, and one row of probabilities per window.  A file gives one
:class:`~wav2emo.inference.results.FileResult`: a row per window and the mean over its windows.  A file that
cannot be used gets its reason and never stops the others.

Batches follow the order of the inputs with the checkpoint's ``eval_batch_size`` by default, so the test clips
of a fold listed in ``wav2emo.eval``'s order are batched exactly as eval batched them (heads whose output
depends on padding, like ``fe_vgg`` with ``frames: null``, then give eval's numbers too).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2emo.errors import ConfigError
from wav2emo.feeding.input_strategies import collate
from wav2emo.inference.reader import (
    FileOpened,
    FileRead,
    WindowRead,
    WindowReader,
    WindowSettings,
    check_length,
)
from wav2emo.inference.restore import Restored
from wav2emo.inference.results import FileResult, fail_file


def read_ahead(batch_size: int, feature_sets: Iterable[Any]) -> int:
    """How many windows to read (and queue for eGeMAPS) ahead of the batch being run: with eGeMAPS worker
    processes two batches and four windows per worker, enough to keep every worker busy while a batch waits for
    its own; one batch without workers (the reading overlaps the network, nothing else runs ahead).

    Measured (H100, 16 cores, 30-minute recording): reading ahead up to 256 MiB of audio instead, so that the
    workers compute a start-up's worth of windows while the models load, gave no gain; the workers then took the
    cores the start-up needs (``benchmarks/reports/issue25.md``, fifth session)."""
    workers = sum(f.egemaps_workers for f in feature_sets if getattr(f, "smile_pool", None) is not None)
    return 2 * batch_size + 4 * workers if workers else batch_size


def egemaps_prefetch(feature_sets: Iterable[Any]):
    """``prefetch`` for a :class:`WindowReader`: one window's eGeMAPS queued on each distinct feature set's
    worker pool (a dict keyed by the feature set's id; nothing without pools)."""
    distinct = {id(f): f for f in feature_sets}

    def prefetch(wave: np.ndarray) -> dict[int, Any]:
        return {key: f.submit_egemaps(wave) for key, f in distinct.items()}

    return prefetch


def start_reader(files: Sequence[Path], settings: WindowSettings, feature_sets: Iterable[Any],
                 batch_size: int) -> WindowReader:
    """A :class:`WindowReader` of ``files`` (started now) that queues each window's eGeMAPS on these feature sets'
    worker pools, :func:`read_ahead` windows ahead of batches of ``batch_size``."""
    sets = list(feature_sets)
    return WindowReader(files, settings, egemaps_prefetch(sets), read_ahead(batch_size, sets))


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
    def feature_sets(self) -> list[Any]:
        return list({id(m.features): m.features for m in self.models}.values())

    def reader(self, files: Sequence[Path], settings: WindowSettings) -> WindowReader:
        """A reader of ``files`` feeding this ensemble (started now)."""
        return start_reader(files, settings, self.feature_sets, self.batch_size)

    def close(self) -> None:
        """Stop the feature sets' worker processes, if any (each shared feature set once)."""
        for features in self.feature_sets:
            features.close()

    @torch.inference_mode()
    def probabilities(self, waves: Sequence[np.ndarray], prefetched: Sequence[dict[int, Any]] | None = None) -> np.ndarray:
        """(N, C) mean class probabilities of the ensemble for N mono 16 kHz waves, as one batch
        (``prefetched``: what :func:`egemaps_prefetch` started for each wave)."""
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


class _Batcher:
    """Windows of consecutive files gathered into batches of ``predictor.batch_size``, in reading order."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.items: list[tuple[FileResult, int, np.ndarray, dict[int, Any] | None]] = []
        self._warned: set[str] = set()

    def add(self, window: WindowRead) -> bool:
        """Queue one window; True when the batch is full (call :meth:`run`)."""
        self.items.append((window.result, window.index, window.wave, window.prefetched))
        return len(self.items) >= self.predictor.batch_size

    def run(self) -> None:
        live = [it for it in self.items if it[0].error is None]
        self.items = []
        if not live:
            return
        try:
            probs = self.predictor.probabilities([it[2] for it in live], [it[3] for it in live])
        except Exception as e:  # noqa: BLE001 - find the window(s) at fault, one at a time
            if len(live) == 1:
                fail_file(live[0][0], e, self._warned)
                return
            for it in live:
                self.items = [it[:3] + (None,)]  # computed again, alone
                self.run()
            return
        for (result, index, _, _), p in zip(live, probs, strict=True):
            result.probs[index] = p


def predict_files(files: Sequence[Path], predictor: Predictor, settings: WindowSettings, *,
                  progress: bool = False, reader: WindowReader | None = None) -> Iterator[FileResult]:
    """A :class:`FileResult` for every file, in order; a file that fails carries its reason in ``error``.

    ``reader``: one already started on ``files`` (e.g. while the models were restored); else one is started
    here.  It is closed when this generator ends."""
    from tqdm.auto import tqdm

    pending: deque[FileResult] = deque()
    batcher = _Batcher(predictor)
    reader = reader if reader is not None else predictor.reader(files, settings)
    bar = tqdm(total=len(files), unit="file", desc="predict", disable=not progress, leave=False)

    def finished() -> Iterator[FileResult]:
        while pending and pending[0].done:
            bar.update(1)
            yield pending.popleft()

    try:
        for event in reader:
            result = event.result
            if isinstance(event, FileOpened):
                pending.append(result)
                if result.error is None:
                    try:
                        check_length(result.num_samples, predictor.min_samples)
                    except ValueError as e:
                        result.fail(e)
            elif isinstance(event, WindowRead):
                if result.error is None and batcher.add(event):
                    batcher.run()
                    yield from finished()
            elif isinstance(event, FileRead):
                result.read = True
                yield from finished()
        batcher.run()
        yield from finished()
    finally:
        reader.close()
        bar.close()
    assert not pending, "every file has a result"
