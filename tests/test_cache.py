"""The feature cache: round trips, memmap reads, resumable builds, damage detection, keys and the build lock."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wav2emo.data.manifest import Clip, Manifest, sha1_of_file
from wav2emo.features import FEATURE_KINDS, feature_cache_path, get_features
from wav2emo.features.cache.format import INDEX_FILE, META_FILE, PLAN_FILE, CacheError, cache_key, cache_path
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.cache.writer import CacheBuilder


# Shared helpers (imported by the other feature test files) -------------------------------------------------
def write_clip(path: Path, num_samples: int, sr: int = 16000, channels: int = 1, seed: int = 0) -> Path:
    """A speech-like test signal: a gliding harmonic tone with noise, written as 16-bit WAV/FLAC."""
    rng = np.random.default_rng(seed)
    t = np.arange(num_samples) / sr
    f0 = 110 + 40 * seed % 90 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * 0.2 * (0.6 + 0.4 * np.sin(2 * np.pi * 2.5 * t) ** 2)
    x = x + 0.01 * rng.standard_normal(num_samples)
    data = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1) if channels > 1 else x
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, data.astype(np.float32), sr, subtype="PCM_16")
    return path


def make_manifest(
    root: Path, samples: list[int], *, sr: int = 16000, channels: int = 1, name: str = "toy", ext: str = "wav"
) -> Manifest:
    clips = []
    for i, n in enumerate(samples):
        p = write_clip(root / f"clip{i:03d}.{ext}", n, sr=sr, channels=channels, seed=i)
        clips.append(
            Clip(
                clip_id=f"clip{i:03d}", path=str(p), corpus=name, actor=1 + i % 4, gender="male" if i % 2 else "female",
                emotion="neutral", label=i % 8, intensity=1, statement=1, repetition=1, duration=n / sr,
                sample_rate=sr, channels=channels, num_frames=n, sha1=sha1_of_file(p),
            )
        )
    return Manifest(clips, name=name)


def random_arrays(lengths: list[int], shape: tuple[int, ...], dtype, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((n, *shape)) * 3).astype(dtype) for n in lengths]


def build(path: Path, arrays: list[np.ndarray], *, order=None, shard_bytes: int = 4096, threads: int = 1) -> dict:
    ids = [f"c{i}" for i in range(len(arrays))]
    builder = CacheBuilder(
        path, clip_ids=ids, sha1s=[f"{i:040x}" for i in range(len(arrays))], lengths=[len(a) for a in arrays],
        feature_shape=arrays[0].shape[1:], dtype=arrays[0].dtype, order=order, shard_bytes=shard_bytes,
    )
    pending = builder.pending
    if threads == 1:
        for i in pending:
            builder.write(i, arrays[i])
    else:
        chunks = [pending[k::threads] for k in range(threads)]
        ts = [threading.Thread(target=lambda c=c: [builder.write(i, arrays[i]) for i in c]) for c in chunks]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    return builder.finish({"key": "k" * 64, "kind": "test", "frame_rate": 50.0})


# Round trips ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 3])
def test_round_trip_values_shapes_lengths_and_memmap(tmp_path, threads):
    lengths = [7, 1, 30, 12, 5, 19, 3, 25]
    arrays = random_arrays(lengths, (4, 6), np.float16)
    order = [2, 7, 5, 3, 0, 4, 6, 1]  # e.g. sorted by length, as extraction lays clips out
    meta = build(tmp_path / "c", arrays, order=order, shard_bytes=40 * 4 * 6 * 2, threads=threads)
    assert len(meta["shards"]) > 2  # the test is only meaningful with several shards

    cache = FeatureCache.open(tmp_path / "c")
    assert cache.num_clips == len(lengths) and cache.clip_ids == [f"c{i}" for i in range(8)]
    assert cache.lengths.dtype == np.int64 and cache.lengths.tolist() == lengths
    assert cache.feature_shape == (4, 6) and cache.dtype == np.float16 and cache.frame_rate == 50.0
    for i, a in enumerate(arrays):
        got = cache.read(i)
        assert isinstance(got, np.memmap) and not got.flags.writeable
        assert got.shape == a.shape and np.array_equal(got, a)
    assert cache.index_of("c5") == 5 and np.array_equal(cache.read(-1), arrays[-1])
    assert [r.shape[0] for r in cache.read_many([3, 1])] == [12, 1]
    with pytest.raises(KeyError, match="c99"):
        cache.index_of("c99")
    with pytest.raises(IndexError):
        cache.read(8)
    assert not (tmp_path / "c" / PLAN_FILE).exists()
    # The shards are plain .npy files.
    first = np.load(tmp_path / "c" / meta["shards"][0]["file"], mmap_mode="r")
    assert first.shape[1:] == (4, 6)


def test_float32_functionals_keep_precision_and_pickle_reopens(tmp_path):
    import pickle

    arrays = [np.array([[-60.123456, 1234.5678, 1e-4]], dtype=np.float32) + i for i in range(5)]
    build(tmp_path / "f", arrays)
    cache = FeatureCache.open(tmp_path / "f")
    assert cache.dtype == np.float32 and cache.lengths.tolist() == [1] * 5
    assert np.array_equal(cache.read(3), arrays[3])  # exact: float16 would round -60.12 to -60.1
    again = pickle.loads(pickle.dumps(cache))
    assert np.array_equal(again.read(4), arrays[4])


def test_rows_for_refuses_other_audio(tmp_path):
    m = make_manifest(tmp_path / "a", [4000, 5000])
    cache = get_features(m, {"kind": "logmel", "name": "lm", "num_workers": 1}, tmp_path / "cache", progress=False)
    assert cache.rows_for(list(m)[::-1]).tolist() == [1, 0]
    changed = Clip(**{**m[0].__dict__, "sha1": "0" * 40})
    with pytest.raises(CacheError, match="sha1"):
        cache.rows_for([changed])


# Damage -------------------------------------------------------------------------------------------------
@pytest.fixture
def built(tmp_path) -> tuple[Path, dict]:
    arrays = random_arrays([9, 4, 11, 6, 8], (3,), np.float16)
    meta = build(tmp_path / "c", arrays, shard_bytes=12 * 3 * 2)
    assert len(meta["shards"]) >= 3
    return tmp_path / "c", meta


def test_truncated_shard_is_reported(built):
    path, meta = built
    shard = path / meta["shards"][1]["file"]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 6)
    with pytest.raises(CacheError, match=rf"{shard.name}.*bytes long.*delete that folder"):
        FeatureCache.open(path)


def test_deleted_shard_is_reported(built):
    path, meta = built
    (path / meta["shards"][2]["file"]).unlink()
    with pytest.raises(CacheError, match=rf"{meta['shards'][2]['file']}: the file is missing.*expected a float16"):
        FeatureCache.open(path)


def test_garbled_meta_is_reported(built):
    path, _ = built
    (path / META_FILE).write_text('{"format": "wav2emo-feature-cache", "num_cl')
    with pytest.raises(CacheError, match=r"meta.json: not valid JSON.*delete that folder"):
        FeatureCache.open(path)
    (path / META_FILE).write_text(json.dumps({"format": "wav2emo-feature-cache"}))
    with pytest.raises(CacheError, match=r"missing fields"):
        FeatureCache.open(path)


def test_tampered_index_and_shard_header_are_reported(built):
    path, meta = built
    index = json.loads((path / INDEX_FILE).read_text())
    index["length"][0] += 1
    (path / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CacheError, match="index.json: content does not match"):
        FeatureCache.open(path)


def test_missing_meta_means_incomplete(built):
    path, _ = built
    (path / META_FILE).unlink()
    with pytest.raises(CacheError, match="not a finished feature cache"):
        FeatureCache.open(path)


# Resume ----------------------------------------------------------------------------------------------------
def test_builder_resume_keeps_whole_shards_and_discards_partial_ones(tmp_path):
    lengths = [10, 10, 10, 10, 10, 10]
    arrays = random_arrays(lengths, (2,), np.float16)
    kw = dict(clip_ids=[f"c{i}" for i in range(6)], sha1s=["0" * 40] * 6, lengths=lengths, feature_shape=(2,),
              dtype=np.float16, shard_bytes=20 * 2 * 2)  # 2 clips per shard
    b1 = CacheBuilder(tmp_path / "c", **kw)
    assert b1.num_shards == 3 and b1.pending == list(range(6))
    for i in (0, 1, 2):  # shard 0 complete, shard 1 half written: a crash here
        b1.write(i, arrays[i])
    b1.close()
    assert (tmp_path / "c" / "shard-00000.npy").is_file()
    assert (tmp_path / "c" / "shard-00001.npy.partial").is_file()

    b2 = CacheBuilder(tmp_path / "c", **kw)
    assert b2.shards_reused == 1 and b2.pending == [2, 3, 4, 5]
    assert not (tmp_path / "c" / "shard-00001.npy.partial").exists()
    for i in b2.pending:
        b2.write(i, arrays[i])
    b2.finish({"key": "k" * 64, "kind": "test"})
    cache = FeatureCache.open(tmp_path / "c")
    assert all(np.array_equal(cache.read(i), arrays[i]) for i in range(6))

    # A different plan (other lengths) discards the old shards instead of mixing them in.
    b3 = CacheBuilder(tmp_path / "d", **kw)
    b3.write(0, arrays[0])
    b3.write(1, arrays[1])
    b3.close()
    b4 = CacheBuilder(tmp_path / "d", **{**kw, "lengths": [10, 10, 10, 10, 10, 9]})
    assert b4.shards_reused == 0 and not (tmp_path / "d" / "shard-00000.npy").exists()


def test_builder_rejects_wrong_shapes_and_double_writes(tmp_path):
    b = CacheBuilder(tmp_path / "c", clip_ids=["a", "b"], sha1s=["0", "1"], lengths=[3, 4], feature_shape=(2,),
                     dtype=np.float16)
    with pytest.raises(ValueError, match=r"'a': got float16 \(4, 2\), expected float16 \(3, 2\)"):
        b.write(0, np.zeros((4, 2), np.float16))
    with pytest.raises(ValueError, match="float32"):
        b.write(0, np.zeros((3, 2), np.float32))
    b.write(0, np.ones((3, 2), np.float16))
    with pytest.raises(ValueError, match="written twice"):
        b.write(0, np.ones((3, 2), np.float16))
    with pytest.raises(CacheError, match="cannot finish"):
        b.finish({"key": "k", "kind": "t"})
    b.close()
    with pytest.raises(ValueError, match="no frames"):
        CacheBuilder(tmp_path / "z", clip_ids=["a"], sha1s=["0"], lengths=[0], feature_shape=(2,), dtype="float16")


# Keys and folders ------------------------------------------------------------------------------------------
def test_cache_key_is_canonical_and_names_are_checked(tmp_path):
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_path(tmp_path, "ravdess", "wav2vec2-base", "ab" * 32) == tmp_path / "ravdess" / f"wav2vec2-base-{'ab' * 8}"
    for bad in ("../x", "a/b", "", "."):
        with pytest.raises(ValueError, match="cannot name a cache folder"):
            cache_path(tmp_path, bad, "x", "0" * 64)


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def test_changed_config_or_corpus_gets_a_new_cache_and_leaves_the_old_one(tmp_path):
    m = make_manifest(tmp_path / "a", [6000, 9000, 4000])
    spec = {"kind": "logmel", "name": "lm", "n_mels": 32, "num_workers": 1}
    first = get_features(m, spec, tmp_path / "cache", progress=False)
    before = _snapshot(first.path)
    created = first.meta["created"]

    same = get_features(m, {**spec, "num_workers": 2}, tmp_path / "cache", progress=False)  # not in the key
    assert same.path == first.path and same.meta["created"] == created

    other = get_features(m, {**spec, "n_mels": 40}, tmp_path / "cache", progress=False)
    assert other.path != first.path and other.feature_shape == (40,) and first.feature_shape == (32,)
    smaller = get_features(m[:2], spec, tmp_path / "cache", progress=False)  # another corpus content
    assert smaller.path != first.path and smaller.num_clips == 2
    assert _snapshot(first.path) == before
    assert np.array_equal(FeatureCache.open(first.path).read(1), first.read(1))
    assert feature_cache_path(m, spec, tmp_path / "cache") == first.path


def test_unknown_kind_and_spec_fields_are_errors(tmp_path):
    m = make_manifest(tmp_path / "a", [4000])
    with pytest.raises(ValueError, match="feature kind 'mfcc' is unknown"):
        get_features(m, {"kind": "mfcc", "name": "x"}, tmp_path / "cache")
    with pytest.raises(ValueError, match=r"unknown fields \['nmels'\]"):
        get_features(m, {"kind": "logmel", "name": "x", "nmels": 3}, tmp_path / "cache")
    with pytest.raises(ValueError, match="missing 'name'"):
        get_features(m, {"kind": "logmel"}, tmp_path / "cache")


# Concurrency -----------------------------------------------------------------------------------------------
class SlowLogMel:
    """A log-mel kind that takes long enough for a second process to arrive mid-build; counts its builds."""

    def __init__(self, spec, device=None):
        from wav2emo.features.logmel import LogMel

        self.inner = LogMel({k: v for k, v in spec.items() if k != "count_file"} | {"kind": "logmel"})
        self.count_file = Path(spec["count_file"])
        self.spec = dict(spec)

    def key_fields(self):
        return self.inner.key_fields()

    def build(self, manifest, path, base_meta, *, progress=True):
        with open(self.count_file, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.5)
        return self.inner.build(manifest, path, base_meta, progress=False)


def _concurrent_worker(args) -> tuple[int, str, int, str]:
    manifest_csv, cache_dir, count_file, barrier = args
    if "slow_logmel" not in FEATURE_KINDS:
        FEATURE_KINDS.register("slow_logmel", SlowLogMel)
    m = Manifest.from_csv(manifest_csv, name="toy")
    barrier.wait(timeout=60)
    cache = get_features(m, {"kind": "slow_logmel", "name": "slow", "count_file": count_file}, cache_dir, progress=False)
    return os.getpid(), str(cache.path), cache.meta["build"]["pid"], cache.meta["created"]


def test_concurrent_processes_extract_once(tmp_path):
    m = make_manifest(tmp_path / "a", [5000, 7000, 6000])
    m.to_csv(tmp_path / "m.csv")
    ctx = multiprocessing.get_context("spawn")
    count_file = tmp_path / "builds.txt"
    with ctx.Manager() as mgr:
        barrier = mgr.Barrier(2)
        with ctx.Pool(2) as pool:
            results = pool.map(_concurrent_worker, [(str(tmp_path / "m.csv"), str(tmp_path / "cache"), str(count_file), barrier)] * 2)
    builders = count_file.read_text().split()
    assert len(builders) == 1  # one extraction for two callers
    (pid_a, path_a, built_a, created_a), (pid_b, path_b, built_b, created_b) = results
    assert path_a == path_b and created_a == created_b and built_a == built_b == int(builders[0])
    assert {pid_a, pid_b} >= {built_a}


def test_read_copy_equals_read_and_maps_nothing(tmp_path):
    from wav2emo.features.cache.reader import FeatureCache
    from wav2emo.features.cache.writer import build_from_arrays

    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal((int(t), 3, 8)).astype(np.float16) for t in (5, 9, 2, 7)]
    path = tmp_path / "c"
    build_from_arrays(path, clip_ids=list("abcd"), sha1s=["0" * 40] * 4, arrays=arrays, dtype="float16",
                      meta={"key": "k" * 64, "kind": "test"}, shard_bytes=200, durable=False)
    cache = FeatureCache.open(path)
    for i, a in enumerate(arrays):
        out = cache.read_copy(i)
        assert not isinstance(out, np.memmap) and out.base is None and out.flags.writeable
        np.testing.assert_array_equal(out, a)
        np.testing.assert_array_equal(out, cache.read(i))
    with pytest.raises(IndexError):
        cache.read_copy(4)
