"""A resident split streamed from the cache files' bytes gives exactly the collate of every item
(feeding/streamed_upload.py, the stored-bytes way), on real feature caches."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_streamed_upload import assert_same_batch
from wav2emo.features.cache.format import CacheError
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.cache.writer import build_from_arrays
from wav2emo.features.combined_cache import MultiCache
from wav2emo.feeding import streamed_upload
from wav2emo.feeding.input_strategies import CachedFeatures, ClipDataset, Concat, CopiesDataset, collate
from wav2emo.feeding.streamed_upload import stream_to_device


def make_cache(path, n: int, frame_shape: tuple[int, ...], dtype: str, seed: int, lengths=None) -> FeatureCache:
    """A cache of ``n`` clips over several small shards, clip ``i`` of ``lengths[i]`` frames."""
    rng = np.random.default_rng(seed)
    lengths = lengths if lengths is not None else [1 + (5 * i + seed) % 13 for i in range(n)]
    arrays = [(rng.standard_normal((t, *frame_shape)) * 3).astype(dtype) for t in lengths]
    build_from_arrays(path, clip_ids=[f"c{i:03d}" for i in range(n)], sha1s=["0" * 40] * n, arrays=arrays,
                      dtype=dtype, meta={"key": "k" * 64, "kind": "test"}, shard_bytes=2000, durable=False)
    return FeatureCache.open(path)


def manifest(n: int) -> list[SimpleNamespace]:
    return [SimpleNamespace(label=i % 8, clip_id=f"m{i:03d}", actor=1 + i % 4) for i in range(n)]


def split(tmp_path, rows, frames=None, ssl_dtype="float16", logmel_dtype="float16") -> ClipDataset:
    """SSL states, log-mels and eGeMAPS of cache rows ``rows`` (in that order: runs, gaps, order reversed)."""
    ssl = make_cache(tmp_path / "ssl", 30, (3, 8), ssl_dtype, 0)
    logmel = make_cache(tmp_path / "logmel", 30, (5,), logmel_dtype, 1)
    egemaps = make_cache(tmp_path / "egemaps", 30, (88,), "float32", 2, lengths=[1] * 30)
    rows = np.asarray(rows)
    return ClipDataset(manifest(len(rows)), [CachedFeatures("ssl", ssl, rows, frames), CachedFeatures("logmel", logmel, rows),
                                             CachedFeatures("egemaps", egemaps, rows)], frames=frames)


ROWS = [*range(0, 12), 20, 21, 22, 15, 14, 13, 29, 3, 3, 25, 26, 27, 28, 12]  # runs, gaps, a row twice, reversed


@pytest.fixture()
def only_stored_bytes(monkeypatch):
    """The stored-bytes way must be the one taken; small chunks and pieces, so slots and runs are cut often."""
    def refuse(*args, **kwargs):
        raise AssertionError("read row by row although the stored bytes were offered")

    monkeypatch.setattr(streamed_upload, "_rows_to_device", refuse)
    monkeypatch.setattr(streamed_upload, "CHUNK_BYTES", 600)  # a few rows a chunk, some rows bigger than a chunk
    monkeypatch.setattr(streamed_upload, "PIECE_BYTES", 64)  # runs of rows cut into many reads


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize(("frames", "multiple"), [(None, None), (None, 8), (6, None)])
def test_stored_bytes_give_the_collate_of_every_item(tmp_path, only_stored_bytes, threads, frames, multiple):
    ds = split(tmp_path, ROWS, frames)
    streamed = stream_to_device(ds, torch.device("cpu"), multiple, threads=threads)
    expected = collate([ds[i] for i in range(len(ds))], frames, multiple)
    assert streamed["ssl"].dtype == torch.float16 and streamed["logmel"].dtype == torch.float32  # as served
    assert_same_batch(streamed, expected)


def test_float32_caches_and_the_way_before_agree(tmp_path, monkeypatch):
    ds = split(tmp_path, ROWS, ssl_dtype="float32", logmel_dtype="float32")
    monkeypatch.setattr(streamed_upload, "CHUNK_BYTES", 900)
    stored = stream_to_device(ds, torch.device("cpu"), 4)
    monkeypatch.setattr(streamed_upload, "STORED_BYTES", False)
    assert_same_batch(stored, stream_to_device(ds, torch.device("cpu"), 4))


def test_combined_corpora_and_augmented_copies_stream_their_bytes(tmp_path, only_stored_bytes):
    lengths = [1 + (5 * i) % 13 for i in range(12)]  # one layout: a's row k ends where b's row k + 1 starts
    a = make_cache(tmp_path / "a", 12, (3, 8), "float16", 3, lengths)
    b = make_cache(tmp_path / "b", 9, (3, 8), "float16", 4, lengths[:9])
    both = MultiCache({"a": a, "b": b})
    rows = np.asarray([0, 13, 1, 2, 15, 20, 19, 5, 11])  # corpora interleaved, a0 then b1, a2 then b3
    originals = CachedFeatures("ssl", both, rows)
    copies = CachedFeatures("ssl", make_cache(tmp_path / "copies", 18, (3, 8), "float16", 5), np.arange(18))
    ds = CopiesDataset(manifest(27), [Concat([originals, copies])], n_clips=9)
    streamed = stream_to_device(ds, torch.device("cpu"), threads=3)
    assert streamed["index"].tolist() == [i % 9 for i in range(27)]
    assert_same_batch(streamed, collate([ds[i] for i in range(27)]))


def test_inputs_without_stored_bytes_are_read_row_by_row(tmp_path, monkeypatch):
    ds = split(tmp_path, ROWS)
    monkeypatch.setattr(streamed_upload, "_bytes_to_device", lambda *a, **k: pytest.fail("no stored bytes offered"))
    monkeypatch.setattr(CachedFeatures, "stored", lambda self: None)  # e.g. speaker-normalised features
    assert_same_batch(stream_to_device(ds, torch.device("cpu")), collate([ds[i] for i in range(len(ds))]))


def test_stored_bytes_in_inference_mode_as_lightning_asks_for_the_dev_split(tmp_path, only_stored_bytes):
    ds = split(tmp_path, ROWS)
    with torch.inference_mode():
        streamed = stream_to_device(ds, torch.device("cpu"), threads=4)
        expected = collate([ds[i] for i in range(len(ds))])
    assert_same_batch(streamed, expected)


def test_a_shard_cut_short_after_opening_is_an_error_naming_its_file(tmp_path, only_stored_bytes):
    ds = split(tmp_path, ROWS)
    shard = sorted((tmp_path / "ssl").glob("*.npy"))[-1]
    os.truncate(shard, shard.stat().st_size - 10)
    with pytest.raises(CacheError, match=rf"{shard.name}: short read"):
        stream_to_device(ds, torch.device("cpu"), threads=2)


def test_a_span_outside_the_shard_rows_is_refused(tmp_path):
    cache = make_cache(tmp_path / "c", 5, (3, 8), "float16", 0)
    spans = cache.locate([4])
    last = int(cache.lengths[4]) * spans.frame_bytes
    with pytest.raises(IndexError, match="outside the rows of"):
        cache.read_span(int(spans.shard[0]), int(spans.offset[0]), memoryview(bytearray(last + 2)), "clip 4")
    out = np.empty((int(cache.lengths[4]), 3, 8), np.float16)
    cache.read_span(int(spans.shard[0]), int(spans.offset[0]), memoryview(out).cast("B"), "clip 4")
    np.testing.assert_array_equal(out, cache.read(4))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_stored_bytes_to_the_gpu_through_pinned_chunks(tmp_path, only_stored_bytes):
    ds = split(tmp_path, ROWS, None)
    streamed = stream_to_device(ds, torch.device("cuda"), 8)
    assert streamed["ssl"].device.type == "cuda"
    host = {k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in streamed.items()}
    assert_same_batch(host, collate([ds[i] for i in range(len(ds))], None, 8))


def test_reader_threads_opening_a_shard_at_once_keep_one_descriptor(tmp_path):
    import threading

    cache = make_cache(tmp_path / "c", 30, (3, 8), "float16", 0)
    start = threading.Barrier(8)
    before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None

    def read():
        start.wait()
        for i in range(30):
            cache.read_copy(i)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shards = len({int(s) for s in cache.locate(range(30)).shard})
    assert len(cache._fds) == shards
    if before is not None:  # every other descriptor a racing thread opened was closed again
        assert len(os.listdir("/proc/self/fd")) - before == shards
