"""The Lightning data module: one speaker fold of a corpus, read from the shared feature cache.

It turns (corpus, feature specs, folds, fold index) into train/dev/test batches in the batch-dict
contract of ``docs/architecture.md``.  Two ways to feed the model:

* memory-mapped reads (the default): each item is read from the cache's memmap, so the process
  holds only what a batch needs, whatever the cache size;
* ``resident: true``: each split is loaded once into one padded tensor on the training device (a
  whole RAVDESS fold of 12 x 263 x 768 float16 is about 5.5 GB), so an epoch does no host I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from wav2emo.data.corpora import load_corpus
from wav2emo.data.folds import Split, build_folds
from wav2emo.data.manifest import Manifest
from wav2emo.errors import ConfigError
from wav2emo.features import get_features
from wav2emo.features.cache import FeatureCache

log = logging.getLogger(__name__)

INPUT_KINDS = ("ssl", "egemaps")


def resolve_layers(layers: Any, num_hidden_states: int) -> list[int]:
    """Which hidden states to stack: ``None`` = every transformer layer (1..N, as the reference),
    ``"all"`` = every hidden state including the CNN projection (0..N), or explicit indices."""
    if layers is None or layers == "transformer":
        return list(range(1, num_hidden_states))
    if layers == "all":
        return list(range(num_hidden_states))
    if isinstance(layers, int):
        layers = [layers]
    out = [int(i) for i in layers]
    bad = [i for i in out if not -num_hidden_states <= i < num_hidden_states]
    if bad or not out:
        raise ConfigError(
            f"layers={list(layers)} is invalid for a backbone with {num_hidden_states} hidden states "
            f"(expected indices in 0..{num_hidden_states - 1}, null, or 'all')"
        )
    return [i % num_hidden_states for i in out]


@dataclass
class FoldData:
    """Everything a split needs: the clips (manifest rows) and where each lives in every cache."""

    manifest: Manifest
    ssl_rows: np.ndarray | None
    egemaps_rows: np.ndarray | None


class CachedFeatureDataset(Dataset):
    """Items of one split, read lazily from memory-mapped caches."""

    def __init__(
        self,
        data: FoldData,
        ssl: FeatureCache | None,
        egemaps: FeatureCache | None,
        layers: Sequence[int],
        frames: int | None,
    ) -> None:
        self.data, self.ssl, self.egemaps = data, ssl, egemaps
        self.layers = np.asarray(layers)
        self.frames = frames

    def __len__(self) -> int:
        return len(self.data.manifest)

    def __getitem__(self, i: int) -> dict[str, Any]:
        clip = self.data.manifest[i]
        item: dict[str, Any] = {"label": clip.label, "clip_id": clip.clip_id, "actor": clip.actor}
        if self.ssl is not None:
            # (T, H, D), copied with one pread: nothing stays mapped, so memory does not grow with the cache.
            x = self.ssl.read_copy(int(self.data.ssl_rows[i]))
            if self.frames is not None:
                x = x[: self.frames]
            # Copy only the selected layers: (T, L, D) -> (L, T, D).
            item["ssl"] = torch.from_numpy(np.ascontiguousarray(x[:, self.layers].transpose(1, 0, 2)))
        if self.egemaps is not None:
            item["egemaps"] = torch.from_numpy(
                np.array(self.egemaps.read(int(self.data.egemaps_rows[i]))[0], dtype=np.float32)  # a copy
            )
        return item


def padded_frames(longest: int, multiple: int | None) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (None or 1: unchanged).

    Few distinct batch shapes let a compiled, CUDA-graphed net reuse its graphs across batches.
    """
    if not multiple or multiple <= 1:
        return int(longest)
    return -(-int(longest) // int(multiple)) * int(multiple)


def collate(
    items: list[dict[str, Any]], frames: int | None = None, frames_multiple: int | None = None
) -> dict[str, Any]:
    """Stack items into a batch; pad ``ssl`` with zeros to ``frames`` or to the longest clip (rounded up
    to ``frames_multiple``), with a mask of the real frames."""
    batch: dict[str, Any] = {
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "actor": torch.tensor([it["actor"] for it in items], dtype=torch.long),
        "clip_id": [it["clip_id"] for it in items],
    }
    if "ssl" in items[0]:
        lengths = torch.tensor([it["ssl"].shape[1] for it in items], dtype=torch.long)
        t_max = frames if frames is not None else padded_frames(int(lengths.max()), frames_multiple)
        n_layers, _, dim = items[0]["ssl"].shape
        ssl = torch.zeros(len(items), n_layers, t_max, dim, dtype=items[0]["ssl"].dtype)
        for b, it in enumerate(items):
            t = min(it["ssl"].shape[1], t_max)
            ssl[b, :, :t] = it["ssl"][:, :t]
        batch["ssl"] = ssl
        batch["ssl_mask"] = torch.arange(t_max)[None, :] < lengths.clamp(max=t_max)[:, None]
    if "egemaps" in items[0]:
        batch["egemaps"] = torch.stack([it["egemaps"] for it in items])
    return batch


class _Collate:
    """Picklable collate (worker processes need to pickle it)."""

    def __init__(self, frames: int | None, frames_multiple: int | None = None) -> None:
        self.frames, self.frames_multiple = frames, frames_multiple

    def __call__(self, items):
        return collate(items, self.frames, self.frames_multiple)


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
        dataset: CachedFeatureDataset,
        batch_size: int,
        shuffle: bool,
        device: torch.device,
        seed: int = 0,
        batch_sampler: LengthBucketBatchSampler | None = None,
        frames_multiple: int | None = None,
    ) -> None:
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0
        self.frames_multiple = frames_multiple
        self.batch_sampler = batch_sampler
        items = [dataset[i] for i in range(len(dataset))]
        # Padded to the split's longest clip (or to ``frames``), rounded up so every batch crop fits.
        full = collate(items, dataset.frames, frames_multiple)
        self.lengths = full["ssl_mask"].sum(1) if "ssl" in full else None
        self.tensors = {k: v.to(device) for k, v in full.items() if isinstance(v, torch.Tensor)}
        self.clip_ids = full["clip_id"]
        self.fixed = dataset.frames is not None
        self.n = len(items)

    def __len__(self) -> int:
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
            if "ssl" in batch and not self.fixed:  # crop to the longest clip of this batch
                t = padded_frames(int(self.lengths[idx].max()), self.frames_multiple)
                batch["ssl"], batch["ssl_mask"] = batch["ssl"][:, :, :t], batch["ssl_mask"][:, :t]
            batch["clip_id"] = [self.clip_ids[i] for i in idx.tolist()]
            yield batch


class EmotionDataModule(L.LightningDataModule):
    """One fold of speaker-independent cross-validation over cached features."""

    def __init__(
        self,
        corpus: Mapping,
        features: Mapping,
        folds: Mapping,
        fold: int,
        inputs: Sequence[str],
        cache_dir: str | Path,
        layers: Any = None,
        frames: int | None = None,
        batch_size: int = 25,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        resident: bool = False,
        bucket_by_length: bool = False,
        frames_multiple: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        extraction_device: str = "auto",
    ) -> None:
        super().__init__()
        unknown = set(inputs) - set(INPUT_KINDS)
        if unknown or not inputs:
            raise ConfigError(f"inputs={list(inputs)}: expected a non-empty subset of {INPUT_KINDS}")
        for name in inputs:
            if name not in features:
                raise ConfigError(
                    f"the model needs input {name!r} but the features config defines only {sorted(features)}"
                )
        self.corpus_cfg, self.features_cfg, self.folds_cfg = corpus, features, folds
        self.fold, self.inputs = int(fold), tuple(inputs)
        self.cache_dir = Path(cache_dir)
        self.layers_cfg, self.frames = layers, frames
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or max(batch_size, 64)
        self.num_workers, self.resident, self.pin_memory = num_workers, resident, pin_memory
        self.bucket_by_length = bucket_by_length
        if frames_multiple is not None and int(frames_multiple) < 1:
            raise ConfigError(f"frames_multiple must be a positive number of frames or null, got {frames_multiple}")
        self.frames_multiple = None if frames_multiple is None else int(frames_multiple)
        self.seed, self.extraction_device = seed, extraction_device
        self._ready = False
        self._resident: dict[str, ResidentSplit] = {}

    # Set-up --------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Corpus and features exist after this (built once, under a lock, in the shared cache)."""
        self._load()

    def _load(self) -> None:
        if self._ready:
            return
        self.manifest = load_corpus(self.corpus_cfg, cache_dir=self.cache_dir)
        self.split: Split = build_folds(self.folds_cfg, self.manifest).split(self.fold)
        self.caches: dict[str, FeatureCache] = {
            name: get_features(self.manifest, self.features_cfg[name], self.cache_dir, device=self.extraction_device)
            for name in self.inputs
        }
        ssl = self.caches.get("ssl")
        self.layers = resolve_layers(self.layers_cfg, ssl.feature_shape[0]) if ssl is not None else []
        self.parts = {
            "train": self._fold_data(self.split.train),
            "dev": self._fold_data(self.split.dev),
            "test": self._fold_data(self.split.test),
        }
        self._ready = True

    def _fold_data(self, actors: Sequence[int]) -> FoldData:
        m = self.manifest.filter(actors)

        def rows(name: str) -> np.ndarray | None:
            cache = self.caches.get(name)
            return None if cache is None else cache.rows_for(m)  # refuses features of other audio

        return FoldData(m, rows("ssl"), rows("egemaps"))

    def setup(self, stage: str | None = None) -> None:
        self._load()

    # What the model needs to know ----------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        self._load()
        return len(self.layers)

    @property
    def feature_dim(self) -> int:
        self._load()
        return int(self.caches["ssl"].feature_shape[1]) if "ssl" in self.caches else 0

    def egemaps_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the eGeMAPS functionals over the *training* actors only (never dev or test)."""
        self._load()
        cache, rows = self.caches["egemaps"], self.parts["train"].egemaps_rows
        x = np.stack([np.asarray(cache.read(int(r))[0], dtype=np.float64) for r in rows])
        return x.mean(0), x.std(0)

    def describe(self) -> dict[str, Any]:
        self._load()
        return {
            "fold": self.fold,
            "train_actors": list(self.split.train),
            "dev_actors": list(self.split.dev),
            "test_actors": list(self.split.test),
            "clips": {k: len(v.manifest) for k, v in self.parts.items()},
            "layers": self.layers,
            "frames": self.frames,
            "caches": {k: str(c.path) for k, c in self.caches.items()},
        }

    # Loaders -------------------------------------------------------------------------------------
    def dataset(self, part: str) -> CachedFeatureDataset:
        self._load()
        return CachedFeatureDataset(
            self.parts[part], self.caches.get("ssl"), self.caches.get("egemaps"), self.layers, self.frames
        )

    def _loader(self, part: str, shuffle: bool):
        if part in self._resident:  # built once: uploading a split to the device is the expensive part
            return self._resident[part]
        batch_size = self.batch_size if part == "train" else self.eval_batch_size
        ds = self.dataset(part)
        if len(ds) == 0:
            return []
        sampler = None
        if shuffle and self.bucket_by_length and self.frames is None and "ssl" in self.caches:
            lengths = self.caches["ssl"].lengths[self.parts[part].ssl_rows]
            sampler = LengthBucketBatchSampler(lengths, batch_size, seed=self.seed)
        if self.resident:
            device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
            self._resident[part] = ResidentSplit(
                ds, batch_size, shuffle, device, seed=self.seed, batch_sampler=sampler,
                frames_multiple=self.frames_multiple,
            )
            return self._resident[part]
        if sampler is not None:
            batching: dict[str, Any] = {"batch_sampler": sampler}
        elif shuffle:  # the order of epoch k depends on (seed, k) only, also in a resumed run
            batching = {"batch_size": batch_size, "sampler": EpochShuffleSampler(len(ds), seed=self.seed)}
        else:
            batching = {"batch_size": batch_size, "shuffle": False}
        return DataLoader(
            ds,
            **batching,
            num_workers=self.num_workers,
            collate_fn=_Collate(self.frames, self.frames_multiple),
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader("train", shuffle=True)

    def val_dataloader(self):
        return self._loader("dev", shuffle=False)

    def test_dataloader(self):
        return self._loader("test", shuffle=False)

    def predict_dataloader(self):
        return self._loader("test", shuffle=False)
