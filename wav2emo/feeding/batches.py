"""How a split's clips are ordered into batches: epoch-seeded shuffling, length buckets, and the resident
split (the whole split collated once onto the training device, batches gathered by index).

Several processes (``trainer=ddp``, one per GPU): every sampler takes ``rank`` and ``world_size``.  Each rank
draws the same epoch order (from ``seed + epoch``), pads it by wrapping around to a multiple of
``world_size`` (as torch's DistributedSampler does: at most ``world_size - 1`` clips seen twice an epoch) and
keeps its own share, so the shards are disjoint, cover the epoch, and give every rank the same number of
batches (a rank with one batch less would leave the others waiting in the gradient all-reduce for ever).
Evaluation splits are cut into contiguous blocks without padding (:func:`eval_shard`): every clip is scored
exactly once, and the blocks concatenated in rank order are the split in its order.  With ``world_size=1``
every sampler draws exactly what it drew before sharding existed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from wav2emo.feeding.input_strategies import PADDED_KEYS, SSL_FRAME_KEYS, ClipDataset, collate, padded_frames
from wav2emo.feeding.placement import read_items
from wav2emo.feeding.streamed_upload import stream_to_device


def check_rank(rank: int, world_size: int) -> tuple[int, int]:
    """``(rank, world_size)`` as ints, refused unless ``0 <= rank < world_size``."""
    rank, world_size = int(rank), int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank}, world_size={world_size}: expected world_size >= 1 and 0 <= rank < world_size")
    return rank, world_size


def padded_to_ranks(order: torch.Tensor, world_size: int) -> torch.Tensor:
    """``order`` extended by wrapping around to a multiple of ``world_size`` (its first items again)."""
    pad = (-len(order)) % world_size
    if pad == 0 or len(order) == 0:
        return order
    reps = (pad + len(order) - 1) // len(order)
    return torch.cat([order, order.repeat(reps)[:pad]])


def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's share of an epoch's ``order`` (the same on every rank): every ``world_size``-th item of the
    padded order, from position ``rank``.  Disjoint across ranks, together the whole order, equal sizes."""
    if world_size == 1:
        return order
    return padded_to_ranks(order, world_size)[rank::world_size]


def shard_size(n: int, world_size: int) -> int:
    """Items per rank in an epoch of ``n`` items: ``ceil(n / world_size)`` on every rank."""
    return (int(n) + world_size - 1) // world_size


def eval_shard(n: int, rank: int = 0, world_size: int = 1) -> range:
    """The contiguous block of an evaluation split's ``n`` items that ``rank`` scores, without padding: every
    item exactly once over the ranks, blocks in rank order (sizes differ by at most one)."""
    rank, world_size = check_rank(rank, world_size)
    base, extra = divmod(int(n), world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def bucketed_batches(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, pool: int, g: torch.Generator,
                     rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's length-bucketed batches of an epoch's ``order``, in the epoch's (shared) batch order.

    The padded order is cut into pools of ``pool * world_size`` items, each sorted by length and cut into
    steps of ``batch_size * world_size`` clips of similar length; the steps are shuffled with ``g`` and each
    rank takes every ``world_size``-th clip of a step: at one training step all ranks hold batches of about
    the same length (the all-reduce waits for the slowest), and every rank the same number of batches.
    With ``world_size=1`` these are the batches of a single process.
    """
    order = padded_to_ranks(order, world_size)
    step, pool = batch_size * world_size, pool * world_size
    steps = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        steps += [chunk[i : i + step] for i in range(0, len(chunk), step)]
    return [steps[b][rank::world_size].tolist() for b in torch.randperm(len(steps), generator=g).tolist()]


def batches_of(order: torch.Tensor, batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches of ``batch_size`` (the last one shorter)."""
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


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
    """A random permutation of ``n`` items per epoch, reproducible from ``seed + epoch``; with ``world_size``
    processes, this ``rank``'s share of it (see the module docstring)."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0
        self.rank, self.world_size = check_rank(rank, world_size)

    def __len__(self) -> int:
        return shard_size(self.n, self.world_size)

    def __iter__(self) -> Iterator[int]:
        order = torch.randperm(self.n, generator=self._next_generator())
        yield from shard(order, self.rank, self.world_size).tolist()


class LengthBucketBatchSampler(EpochSeeded):
    """Training batches of clips of similar length, so ragged batches carry little padding.

    Each epoch shuffles the clips (seeded by ``seed + epoch``), cuts them into pools of
    ``pool_batches`` batches, sorts each pool by length, cuts it into batches and shuffles the batch
    order: batches stay random in content and order while the padded frames (and the compute) shrink.
    With ``world_size`` processes, this ``rank``'s batches (:func:`bucketed_batches`).
    """

    def __init__(self, lengths, batch_size: int, seed: int = 0, pool_batches: int = 20, rank: int = 0,
                 world_size: int = 1) -> None:
        self.lengths = torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.batch_size, self.seed, self.pool = int(batch_size), int(seed), int(pool_batches) * int(batch_size)
        self.epoch = 0
        self.rank, self.world_size = check_rank(rank, world_size)

    def __len__(self) -> int:
        return shard_size(shard_size(len(self.lengths), self.world_size), self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = self._next_generator()
        order = torch.randperm(len(self.lengths), generator=g)
        yield from bucketed_batches(order, self.lengths, self.batch_size, self.pool, g, self.rank, self.world_size)


COLLATE_ON_DEVICE = True  # False: pad on the host and copy the whole (the way before; benchmarks/startup_phases.py)
STREAMED_UPLOAD = True  # False: read every clip, then collate on the device (the way before the streamed upload)


class ResidentSplit(EpochSeeded):
    """A whole split held as tensors on one device; batches are gathered by index, no host I/O.

    Iterating reshuffles with a generator seeded by ``seed + epoch`` so runs (and resumed runs) are
    reproducible; Lightning sets the epoch through ``set_epoch``.  With ``world_size`` processes each holds the
    whole split (a training shard changes every epoch) and serves its own share: a shard of every shuffled
    epoch, or its contiguous block of an evaluation split (:func:`eval_shard`).
    """

    def __init__(
        self,
        dataset: ClipDataset,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        seed: int = 0,
        batch_sampler: LengthBucketBatchSampler | CopyBatchSampler | ClassBalancedBatchSampler | None = None,
        frames_multiple: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.rank, self.world_size = check_rank(rank, world_size)
        if batch_sampler is not None and (batch_sampler.rank, batch_sampler.world_size) != (self.rank, world_size):
            raise ValueError(f"the batch sampler shards for rank {batch_sampler.rank} of {batch_sampler.world_size}, "
                             f"the resident split for rank {self.rank} of {world_size}")
        self.frames_multiple = frames_multiple
        self.batch_sampler = batch_sampler
        # The same collate as the loader, over the whole split: padded to its longest clip (or to ``frames``),
        # rounded up so every batch crop fits.  Cached features stream: read by threads into pinned chunks,
        # each sent to the device while the next are read (feeding/streamed_upload.py).
        full = stream_to_device(dataset, device, frames_multiple) if STREAMED_UPLOAD and COLLATE_ON_DEVICE else None
        if full is None:  # inputs of inexact lengths (audio): every clip read (threads), then padded on the device
            items = read_items(dataset)
            full = collate(items, dataset.frames, frames_multiple, padded_device=device if COLLATE_ON_DEVICE else None)
        self.n = len(full["clip_id"])
        # Per padded key: the real length of every clip (a host copy, to crop batches without a device read).
        self.lengths = {
            key: (full[lk] if lk.endswith("_lengths") else full[lk].sum(1)).clone()
            for key, (_, lk) in PADDED_KEYS.items() if key in full
        }
        self.tensors = {k: v.to(device) for k, v in full.items() if isinstance(v, torch.Tensor)}
        self.clip_ids = full["clip_id"]
        self.fixed = dataset.frames is not None

    def __len__(self) -> int:
        if self.batch_sampler is not None:  # e.g. one copy per clip: fewer batches than rows
            return len(self.batch_sampler)
        if self.shuffle:
            return shard_size(shard_size(self.n, self.world_size), self.batch_size)
        return shard_size(len(eval_shard(self.n, self.rank, self.world_size)), self.batch_size)

    def _batches(self) -> Iterator[torch.Tensor]:
        if self.batch_sampler is not None:
            self.batch_sampler.set_epoch(self.epoch)
            self.epoch += 1
            for idx in self.batch_sampler:
                yield torch.as_tensor(idx, dtype=torch.long)
            return
        if self.shuffle:
            order = shard(torch.randperm(self.n, generator=self._next_generator()), self.rank, self.world_size)
        else:
            block = eval_shard(self.n, self.rank, self.world_size)
            order = torch.arange(block.start, block.stop)
        for start in range(0, len(order), self.batch_size):
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

    Rows ``i + n * c`` of a :class:`~wav2emo.feeding.input_strategies.CopiesDataset` are clip ``i``'s version ``c``
    (0 = the original, 1..K the augmented copies).  Each epoch draws the order and, per clip, a version
    uniformly from 0..K with a generator seeded by ``seed + epoch``: reproducible and resumable (Lightning
    sets the epoch), different copies across epochs.  With ``lengths`` (of every row), batches are length
    buckets as in :class:`LengthBucketBatchSampler`.  With ``world_size`` processes, every rank draws the
    same rows and keeps its share (:func:`shard`, :func:`bucketed_batches`).
    """

    def __init__(self, n_clips: int, copies: int, batch_size: int, seed: int = 0, lengths=None,
                 pool_batches: int = 20, labels=None, rank: int = 0, world_size: int = 1) -> None:
        self.n, self.copies, self.batch_size, self.seed, self.epoch = int(n_clips), int(copies), int(batch_size), int(seed), 0
        self.lengths = None if lengths is None else torch.as_tensor(np.asarray(lengths), dtype=torch.long)
        self.pool = int(pool_batches) * self.batch_size
        # With ``labels`` (of the n clips): clips are drawn class-balanced, as ClassBalancedBatchSampler does.
        self.weights = None if labels is None else class_balanced_weights(labels)
        self.rank, self.world_size = check_rank(rank, world_size)

    def __len__(self) -> int:
        return shard_size(shard_size(self.n, self.world_size), self.batch_size)

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
            yield from batches_of(shard(rows, self.rank, self.world_size), self.batch_size)
            return
        yield from bucketed_batches(rows, self.lengths, self.batch_size, self.pool, g, self.rank, self.world_size)


class ClassBalancedBatchSampler(EpochSeeded):
    """Training batches drawn class-balanced, with replacement: every class is equally likely per draw.

    Each epoch draws as many clips as the split holds (so an epoch keeps its length and step count),
    each from a uniformly chosen class and then uniformly within it (weight ``1 / count[label]`` per
    clip), with a generator seeded by ``seed + epoch``: reproducible, and a resumed run draws what the
    uninterrupted one drew.  Clips without a label (``-1``) are never drawn.  With ``world_size`` processes,
    every rank makes the same draws and keeps its share of them (:func:`shard`).
    """

    def __init__(self, labels, batch_size: int, seed: int = 0, num_samples: int | None = None, rank: int = 0,
                 world_size: int = 1) -> None:
        self.weights = class_balanced_weights(labels)
        self.batch_size, self.seed, self.epoch = int(batch_size), int(seed), 0
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        self.rank, self.world_size = check_rank(rank, world_size)

    def __len__(self) -> int:
        return shard_size(shard_size(self.num_samples, self.world_size), self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        draw = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=self._next_generator())
        yield from batches_of(shard(draw, self.rank, self.world_size), self.batch_size)


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
