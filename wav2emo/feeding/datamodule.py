"""The Lightning data module: one speaker fold of a corpus, as batches in the batch-dict contract.

It turns (corpus, feature specs, folds, fold index, inputs) into train/dev/test batches in the
batch-dict contract of ``docs/architecture.md``.  It is built by ``hydra.utils.instantiate`` from
``conf/datamodule/default.yaml``; the model config names its ``inputs``.  The data path hands over what
the caches hold (every SSL hidden state): layer selection is the model's featurizer's job.

Two ways to feed the model, with the same dataset and collate (:mod:`wav2emo.feeding.input_strategies`):

* memory-mapped reads (the default): each item is read from the cache's memmap, so the process
  holds only what a batch needs, whatever the cache size;
* ``resident: true``: each split is collated once into padded tensors on the training device (a
  whole RAVDESS fold of 13 x 263 x 768 float16 is about 6 GB), so an epoch does no host I/O.

Several processes (``trainer=ddp``): every loader serves this process's share (the trainer's rank and world
size), a shard of every training epoch and a contiguous block of dev and test, by the samplers of
:mod:`wav2emo.feeding.batches`; Lightning's own DistributedSampler stays off
(``trainer.use_distributed_sampler=false``), since it would shard the shards and cannot shard the batch
samplers or the resident split.

``normalize="speaker"`` standardises every cached input with its own speaker's statistics, taken over all
of that speaker's clips in the corpus, test speakers included (label-free; see
:mod:`wav2emo.feeding.speaker_norm`).  Items are normalised as they are loaded, so both ways see it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from wav2emo.augment.config import build_augment
from wav2emo.augment.copies import check_cached, make_copies
from wav2emo.augment.training import check_inputs
from wav2emo.data.audio import TARGET_SAMPLE_RATE
from wav2emo.data.corpora import load_corpus
from wav2emo.data.folds import Split, assemble_fold
from wav2emo.data.manifest import EMOTIONS, Manifest
from wav2emo.errors import ConfigError
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.combined_cache import corpus_features_many
from wav2emo.features.normalize import check_mode, warn_narrow_speakers
from wav2emo.features.overlap import get_features_many
from wav2emo.feeding.batches import (
    ClassBalancedBatchSampler,
    CopyBatchSampler,
    EpochShuffleSampler,
    LengthBucketBatchSampler,
    ResidentSplit,
    eval_shard,
)
from wav2emo.feeding.input_strategies import (
    INPUT_KINDS,
    CachedFeatures,
    CachedLayer,
    ClipDataset,
    Collate,
    Concat,
    CopiesDataset,
    InputStrategy,
    Waveforms,
)
from wav2emo.feeding.placement import Placement, decide, parse_auto_bool
from wav2emo.feeding.speaker_norm import SpeakerNormalized, cache_speaker_stats

log = logging.getLogger(__name__)

CACHED_INPUTS = ("ssl", "egemaps", "logmel")
AUTO_FRAMES_MULTIPLE = 16  # loader.frames_multiple=auto on a GPU-resident fold
SAMPLERS = ("shuffle", "balanced")  # training order: a shuffle per epoch, or class-balanced draws with replacement


class EmotionDataModule(L.LightningDataModule):
    """One fold of speaker-independent cross-validation, fed from feature caches (or audio).

    ``inputs`` are batch keys: ``ssl``, ``egemaps``, ``logmel`` (whole cached features), ``ssl_layer``
    (one cached hidden state, ``ssl_layer_index``) or ``wave`` (the audio at ``sample_rate``).
    """

    def __init__(
        self,
        corpus: Mapping,
        features: Mapping,
        folds: Mapping,
        fold: int,
        inputs: Sequence[str],
        cache_dir: str | Path,
        frames: int | None = None,
        batch_size: int = 25,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        resident: bool | str = False,
        bucket_by_length: bool | str = False,
        frames_multiple: int | None = None,
        pin_memory: bool = False,
        seed: int = 0,
        extraction_device: str = "auto",
        ssl_layer_index: int | None = None,
        sample_rate: int = TARGET_SAMPLE_RATE,
        augment: Mapping | None = None,
        sampler: str = "shuffle",
        normalize: str | None = None,
        resident_headroom_gib: float = 8.0,
    ) -> None:
        super().__init__()
        inputs = tuple(str(i) for i in inputs)
        unknown = set(inputs) - set(INPUT_KINDS)
        if unknown or not inputs:
            raise ConfigError(f"model.inputs={list(inputs)}: expected a non-empty subset of {INPUT_KINDS}")
        for name in inputs:
            cache_name = "ssl" if name == "ssl_layer" else name
            if cache_name in CACHED_INPUTS and cache_name not in features:
                raise ConfigError(
                    f"the model needs input {name!r} but the features config defines only {sorted(features)}"
                )
        if "ssl_layer" in inputs and ssl_layer_index is None:
            raise ConfigError("input 'ssl_layer' needs datamodule.ssl_layer_index (the cached hidden state k)")
        self.corpus_cfg, self.features_cfg, self.folds_cfg = corpus, features, folds
        self.fold, self.inputs = int(fold), inputs
        self.cache_dir = Path(cache_dir)
        self.frames = frames
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or max(batch_size, 64)
        self.num_workers, self.pin_memory = num_workers, pin_memory
        # "auto": decided when the first loader is built, from the training device and its free memory.
        self.resident_setting = parse_auto_bool(resident, "loader.resident")
        self.resident_headroom_gib = float(resident_headroom_gib)
        self.resident: bool | None = self.resident_setting if isinstance(self.resident_setting, bool) else None
        self.placement: Placement | None = None
        # "auto": length-bucketed training batches when the fold is resident on a GPU (the fast path), else not.
        self.bucket_setting = parse_auto_bool(bucket_by_length, "loader.bucket_by_length")
        self.bucket_by_length = self.bucket_setting is True
        # "auto": resolved with the placement (16 on a GPU-resident fold, else none).
        auto_multiple = isinstance(frames_multiple, str) and frames_multiple.strip().lower() == "auto"
        self.frames_multiple_setting = "auto" if auto_multiple else frames_multiple
        if not auto_multiple and frames_multiple is not None \
                and (isinstance(frames_multiple, bool) or not str(frames_multiple).isdigit() or int(frames_multiple) < 1):
            raise ConfigError(f"loader.frames_multiple must be a positive number of frames, auto or null, "
                              f"got {frames_multiple!r}")
        self.frames_multiple = None if auto_multiple or frames_multiple is None else int(frames_multiple)
        self.seed, self.extraction_device = seed, extraction_device
        self.ssl_layer_index, self.sample_rate = ssl_layer_index, int(sample_rate)
        # Checked here, before any extraction or training: a bad value never reaches a cache.
        self.augmenter = build_augment(augment)
        check_inputs(self.augmenter, inputs)
        self.cached_copies = self.augmenter.mode == "cached" and not self.augmenter.is_identity
        if self.cached_copies:
            check_cached(self.augmenter)
        self.copies: Manifest | None = None
        if sampler not in SAMPLERS:
            raise ConfigError(f"loader.sampler={sampler!r}: expected one of {SAMPLERS}")
        if sampler == "balanced" and self.bucket_setting is True:
            raise ConfigError("loader.sampler=balanced and loader.bucket_by_length=true cannot be combined: choose one")
        self.sampler = sampler
        try:
            self.normalize = check_mode(normalize)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if self.normalize is not None and "wave" in inputs:
            raise ConfigError(
                f"features.normalize={self.normalize} with inputs {list(inputs)}: per-speaker normalisation "
                f"standardises cached features; features computed from audio inside the model (fine-tuning, "
                f"online waveform augmentation) are not normalised. Use finetune=none and augment.mode=cached, "
                f"or features.normalize=null"
            )
        self.speaker_stats: dict = {}
        self.narrow_speakers: dict = {}
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
        self.split, parts = self._assemble(self.manifest)
        needed = sorted({"ssl" if name == "ssl_layer" else name for name in self.inputs} & set(CACHED_INPUTS))
        # eGeMAPS (worker processes) builds while the SSL backbone extracts, when both are missing.
        self.caches: dict[str, FeatureCache] = corpus_features_many(
            self.manifest, {name: self.features_cfg[name] for name in needed}, self.cache_dir,
            device=self.extraction_device)
        self.parts: dict[str, Manifest] = dict(parts)
        # Where each split's clips live in every cache (refuses features of other audio).
        self.rows = {part: {n: c.rows_for(m) for n, c in self.caches.items()} for part, m in self.parts.items()}
        if self.normalize == "speaker":
            self._speaker_statistics()
        self._ready = True

    def _speaker_statistics(self) -> None:
        """Per-speaker statistics of every cache over all of each speaker's clips in the corpus: test speakers'
        unlabelled audio included, their labels never read (the narrow-speaker warning reads the labels of the
        training and dev parts only, which training reads anyway)."""
        speakers = [c.actor for c in self.manifest]
        self.speaker_stats = {name: cache_speaker_stats(c, c.rows_for(self.manifest), speakers)
                              for name, c in self.caches.items()}
        seen = [c for part in ("train", "dev") for c in self.parts[part]]
        self.narrow_speakers = warn_narrow_speakers([c.actor for c in seen], [c.label for c in seen],
                                                    list(self._manifest_classes()))

    def _manifest_classes(self) -> tuple[str, ...]:
        return tuple(str(c) for c in getattr(self.manifest, "class_names", EMOTIONS))

    def _normalized(self, strategy, name: str, speakers: list, layer: int | None = None):
        """``strategy`` with speaker normalisation when it is on (``name``: the cache it reads)."""
        if self.normalize != "speaker":
            return strategy
        return SpeakerNormalized(strategy, self.speaker_stats[name], speakers, layer)

    def _assemble(self, manifest: Manifest) -> tuple[Split, dict[str, Manifest]]:
        """The split and its train/dev/test manifests: this fold of the configured folds."""
        assembly = assemble_fold(manifest, self.folds_cfg, self.fold)  # the one place a fold is cut
        return assembly.split, dict(assembly.parts)

    def setup(self, stage: str | None = None) -> None:
        self._load()
        if stage in (None, "fit"):
            self._load_copies()

    def _load_copies(self) -> None:
        """Cached augmentation: K copies of the *training* clips (never dev or test), and their features for
        every cache the model reads; built once (under locks) and reused by later runs of the same config."""
        self._load()
        if not self.cached_copies or self.copies is not None:
            return
        # Made on the CPU, whole groups spread over its cores: 3x faster than one group after another on an H100
        # (benchmarks/reports/copies_*.md), and the same copies with or without a GPU, whatever the core count.
        copies = make_copies(self.parts["train"], self.augmenter, self.seed, self.cache_dir,
                             sample_rate=self.sample_rate, device="cpu")
        self.copy_caches = get_features_many(copies, {name: self.features_cfg[name] for name in self.caches},
                                             self.cache_dir, device=self.extraction_device)
        self.copy_rows = {n: c.rows_for(copies) for n, c in self.copy_caches.items()}
        self.copies = copies

    # What the model needs to know ----------------------------------------------------------------
    @property
    def class_names(self) -> tuple[str, ...]:
        """The corpus's class names, in label order (the module's and net's classes come from here)."""
        self._load()
        return self._manifest_classes()

    def input_shape(self, name: str) -> tuple[int, ...]:
        """The per-frame shape a cache holds: ``ssl`` (H, D), ``logmel`` (M,), ``egemaps`` (F,)."""
        self._load()
        if name not in self.caches:
            raise ConfigError(f"no {name!r} feature cache in this data module (inputs {list(self.inputs)})")
        return tuple(int(s) for s in self.caches[name].feature_shape)

    def egemaps_stats(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the eGeMAPS functionals over the *training* actors only (never dev or test), as
        the model is fed them (after per-speaker normalisation when it is on)."""
        self._load()
        cache, rows = self.caches["egemaps"], self.rows["train"]["egemaps"]
        x = np.stack([np.asarray(cache.read(int(r))[0], dtype=np.float64) for r in rows])
        if self.normalize == "speaker":
            stats = self.speaker_stats["egemaps"]
            x = np.stack([stats.transform(c.actor, v, np.float64) for c, v in zip(self.parts["train"], x, strict=True)])
        return x.mean(0), x.std(0)

    def class_counts(self, part: str = "train") -> np.ndarray:
        """Clips per class (in ``class_names`` order) among ``part``'s labelled clips: the class weights
        come from the training split's counts, never dev or test."""
        self._load()
        labels = [c.label for c in self.parts[part] if c.label >= 0]
        return np.bincount(np.asarray(labels, dtype=np.int64), minlength=len(self.class_names))

    def describe(self) -> dict[str, Any]:
        self._load()
        return {
            "fold": self.fold,
            "protocol": self.split.protocol,
            "train_actors": list(self.split.train),
            "dev_actors": list(self.split.dev),
            "test_actors": list(self.split.test),
            "clips": {k: len(v) for k, v in self.parts.items()},
            "inputs": list(self.inputs),
            "frames": self.frames,
            "caches": {k: str(c.path) for k, c in self.caches.items()},
            "augment": self.augmenter.identity(),
            "augment_copies": {k: str(c.path) for k, c in getattr(self, "copy_caches", {}).items()},
            "normalize": self.normalize,
        }

    # Loaders -------------------------------------------------------------------------------------
    def strategies(self, part: str) -> list[InputStrategy]:
        """One input strategy per requested input, over ``part``'s clips."""
        self._load()
        rows, out = self.rows[part], []
        speakers = [c.actor for c in self.parts[part]]
        for name in self.inputs:
            if name in CACHED_INPUTS:
                out.append(self._normalized(CachedFeatures(name, self.caches[name], rows[name], self.frames), name,
                                            speakers))
            elif name == "ssl_layer":
                from wav2emo.features.ssl_layout import ssl_layer_position

                k = ssl_layer_position(self.caches["ssl"], int(self.ssl_layer_index))
                out.append(self._normalized(CachedLayer(self.caches["ssl"], rows["ssl"], k, self.frames), "ssl",
                                            speakers, layer=k))
            else:
                out.append(Waveforms(self.parts[part], self.sample_rate))
        return out

    def dataset(self, part: str) -> ClipDataset:
        self._load()
        if part == "train" and self.cached_copies:
            return self._copies_dataset()
        return ClipDataset(self.parts[part], self.strategies(part), self.frames)

    def _copies_dataset(self) -> CopiesDataset:
        """The training clips followed by their K copies (row ``i + n * j`` = copy j of clip i)."""
        self._load_copies()
        original = self.strategies("train")
        copied = []
        speakers = [c.actor for c in self.copies]  # a copy is normalised with its speaker's original statistics
        for name in self.inputs:
            if name in CACHED_INPUTS:
                copied.append(self._normalized(
                    CachedFeatures(name, self.copy_caches[name], self.copy_rows[name], self.frames), name, speakers))
            elif name == "ssl_layer":
                from wav2emo.features.ssl_layout import ssl_layer_position

                k = ssl_layer_position(self.copy_caches["ssl"], int(self.ssl_layer_index))
                copied.append(self._normalized(
                    CachedLayer(self.copy_caches["ssl"], self.copy_rows["ssl"], k, self.frames), "ssl", speakers,
                    layer=k))
            else:
                copied.append(Waveforms(self.copies, self.sample_rate))
        strategies = [Concat([o, c]) for o, c in zip(original, copied, strict=True)]
        manifest = Manifest([*self.parts["train"], *self.copies], name=self.manifest.name,
                            class_names=self.manifest.class_names)
        return CopiesDataset(manifest, strategies, len(self.parts["train"]), self.frames)

    def _device(self) -> torch.device:
        """The device this data module feeds (the CPU without a trainer)."""
        return self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")

    def _place(self) -> None:
        """Decide once where the fold lives (``loader.resident``), and what follows from it, with one log line."""
        if self.placement is not None:
            return
        device = self._device()
        parts = ("train", "dev", "test") if self.resident_setting == "auto" else ()
        self.placement = decide(self.resident_setting, device, [self.dataset(p) for p in parts],
                                self.resident_headroom_gib)
        self.resident = self.placement.resident
        if self.frames_multiple_setting == "auto":
            # Batches padded to a multiple of 16 frames: a few batch shapes, each replayed from one CUDA graph.
            self.frames_multiple = AUTO_FRAMES_MULTIPLE if self.resident and device.type == "cuda" else None
        if self.bucket_setting == "auto":
            # Bucketing is only a speed setting; with class-balanced draws there is nothing to bucket.
            self.bucket_by_length = self.resident and device.type == "cuda" and self.sampler != "balanced"
        if self.resident_setting == "auto":
            details = self.placement.reason
            if self.bucket_by_length:
                details += "; training batches of similar-length clips"
            if self.frames_multiple:
                details += f", padded to a multiple of {self.frames_multiple} frames"
            (log.info if device.type == "cuda" else log.debug)(
                "loader: %s, %s", "resident" if self.resident else "memory-mapped", details)

    def rank_and_world_size(self) -> tuple[int, int]:
        """(this process's rank, number of processes) of the trainer this data module feeds; (0, 1) alone."""
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _check_shardable(self, part: str, n: int, world_size: int) -> None:
        """Refuse what several processes cannot share out: Lightning's sampler on top of ours, or fewer
        dev/test clips than processes (a process without a batch would leave the others waiting)."""
        connector = getattr(self.trainer, "_accelerator_connector", None)
        if getattr(connector, "use_distributed_sampler", False):
            raise ConfigError(
                f"trainer.use_distributed_sampler=true with {world_size} processes: the data module shards every "
                "epoch itself (wav2emo/feeding/batches.py), and Lightning's DistributedSampler would shard the "
                "shards again. Set trainer.use_distributed_sampler=false (conf/trainer/ddp.yaml does)"
            )
        if part != "train" and n < world_size:
            raise ConfigError(
                f"the {part} split of fold {self.fold} has {n} clips, fewer than the {world_size} processes: each "
                f"process scores its own block of it and needs at least one clip. Use trainer.devices={max(n, 1)} "
                "or fewer"
            )

    def _loader(self, part: str, shuffle: bool):
        if part in self._resident:  # built once: uploading a split to the device is the expensive part
            return self._resident[part]
        self._place()
        batch_size = self.batch_size if part == "train" else self.eval_batch_size
        ds = self.dataset(part)
        if len(ds) == 0:
            return []
        rank, world_size = self.rank_and_world_size()
        if world_size > 1:
            self._check_shardable(part, len(ds), world_size)
        shards = {"rank": rank, "world_size": world_size}
        sampler = None
        lengths = ds.lengths() if shuffle and self.bucket_by_length and self.frames is None else None
        if isinstance(ds, CopiesDataset):  # one version of every clip per epoch, drawn from (seed, epoch)
            labels = [c.label for c in self.parts[part]] if self.sampler == "balanced" else None
            sampler = CopyBatchSampler(ds.n_clips, self.augmenter.copies, batch_size, seed=self.seed, lengths=lengths,
                                       labels=labels, **shards)
        elif lengths is not None:
            sampler = LengthBucketBatchSampler(lengths, batch_size, seed=self.seed, **shards)
        elif shuffle and self.sampler == "balanced":
            sampler = ClassBalancedBatchSampler([c.label for c in self.parts[part]], batch_size, seed=self.seed,
                                                **shards)
        if self.resident:
            self._resident[part] = ResidentSplit(
                ds, batch_size, shuffle, self._device(), seed=self.seed, batch_sampler=sampler,
                frames_multiple=self.frames_multiple, **shards,
            )
            return self._resident[part]
        if sampler is not None:
            batching: dict[str, Any] = {"batch_sampler": sampler}
        elif shuffle:  # the order of epoch k depends on (seed, k) only, also in a resumed run
            batching = {"batch_size": batch_size, "sampler": EpochShuffleSampler(len(ds), seed=self.seed, **shards)}
        elif world_size > 1:  # this process's block of the split, in order
            batching = {"batch_size": batch_size, "sampler": eval_shard(len(ds), rank, world_size)}
        else:
            batching = {"batch_size": batch_size, "shuffle": False}
        return DataLoader(
            ds,
            **batching,
            num_workers=self.num_workers,
            collate_fn=Collate(self.frames, self.frames_multiple),
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
