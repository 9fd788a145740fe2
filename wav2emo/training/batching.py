"""How a split's clips are ordered into batches: epoch-seeded shuffling, length buckets, and the resident
split (the whole split collated once onto the training device, batches gathered by index)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from wav2emo.training.inputs import PADDED_KEYS, SSL_FRAME_KEYS, ClipDataset, collate, padded_frames
from wav2emo.training.placement import read_items


class EpochSeeded:
    """The epoch counter of a shuffling sampler: each epoch's order is drawn from ``seed + epoch``.

    Lightning calls ``set_epoch`` before every epoch (it looks for ``loader.sampler.set_epoch`` and
    ``loader.batch_sampler.sampler.set_epoch``), so a run resumed at epoch k draws the order the
    uninterrupted run drew at epoch k; a generator created once per loader would restart from its first
    order instead.  Outside Lightning every iteration moves on to the next epoch.
    """

    seed: int
    epoch: int

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    @property
    def sampler(self) -> EpochSeeded:  # where Lightning looks for set_epoch on a batch sampler
        return self

    def _next_generator(self) -> torch.Generator:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        self.epoch += 1
        return g


class EpochShuffleSampler(EpochSeeded, torch.utils.data.Sampler[int]):
    """A random permutation of ``n`` items per epoch, reproducible from ``seed + epoch``."""

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        yield from torch.randperm(self.n, generator=self._next_generator()).tolist()


class LengthBucketBatchSampler(EpochSeeded):
    """Training batches of clips of similar length, so ragged batches carry little padding.

    Each epoch shuffles the clips (seeded by ``seed + epoch``), cuts them into pools of
    ``pool_batches`` batches, sorts each pool by length, cuts it into batches and shuffles the batch
    order: batches stay random in content and order while the padded frames (and the compute) shrink.
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, pool_batches: int = 20) -> None:
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.batch_size, self.seed, self.pool = int(batch_size), int(seed), int(pool_batches) * int(batch_size)
        self.epoch = 0

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        g = self._next_generator()
        order = torch.randperm(len(self.lengths), generator=g)
        batches = []
        for start in range(0, len(order), self.pool):
            pool = order[start : start + self.pool]
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield batches[b]


class ResidentSplit(EpochSeeded):
    """A whole split held as tensors on one device; batches are gathered by index, no host I/O.

    Iterating reshuffles with a generator seeded by ``seed + epoch`` so runs (and resumed runs) are
    reproducible; Lightning sets the epoch through ``set_epoch``.
    """

    def __init__(
        self,
        dataset: ClipDataset,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        seed: int = 0,
        batch_sampler: LengthBucketBatchSampler | CopyBatchSampler | None = None,
        frames_multiple: int | None = None,
    ) -> None:
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.frames_multiple = frames_multiple
        self.batch_sampler = batch_sampler
        items = read_items(dataset)  # threads: the fold's upload is most of a GPU run's start-up
        # The same collate as the loader, over the whole split: padded to its longest clip (or to
        # ``frames``), rounded up so every batch crop fits.
        full = collate(items, dataset.frames, frames_multiple)
        # Per padded key: the real length of every clip (a host copy, to crop batches without a device read).
        self.lengths = {
            key: (full[lk] if lk.endswith("_lengths") else full[lk].sum(1)).clone()
            for key, (_, lk) in PADDED_KEYS.items() if key in full
        }
        self.tensors = {k: v.to(device) for k, v in full.items() if isinstance(v, torch.Tensor)}
        self.clip_ids = full["clip_id"]
        self.fixed = dataset.frames is not None
        self.n = len(items)

    def __len__(self) -> int:
        if self.batch_sampler is not None:  # e.g. one copy per clip: fewer batches than rows
            return len(self.batch_sampler)
        return (self.n + self.batch_size - 1) // self.batch_size

    def _batches(self) -> Iterator[torch.Tensor]:
        if self.batch_sampler is not None:
            self.batch_sampler.set_epoch(self.epoch)
            self.epoch += 1
            for idx in self.batch_sampler:
                yield torch.as_tensor(idx, dtype=torch.long)
            return
        if self.shuffle:
            order = torch.randperm(self.n, generator=self._next_generator())
        else:
            order = torch.arange(self.n)
        for start in range(0, self.n, self.batch_size):
            yield order[start : start + self.batch_size]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        batches = list(self._batches())
        if not batches:
            return
        # One host-to-device copy of the epoch's order: a blocking copy per batch would make every
        # training step wait for the GPU to finish the previous one.
        order = torch.cat(batches).to(next(iter(self.tensors.values())).device)
        start = 0
        for idx in batches:
            dev_idx = order[start : start + len(idx)]
            start += len(idx)
            batch = {k: v.index_select(0, dev_idx) for k, v in self.tensors.items()}
            for key, lengths in self.lengths.items():  # crop to the longest clip of this batch
                if self.fixed and key in SSL_FRAME_KEYS:
                    continue
                axis, mask_key = PADDED_KEYS[key]
                t = padded_frames(int(lengths[idx].max()), self.frames_multiple)
                batch[key] = batch[key].narrow(axis + 1, 0, t)
                if not mask_key.endswith("_lengths"):
                    batch[mask_key] = batch[mask_key][:, :t]
            batch["clip_id"] = [self.clip_ids[i] for i in idx.tolist()]
            yield batch


class CopyBatchSampler(EpochSeeded):
    """Training batches that serve each clip once per epoch, as one of its ``copies + 1`` versions.

    Rows ``i + n * c`` of a :class:`~wav2emo.training.inputs.CopiesDataset` are clip ``i``'s version ``c``
    (0 = the original, 1..K the augmented copies).  Each epoch draws the order and, per clip, a version
    uniformly from 0..K with a generator seeded by ``seed + epoch``: reproducible and resumable (Lightning
    sets the epoch), different copies across epochs.  With ``lengths`` (of every row), batches are length
    buckets as in :class:`LengthBucketBatchSampler`.
    """

    def __init__(self, n_clips: int, copies: int, batch_size: int, seed: int = 0, lengths=None,
                 pool_batches: int = 20, labels=None) -> None:
        self.n, self.copies, self.batch_size, self.seed, self.epoch = int(n_clips), int(copies), int(batch_size), int(seed), 0
        self.lengths = None if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.pool = int(pool_batches) * self.batch_size
        # With ``labels`` (of the n clips): clips are drawn class-balanced, as ClassBalancedBatchSampler does.
        self.weights = None if labels is None else class_balanced_weights(labels)

    def __len__(self) -> int:
        return (self.n + self.batch_size - 1) // self.batch_size

    def rows(self, g: torch.Generator) -> torch.Tensor:
        """This epoch's shuffled rows: one version of every clip."""
        if self.weights is None:
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        version = torch.randint(self.copies + 1, (self.n,), generator=g)
        return order + self.n * version[order]

    def __iter__(self) -> Iterator[list[int]]:
        g = self._next_generator()
        rows = self.rows(g)
        if self.lengths is None:
            for start in range(0, self.n, self.batch_size):
                yield rows[start : start + self.batch_size].tolist()
            return
        batches = []
        for start in range(0, self.n, self.pool):
            pool = rows[start : start + self.pool]
            pool = pool[torch.argsort(self.lengths[pool], stable=True)]
            batches += [pool[i : i + self.batch_size].tolist() for i in range(0, len(pool), self.batch_size)]
        for b in torch.randperm(len(batches), generator=g).tolist():
            yield batches[b]


class ClassBalancedBatchSampler(EpochSeeded):
    """Training batches drawn class-balanced, with replacement: every class is equally likely per draw.

    Each epoch draws as many clips as the split holds (so an epoch keeps its length and step count),
    each from a uniformly chosen class and then uniformly within it (weight ``1 / count[label]`` per
    clip), with a generator seeded by ``seed + epoch``: reproducible, and a resumed run draws what the
    uninterrupted one drew.  Clips without a label (``-1``) are never drawn.
    """

    def __init__(self, labels, batch_size: int, seed: int = 0, num_samples: int | None = None) -> None:
        self.weights = class_balanced_weights(labels)
        self.batch_size, self.seed, self.epoch = int(batch_size), int(seed), 0
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)

    def __len__(self) -> int:
        return (self.num_samples + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        draw = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self._next_generator())
        for start in range(0, self.num_samples, self.batch_size):
            yield draw[start : start + self.batch_size].tolist()


def class_balanced_weights(labels) -> torch.Tensor:
    """Per-clip draw weights ``1 / count[label]`` (every class equally likely); unlabelled clips (-1) get 0."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    labelled = labels >= 0
    if not bool(labelled.any()):
        raise ValueError("a class-balanced sampler needs labelled clips; this split has none")
    counts = torch.bincount(labels[labelled])
    weights = torch.zeros(len(labels), dtype=torch.float64)
    weights[labelled] = 1.0 / counts[labels[labelled]].double()
    return weights
