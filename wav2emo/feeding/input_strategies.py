"""What one clip of a split is, and how clips become a batch: input strategies, one dataset, one collate.

Each input strategy (after lhotse's ``dataset/input_strategies.py``) turns row ``i`` of a split into
one or more batch-dict entries (``docs/architecture.md``):

* :class:`CachedFeatures` - what a feature cache holds for the clip: ``ssl`` (every hidden state,
  (H, T, D); the model's featurizer picks layers), ``egemaps`` (88,) or ``logmel`` (T, M);
* :class:`CachedLayer` - one cached hidden state ``k`` as ``ssl_layer`` (T, D);
* :class:`Waveforms` - the audio itself as ``wave`` (S,), read with soundfile at the backbone's rate.

:class:`ClipDataset` combines strategies over one split's manifest; :func:`collate` pads every key
and builds its mask or lengths.  The DataLoader and the resident path both use them, so a new input
is written once.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from wav2emo.data.audio import TARGET_SAMPLE_RATE, load_audio
from wav2emo.data.manifest import Manifest
from wav2emo.errors import ConfigError
from wav2emo.features.cache.reader import FeatureCache, Spans

# Frame-level keys: (time axis in the item, name of the entry that says which frames are real).
# Masks are (B, T) bool; ``wave`` carries its lengths instead (a sample mask would be as big as the audio).
PADDED_KEYS: dict[str, tuple[int, str]] = {
    "ssl": (1, "ssl_mask"),          # (H, T, D)
    "ssl_layer": (0, "ssl_mask"),    # (T, D)
    "logmel": (0, "logmel_mask"),    # (T, M)
    "wave": (0, "wave_lengths"),     # (S,)
}
# Keys whose length ``frames`` (the model's fixed length in SSL frames) applies to.
SSL_FRAME_KEYS = ("ssl", "ssl_layer")
INPUT_KINDS = ("ssl", "egemaps", "logmel", "ssl_layer", "wave")


class InputStrategy(Protocol):
    """One input of a split: ``load(i)`` gives the batch-dict entries of the split's row ``i``."""

    key: str
    exact_lengths: bool  # True: lengths() is every row's length, known before reading (a resident split streams)

    def load(self, i: int) -> dict[str, torch.Tensor]: ...

    def lengths(self) -> np.ndarray | None:
        """Per-row lengths along the padded axis (for length bucketing), or None for fixed-size inputs."""
        ...


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    """The torch dtype of numpy's ``dtype`` (as ``torch.from_numpy`` would give it)."""
    return torch.from_numpy(np.empty(0, dtype)).dtype


@dataclass(frozen=True)
class StoredRows:
    """A padded input's rows as its cache stores them, for a reader that copies bytes (the streamed upload): row
    ``i`` is the first ``lengths[i]`` frames of ``spans``' clip ``i``; served with its time axis where
    ``PADDED_KEYS`` puts it, as ``served_dtype``."""

    spans: Spans
    lengths: np.ndarray
    served_dtype: torch.dtype


class CachedFeatures:
    """Row ``i`` of one feature cache, whole: ``ssl`` (H, T, D), ``logmel`` (T, M) or ``egemaps`` (F,)."""

    exact_lengths = True  # the cache's index holds every row's frame count

    def __init__(self, key: str, cache: FeatureCache, rows: np.ndarray, frames: int | None = None) -> None:
        if key not in ("ssl", "egemaps", "logmel"):
            raise ConfigError(f"CachedFeatures serves ssl, egemaps or logmel, not {key!r}")
        self.key, self.cache, self.rows = key, cache, np.asarray(rows)
        self.frames = frames if key == "ssl" else None

    def load(self, i: int) -> dict[str, torch.Tensor]:
        row = int(self.rows[i])
        if self.key == "egemaps":
            return {"egemaps": torch.from_numpy(np.array(self.cache.read(row)[0], dtype=np.float32))}  # a copy
        # (T, ...) copied with one pread: nothing stays mapped, so memory does not grow with the cache.
        x = self.cache.read_copy(row)
        if self.frames is not None:
            x = x[: self.frames]
        if self.key == "ssl":  # (T, H, D) -> (H, T, D): the featurizer in the model picks layers.  A transposed
            # view of the read: collate (or the streamed upload) copies it into its padded row, one pass, not two.
            return {"ssl": torch.from_numpy(x.transpose(1, 0, 2))}
        return {"logmel": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))}

    def lengths(self) -> np.ndarray | None:
        if self.key == "egemaps":
            return None
        lengths = self.cache.lengths[self.rows]
        return np.minimum(lengths, self.frames) if self.frames is not None else lengths

    def stored(self) -> StoredRows | None:
        """Where this input's rows lie in the cache's files (None for eGeMAPS, which is not padded)."""
        if self.key == "egemaps":
            return None
        served = torch.float32 if self.key == "logmel" else torch_dtype(self.cache.dtype)
        return StoredRows(self.cache.locate(self.rows), self.lengths(), served)


class CachedLayer:
    """One cached hidden state ``k`` of the SSL cache as ``ssl_layer`` (T, D): reads only that layer's
    slice of the clip (e.g. the input of top-k fine-tuning, which needs hidden state N-k alone)."""

    key = "ssl_layer"
    exact_lengths = True

    def __init__(self, cache: FeatureCache, rows: np.ndarray, layer: int, frames: int | None = None) -> None:
        h = int(cache.feature_shape[0])
        if not -h <= int(layer) < h:
            raise ConfigError(f"CachedLayer(k={layer}): {cache.path} holds hidden states 0..{h - 1}")
        self.cache, self.rows, self.layer, self.frames = cache, np.asarray(rows), int(layer) % h, frames

    def load(self, i: int) -> dict[str, torch.Tensor]:
        x = self.cache.read(int(self.rows[i]))  # memmap view: only layer k is copied
        if self.frames is not None:
            x = x[: self.frames]
        return {"ssl_layer": torch.from_numpy(np.ascontiguousarray(x[:, self.layer]))}

    def lengths(self) -> np.ndarray | None:
        lengths = self.cache.lengths[self.rows]
        return np.minimum(lengths, self.frames) if self.frames is not None else lengths


class Waveforms:
    """The clip's audio as ``wave`` (S,) float32 mono at ``sample_rate``; lengths known from the manifest."""

    key = "wave"
    exact_lengths = False  # lengths() after resampling are right to within one sample

    def __init__(self, manifest: Manifest, sample_rate: int = TARGET_SAMPLE_RATE) -> None:
        self.manifest, self.sample_rate = manifest, int(sample_rate)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        return {"wave": torch.from_numpy(load_audio(self.manifest[i].path, self.sample_rate))}

    def lengths(self) -> np.ndarray | None:
        # Samples after resampling to ``sample_rate`` (to within one sample): enough to bucket by length.
        return np.asarray(
            [round(c.num_frames * self.sample_rate / c.sample_rate) for c in self.manifest], dtype=np.int64
        )


class ClipDataset(Dataset):
    """The clips of one split, each item the entries of every input strategy plus label, actor, clip_id, index."""

    def __init__(self, manifest: Manifest, strategies: Sequence[InputStrategy], frames: int | None = None) -> None:
        keys = [s.key for s in strategies]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"two input strategies give the same batch key: {keys}")
        self.manifest, self.strategies, self.frames = manifest, list(strategies), frames

    def __len__(self) -> int:
        return len(self.manifest)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.item(i)

    def item(self, i: int, skip: Collection[str] = ()) -> dict[str, Any]:
        """Item ``i`` without the inputs of the strategies whose keys are in ``skip``."""
        clip = self.manifest[i]
        item: dict[str, Any] = {"label": clip.label, "clip_id": clip.clip_id, "actor": clip.actor, "index": int(i)}
        for strategy in self.strategies:
            if strategy.key not in skip:
                item.update(strategy.load(i))
        return item

    def lengths(self) -> np.ndarray | None:
        """Lengths of the first variable-length input (what length bucketing sorts by), or None."""
        for strategy in self.strategies:
            lengths = strategy.lengths()
            if lengths is not None:
                return lengths
        return None


def padded_frames(longest: int, multiple: int | None) -> int:
    """``longest`` rounded up to a multiple of ``multiple`` (None or 1: unchanged).

    Few distinct batch shapes let a compiled, CUDA-graphed net reuse its graphs across batches.
    """
    if not multiple or multiple <= 1:
        return int(longest)
    return -(-int(longest) // int(multiple)) * int(multiple)


def _pad(tensors: list[torch.Tensor], axis: int, length: int, device: torch.device | str | None = None) -> torch.Tensor:
    shape = list(tensors[0].shape)
    shape[axis] = length
    out = torch.zeros(len(tensors), *shape, dtype=tensors[0].dtype, device=device)
    for b, t in enumerate(tensors):
        n = min(t.shape[axis], length)
        out[b].narrow(axis, 0, n).copy_(t.narrow(axis, 0, n))
    return out


def clip_fields(items: list[dict[str, Any]]) -> dict[str, Any]:
    """The entries of a batch that need no padding: label, actor, clip_id, index and eGeMAPS, stacked."""
    batch: dict[str, Any] = {
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),
        "actor": torch.tensor([it["actor"] for it in items], dtype=torch.long),
        "clip_id": [it["clip_id"] for it in items],
    }
    if "index" in items[0]:
        batch["index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
    if "egemaps" in items[0]:
        batch["egemaps"] = torch.stack([it["egemaps"] for it in items])
    return batch


def masks_and_lengths(batch: dict[str, Any], key: str, lengths: torch.Tensor, t_max: int) -> None:
    """Set padded ``key``'s mask (B, t_max) or its lengths in ``batch``, from each row's real length."""
    lengths = lengths.clamp(max=t_max)
    mask_key = PADDED_KEYS[key][1]
    if mask_key.endswith("_lengths"):
        batch[mask_key] = lengths
    else:
        batch[mask_key] = torch.arange(t_max)[None, :] < lengths[:, None]


def padded_length(key: str, longest: int, frames: int | None, frames_multiple: int | None) -> int:
    """The padded length of ``key`` in a batch whose longest row has ``longest`` frames."""
    fixed = frames if key in SSL_FRAME_KEYS else None
    return fixed if fixed is not None else padded_frames(longest, frames_multiple)


def collate(
    items: list[dict[str, Any]], frames: int | None = None, frames_multiple: int | None = None,
    padded_device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Stack items into a batch: every padded key (``PADDED_KEYS``) zero-padded to ``frames`` (SSL inputs)
    or to the longest clip (rounded up to ``frames_multiple``), with its mask or lengths.

    ``padded_device``: the padded tensors are made there and each item is copied straight into its row (a
    resident fold: no padded copy of the whole split in host memory first); the rest stays on the host."""
    batch = clip_fields(items)
    for key, (axis, _) in PADDED_KEYS.items():
        if key not in items[0]:
            continue
        tensors = [it[key] for it in items]
        lengths = torch.tensor([t.shape[axis] for t in tensors], dtype=torch.long)
        t_max = padded_length(key, int(lengths.max()), frames, frames_multiple)
        batch[key] = _pad(tensors, axis, t_max, padded_device)
        masks_and_lengths(batch, key, lengths, t_max)
    return batch


class Collate:
    """Picklable collate (worker processes need to pickle it)."""

    def __init__(self, frames: int | None, frames_multiple: int | None = None) -> None:
        self.frames, self.frames_multiple = frames, frames_multiple

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        return collate(items, self.frames, self.frames_multiple)


class Concat:
    """One input over several sources laid end to end (the originals, then each set of augmented copies):
    row ``i`` of the whole is row ``i - offset`` of the source that holds it."""

    def __init__(self, parts: Sequence[InputStrategy]) -> None:
        keys = {p.key for p in parts}
        if len(keys) != 1:
            raise ConfigError(f"Concat needs strategies of one key, got {sorted(keys)}")
        self.key = parts[0].key
        self.parts = list(parts)
        self.sizes = [len(p.rows) if hasattr(p, "rows") else len(p.manifest) for p in parts]
        self.offsets = np.cumsum([0, *self.sizes])
        self.exact_lengths = all(getattr(p, "exact_lengths", False) for p in self.parts)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        p = int(np.searchsorted(self.offsets, i, side="right")) - 1
        return self.parts[p].load(i - int(self.offsets[p]))

    def lengths(self) -> np.ndarray | None:
        parts = [p.lengths() for p in self.parts]
        return None if any(x is None for x in parts) else np.concatenate(parts)

    def stored(self) -> StoredRows | None:
        parts = [p.stored() if hasattr(p, "stored") else None for p in self.parts]
        if any(p is None for p in parts) or len({p.served_dtype for p in parts}) != 1:
            return None
        return StoredRows(Spans.concat([p.spans for p in parts]), np.concatenate([p.lengths for p in parts]),
                          parts[0].served_dtype)


class CopiesDataset(ClipDataset):
    """The training clips and their augmented copies (``copies + 1`` rows per clip, the original first):
    item ``index`` is the clip's row in the split (``i % n``) whichever copy is served, and ``copy`` says
    which (0 = the original)."""

    def __init__(self, manifest: Manifest, strategies: Sequence[InputStrategy], n_clips: int,
                 frames: int | None = None) -> None:
        super().__init__(manifest, strategies, frames)
        if len(manifest) % n_clips:
            raise ValueError(f"{len(manifest)} rows are not a whole number of copies of {n_clips} clips")
        self.n_clips = int(n_clips)

    def item(self, i: int, skip: Collection[str] = ()) -> dict[str, Any]:
        item = super().item(i, skip)
        item["index"] = int(i) % self.n_clips
        return item
