"""Cached augmentation copies and their features together: eGeMAPS of each copy starts while the next are made.

The copies (:func:`wav2emo.augment.copies.make_copies`) and their feature caches used to be two stages, one
after the other: every copy written, then every cache built from the written files.  The caches cannot be
built earlier (their key is the hash of the whole copies' manifest, each copy's ``sha1`` included), but the
work can start earlier: eGeMAPS, the CPU-bound part (openSMILE, about 19 s of 16 cores for 4080 copies), is
queued to openSMILE worker processes (:class:`~wav2emo.features.smile_waves.SmileWavePool`, niced) with each
group's samples as the group is made, while the device augments the next groups.  Once every copy is written,
the results are offered under each file's ``sha1`` (:mod:`wav2emo.features.offered`) and the caches are built as
before (:func:`~wav2emo.features.overlap.get_features_many`, each under its own lock, SSL hidden states from the
written files): the eGeMAPS build takes the offered values instead of decoding the files again, so its cache,
key, layout and checks are those of a build from the files, with the same values (the float32 WAV holds the
samples exactly; ``tests/test_copies_overlap.py``).

What does not change: the copies' folder and meta, the feature caches and their keys; copies opened from disk
(built earlier or by another process while this one waited for the lock) go the previous way; an offer that
fails is computed from its file, naming it in any error.  A failure while the copies are made leaves no
``copies.json`` (rebuilt next time) and no feature cache (none is written before every copy is).

``SETTINGS.overlap = False`` is the previous way (the benchmark measures both in one run).  Waves waiting for
a worker are bounded by ``SETTINGS.backlog_mb`` (the copies wait for openSMILE beyond it).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping
from concurrent.futures import Future
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wav2emo.augment.compose import Augmenter
from wav2emo.augment.copies import META, copies_dir, make_copies
from wav2emo.data.manifest import Manifest
from wav2emo.features import make_kind
from wav2emo.features.offered import offer_key, offering
from wav2emo.features.overlap import get_features_many

log = logging.getLogger(__name__)



@dataclass
class Settings:
    overlap: bool = True  # False: copies first, then their features from the files (the previous way)
    backlog_mb: float = 1024.0  # samples queued for openSMILE at most; making copies waits beyond it
    nice: int = 10  # the openSMILE workers' lower priority: the thread feeding the device keeps its core


SETTINGS = Settings()


def computes_from_waves(spec: Mapping[str, Any]) -> bool:
    """Whether a spec's kind takes offered values computed from waves in memory (the built-in eGeMAPS kinds)."""
    from wav2emo.features.egemaps import EgemapsFunctionals, EgemapsLLD

    return isinstance(make_kind(spec, "cpu"), (EgemapsFunctionals, EgemapsLLD))


class _WaveFeeder:
    """One eGeMAPS spec: each copy's samples queued to openSMILE worker processes as its group is made."""

    def __init__(self, spec: Mapping[str, Any], n_clips: int, sample_rate: int) -> None:
        from wav2emo.features.egemaps import SAMPLE_RATE

        self.kind = make_kind(spec, "cpu")
        self.what = offer_key(self.kind.key_fields())
        self.workers = self.kind._workers(n_clips)
        self.sample_rate = sample_rate
        self.usable = sample_rate == SAMPLE_RATE  # other rates: the build resamples from the files as before
        self.pool: Any = None
        self.futures: dict[str, Future] = {}
        self.queued = 0  # samples waiting for a worker
        self.room = threading.Condition()

    def start(self) -> None:
        """Start the worker processes (they load openSMILE while the first groups are decoded and augmented)."""
        if self.usable and self.pool is None:
            from wav2emo.features.smile_waves import SmileWavePool

            self.pool = SmileWavePool(self.workers, str(self.kind.spec["feature_set"]), self.kind.level,
                                      nice=SETTINGS.nice)

    def add(self, ids: list[str], waves: list[np.ndarray]) -> None:
        if not self.usable:
            return
        try:
            self.start()
            limit = int(SETTINGS.backlog_mb * 2**20 / 4)
            for cid, wave in zip(ids, waves, strict=True):
                self._reserve(len(wave), limit)
                fut = self.pool.submit(wave, self.sample_rate)
                fut.add_done_callback(functools.partial(self._done, len(wave)))
                self.futures[cid] = fut
        except Exception as e:  # noqa: BLE001 - the cache build computes these clips from their files
            log.warning("eGeMAPS of the copies in memory stopped (%s); the rest is computed from the files", e)
            self.usable = False

    def _reserve(self, n: int, limit: int) -> None:
        """Wait until ``n`` more queued samples stay within ``limit`` (or nothing is queued)."""
        with self.room:
            self.room.wait_for(lambda: self.queued == 0 or self.queued + n <= limit)
            self.queued += n

    def _done(self, n: int, _future: Future) -> None:
        with self.room:
            self.queued -= n
            self.room.notify_all()

    def by_sha1(self, copies: Manifest) -> dict[str, Future]:
        return {c.sha1: self.futures[c.clip_id] for c in copies if c.clip_id in self.futures}

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()


def copies_with_features(train: Manifest, augmenter: Augmenter, seed: int, cache_dir: str | Path,
                         specs: Mapping[str, Any], *, sample_rate: int = 16000,
                         device: str | torch.device = "cpu", extraction_device: Any = "auto",
                         lock_timeout: float | None = None) -> tuple[Manifest, dict[str, Any]]:
    """The augmented copies of ``train`` (:func:`make_copies`) and the feature cache of each ``{name: spec}``.

    With ``SETTINGS.overlap`` the eGeMAPS of copies made by this call is computed while the copies are made;
    otherwise (and for copies opened from disk) their caches are built from the written files afterwards.
    """
    if not SETTINGS.overlap:
        copies = make_copies(train, augmenter, seed, cache_dir, sample_rate=sample_rate, device=device,
                             lock_timeout=lock_timeout)
        return copies, get_features_many(copies, specs, cache_dir, device=extraction_device)
    n = len(train) * augmenter.copies
    with ExitStack() as stack:
        feeders = [_WaveFeeder(spec, n, sample_rate) for spec in specs.values() if computes_from_waves(spec)]
        for feeder in feeders:
            stack.callback(feeder.close)  # after the caches are built: queued work stops on any error
        if feeders and not (copies_dir(cache_dir, train, augmenter, seed, sample_rate) / META).is_file():
            for feeder in feeders:  # copies to make (unless another process makes them while this one waits)
                feeder.start()

        def on_group(ids: list[str], waves: list[np.ndarray]) -> None:
            for feeder in feeders:
                feeder.add(ids, waves)

        copies = make_copies(train, augmenter, seed, cache_dir, sample_rate=sample_rate, device=device,
                             lock_timeout=lock_timeout, on_group=on_group if feeders else None)
        for feeder in feeders:
            stack.enter_context(offering(feeder.what, feeder.by_sha1(copies)))
        return copies, get_features_many(copies, specs, cache_dir, device=extraction_device)
