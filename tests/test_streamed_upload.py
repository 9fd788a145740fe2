"""The streamed upload of a resident split gives exactly the collate of the whole split (feeding/streamed_upload.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from tests.test_feeding import ToyStrategy, toy_dataset
from wav2emo.feeding import streamed_upload
from wav2emo.feeding.batches import ResidentSplit
from wav2emo.feeding.input_strategies import ClipDataset, Collate, CopiesDataset, collate
from wav2emo.feeding.streamed_upload import stream_to_device

KEYS = ["ssl", "ssl_layer", "logmel", "egemaps"]


class CachedToy(ToyStrategy):
    """A cache-like strategy: every row's length is known before it is read (cut to ``frames`` for SSL keys)."""

    exact_lengths = True

    def __init__(self, key: str, n: int, frames: int | None = None) -> None:
        super().__init__(key, n)
        self.frames = frames if key in ("ssl", "ssl_layer") else None

    def load(self, i: int) -> dict[str, torch.Tensor]:
        x = super().load(i)[self.key]
        if self.frames is not None:
            x = x.narrow(1 if self.key == "ssl" else 0, 0, min(self.frames, self.t[i]))
        return {self.key: x}

    def lengths(self):
        lengths = super().lengths()
        return None if lengths is None else np.minimum(lengths, self.frames or lengths.max())


def cached_dataset(n: int = 23, frames: int | None = None, keys=KEYS) -> ClipDataset:
    ds = toy_dataset([], n)
    return ClipDataset(ds.manifest, [CachedToy(k, n, frames) for k in keys], frames=frames)


def assert_same_batch(a: dict, b: dict) -> None:
    assert set(a) == set(b) and a["clip_id"] == b["clip_id"]
    for k, v in a.items():
        if isinstance(v, torch.Tensor):
            assert v.shape == b[k].shape and v.dtype == b[k].dtype and torch.equal(v, b[k]), k


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize(("frames", "multiple"), [(None, None), (None, 8), (6, None)])
def test_streamed_split_is_the_collate_of_every_item(monkeypatch, threads, frames, multiple):
    ds = cached_dataset(frames=frames)
    row_bytes = sum(ds[0][k].numel() * 4 for k in ("ssl", "ssl_layer", "logmel")) * 2  # about two rows a chunk
    monkeypatch.setattr(streamed_upload, "CHUNK_BYTES", 3 * row_bytes)  # 23 rows: many chunks, every slot reused
    streamed = stream_to_device(ds, torch.device("cpu"), multiple, threads=threads)
    assert streamed is not None
    assert_same_batch(streamed, collate([ds[i] for i in range(len(ds))], frames, multiple))


def test_copies_keep_their_clip_index():
    base = cached_dataset(n=6)
    copies = CopiesDataset([*base.manifest] * 3, [CachedToy(k, 18) for k in KEYS], n_clips=6)
    streamed = stream_to_device(copies, torch.device("cpu"))
    assert streamed["index"].tolist() == [i % 6 for i in range(18)]
    assert_same_batch(streamed, collate([copies[i] for i in range(18)]))


def test_inputs_of_inexact_length_are_left_to_the_way_before():
    ds = toy_dataset(["ssl", "wave", "egemaps"])  # ToyStrategy says nothing about exact lengths, as audio
    assert stream_to_device(ds, torch.device("cpu")) is None
    loader = list(DataLoader(ds, batch_size=5, shuffle=False, collate_fn=Collate(None)))
    resident = list(ResidentSplit(ds, batch_size=5, shuffle=False, device=torch.device("cpu")))
    for a, b in zip(loader, resident, strict=True):
        assert_same_batch(a, b)


def test_a_resident_split_streamed_serves_what_the_loader_serves():
    ds = cached_dataset()
    loader = list(DataLoader(ds, batch_size=5, shuffle=False, collate_fn=Collate(None)))
    resident = list(ResidentSplit(ds, batch_size=5, shuffle=False, device=torch.device("cpu")))
    assert len(resident) == len(loader) == 5
    for a, b in zip(loader, resident, strict=True):
        assert_same_batch(a, b)


def test_a_row_longer_than_its_cache_announced_is_an_error_naming_it(monkeypatch):
    ds = cached_dataset()
    lying = ds.strategies[2]  # logmel
    true_lengths = lying.lengths()
    monkeypatch.setattr(lying, "lengths", lambda: np.where(np.arange(23) == 17, true_lengths - 1, true_lengths))
    with pytest.raises(ValueError, match=r"row 17 \(c017\): logmel has \d+ frames, its cache announced"):
        stream_to_device(ds, torch.device("cpu"), threads=4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_streamed_to_the_gpu_through_pinned_chunks(monkeypatch):
    ds = cached_dataset(n=40)
    monkeypatch.setattr(streamed_upload, "CHUNK_BYTES", 1)  # one row a chunk: the slots are reused many times
    streamed = stream_to_device(ds, torch.device("cuda"), 8)
    assert streamed["ssl"].device.type == "cuda"
    host = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in streamed.items()}
    assert_same_batch(host, collate([ds[i] for i in range(len(ds))], None, 8))


def test_a_split_streamed_in_inference_mode_as_lightning_asks_for_the_dev_split():
    ds = cached_dataset()
    with torch.inference_mode():
        streamed = stream_to_device(ds, torch.device("cpu"), threads=4)
    assert_same_batch(streamed, collate([ds[i] for i in range(len(ds))]))
