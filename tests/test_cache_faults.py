"""Faults around the feature cache: damaged shards, repair on request, full disk, stale partial files,
SIGKILL and Ctrl-C during extraction, and clips outside a kind's duration limits."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_cache import build, make_manifest, random_arrays
from wav2emo.features import get_features
from wav2emo.features.cache.format import LOCK_FILE, META_FILE, STAMP_FILE, CacheError, DiskFullError
from wav2emo.features.cache.maintenance import clean_stale_partials
from wav2emo.features.cache.reader import FeatureCache

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and signals process groups")


def flip_byte(path: Path, position: int) -> None:
    """Change one byte in place: the file keeps its size (what a bad sector or a stray write does)."""
    with open(path, "r+b") as f:
        f.seek(position)
        b = f.read(1)
        f.seek(position)
        f.write(bytes([b[0] ^ 0x40]))


def data_offset(path: Path) -> int:
    from wav2emo.features.cache.format import _read_npy_header

    return _read_npy_header(path)[3]


@pytest.fixture
def built(tmp_path) -> tuple[Path, dict, list[np.ndarray]]:
    arrays = random_arrays([9, 4, 11, 6, 8], (3,), np.float16)
    meta = build(tmp_path / "c", arrays, shard_bytes=12 * 3 * 2)
    assert len(meta["shards"]) >= 3
    return tmp_path / "c", meta, arrays


# Checksums ------------------------------------------------------------------------------------------------
def test_same_size_bit_flip_is_detected_on_open_and_names_the_shard(built):
    path, meta, _ = built
    FeatureCache.open(path)  # sound
    shard = path / meta["shards"][1]["file"]
    size = shard.stat().st_size
    flip_byte(shard, data_offset(shard) + 5)
    assert shard.stat().st_size == size
    with pytest.raises(CacheError) as err:
        FeatureCache.open(path)
    msg = str(err.value)
    assert shard.name in msg and str(path) in msg and "crc32" in msg and "rebuild=true" in msg
    assert meta["shards"][0]["file"] not in msg  # only the damaged shard is named


def test_opening_hashes_only_shards_changed_since_their_last_verification(built, monkeypatch):
    import wav2emo.features.cache.reader as cache_mod

    path, meta, arrays = built
    assert (path / STAMP_FILE).is_file()  # written by the builder: the first open hashes nothing
    calls = []
    real = cache_mod.shard_mismatches
    monkeypatch.setattr(cache_mod, "shard_mismatches", lambda *a: calls.append(Path(a[0]).name) or real(*a))
    cache_mod._VERIFIED.clear()
    FeatureCache.open(path)
    assert calls == []
    os.utime(path / meta["shards"][2]["file"])  # touched: its stamp no longer matches, so it is hashed once
    FeatureCache.open(path)
    assert calls == [meta["shards"][2]["file"]]
    FeatureCache.open(path)
    assert calls == [meta["shards"][2]["file"]]  # the stamp was refreshed
    FeatureCache.open(path, verify="full")
    assert sorted(calls[1:]) == sorted(s["file"] for s in meta["shards"])
    cache = FeatureCache.open(path, verify="none")
    assert np.array_equal(cache.read(2), arrays[2])


def test_damaged_cache_is_an_error_and_rebuild_recomputes_only_the_damaged_shard(tmp_path):
    m = make_manifest(tmp_path / "a", [6000, 9000, 4000, 7000, 5000, 8000])
    spec = {"kind": "logmel", "name": "lm", "n_mels": 16, "num_workers": 1, "shard_mb": 0.005, "durable": False}
    first = get_features(m, spec, tmp_path / "cache", progress=False)
    n_shards = len(first.meta["shards"])
    assert n_shards >= 3
    originals = [first.read_copy(i) for i in range(len(m))]
    shard = first.path / first.meta["shards"][1]["file"]
    flip_byte(shard, data_offset(shard) + 17)
    with pytest.raises(CacheError, match=rf"{shard.name}.*rebuild=true"):
        get_features(m, spec, tmp_path / "cache", progress=False)  # never a silent wrong result

    repaired = get_features(m, spec, tmp_path / "cache", progress=False, rebuild=True)
    assert repaired.path == first.path and repaired.meta["build"]["shards_reused"] == n_shards - 1
    for i, a in enumerate(originals):
        assert np.array_equal(repaired.read_copy(i), a)
    # A sound cache asked to rebuild is verified and left as it is.
    before = {p.name: p.stat().st_mtime_ns for p in first.path.glob("shard-*")}
    again = get_features(m, spec, tmp_path / "cache", progress=False, rebuild=True)
    assert again.meta["created"] == repaired.meta["created"]
    assert {p.name: p.stat().st_mtime_ns for p in first.path.glob("shard-*")} == before


@pytest.mark.slow
def test_extract_cli_rebuild_switch(tmp_path):
    """`python -m wav2emo.extract ... rebuild=true` is the switch the error message names; without it the
    damaged cache is a one-line error (exit 1), with it the cache is repaired."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    base = [sys.executable, "-m", "wav2emo.extract", "data=synthetic", "data.corpus.clips_per_actor=1",
            "features=logmel", "only=[logmel]", "progress=false", f"paths.cache_dir={tmp_path / 'cache'}",
            f"paths.data_dir={tmp_path / 'data'}", f"paths.log_dir={tmp_path / 'logs'}"]
    first = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    meta_path = next((tmp_path / "cache").rglob(META_FILE))
    meta = json.loads(meta_path.read_text())
    shard = meta_path.parent / meta["shards"][0]["file"]
    flip_byte(shard, data_offset(shard) + 3)
    bad = subprocess.run(base, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    last = bad.stderr.strip().splitlines()[-1]
    assert last.startswith("wav2emo.extract: ") and shard.name in last and "rebuild=true" in last
    fixed = subprocess.run([*base, "rebuild=true"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert fixed.returncode == 0, fixed.stderr
    FeatureCache.open(meta_path.parent, verify="full")


# A full disk ----------------------------------------------------------------------------------------------
def test_full_disk_leaves_the_previous_cache_usable_and_says_what_happened(tmp_path, monkeypatch):
    import wav2emo.features.cache.writer as cache_mod

    m = make_manifest(tmp_path / "a", [6000, 9000, 4000, 7000])
    spec = {"kind": "logmel", "name": "lm", "n_mels": 16, "num_workers": 1, "shard_mb": 0.005, "durable": False}
    old = get_features(m, spec, tmp_path / "cache", progress=False)
    old_values = [old.read_copy(i) for i in range(len(m))]
    old_files = {p.name: p.stat().st_mtime_ns for p in old.path.iterdir()}

    real_pwrite, calls = os.pwrite, {"n": 0}

    def pwrite_until_full(fd, data, offset):
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(cache_mod.os, "pwrite", pwrite_until_full)
    new_spec = {**spec, "n_mels": 24}
    with pytest.raises(DiskFullError) as err:
        get_features(m, new_spec, tmp_path / "cache", progress=False)
    msg = str(err.value)
    assert "no space left" in msg and "paths.cache_dir" in msg and "no other cache was touched" in msg
    new_folder = Path(msg.split(" while writing the feature cache ")[1].split(",")[0])
    assert new_folder.parent == old.path.parent and not (new_folder / META_FILE).exists()
    assert not list(new_folder.glob("*.partial"))  # the space they held is given back
    monkeypatch.undo()

    again = FeatureCache.open(old.path, verify="full")
    assert {p.name: p.stat().st_mtime_ns for p in old.path.iterdir() if p.name != STAMP_FILE} == {
        k: v for k, v in old_files.items() if k != STAMP_FILE}
    assert all(np.array_equal(again.read_copy(i), v) for i, v in enumerate(old_values))
    finished = get_features(m, new_spec, tmp_path / "cache", progress=False)  # space back: it resumes
    assert finished.path == new_folder and finished.feature_shape == (24,)


# Stale partial files ---------------------------------------------------------------------------------------
def test_stale_partials_are_removed_only_where_no_live_process_holds_the_lock(tmp_path):
    root = tmp_path / "cache" / "toy"
    stale, live = root / "a-0123", root / "b-4567"
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "shard-00000.npy.partial").write_bytes(b"x" * 1000)
        (folder / "shard-00001.npy").write_bytes(b"kept")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from filelock import FileLock; l = FileLock(sys.argv[1]); "
         "l.acquire(); print('locked', flush=True); time.sleep(60)", str(live / LOCK_FILE)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = clean_stale_partials(root)
        assert removed == [stale / "shard-00000.npy.partial"]
        assert (live / "shard-00000.npy.partial").exists() and (stale / "shard-00001.npy").exists()
    finally:
        holder.kill()
        holder.wait()
    assert clean_stale_partials(root) == [live / "shard-00000.npy.partial"]  # its holder is gone


def test_stale_temporary_files_go_only_when_their_writer_is_gone_and_other_folders_are_left_alone(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    folder = tmp_path / "toy" / "lm-0123"
    folder.mkdir(parents=True)
    (folder / "plan.json").write_text("{}")
    orphan_tmp = folder / f".index.json.{dead_pid}.140.tmp"
    live_tmp = folder / f".verified.json.{os.getpid()}.140.tmp"
    for p in (orphan_tmp, live_tmp):
        p.write_text("x")
    other = tmp_path / "toy" / "not-a-cache"  # e.g. a backbone folder: no plan, meta or shards
    other.mkdir()
    (other / "weights.bin.partial").write_text("x")
    (other / f".config.json.{dead_pid}.1.tmp").write_text("x")
    assert clean_stale_partials(tmp_path / "toy") == [orphan_tmp]
    assert live_tmp.exists() and len(list(other.iterdir())) == 2 and not (other / LOCK_FILE).exists()


def test_get_features_cleans_stale_partials_of_sibling_caches(tmp_path):
    m = make_manifest(tmp_path / "a", [6000, 9000])
    orphan = tmp_path / "cache" / m.name / "lm-deadbeefdeadbeef"
    orphan.mkdir(parents=True)
    (orphan / "shard-00003.npy.partial").write_bytes(b"\0" * 4096)
    get_features(m, {"kind": "logmel", "name": "lm", "num_workers": 1, "durable": False}, tmp_path / "cache",
                 progress=False)
    assert not list(orphan.glob("*.partial"))


# Interrupted extraction --------------------------------------------------------------------------------------
# No `if __name__ == "__main__":` guard on purpose: the eGeMAPS workers must not depend on one.
EXTRACT_SCRIPT = """
import sys
from wav2emo.data.manifest import Manifest
from wav2emo.features import get_features
m = Manifest.from_csv(sys.argv[1], name="toy")
spec = {"kind": "egemaps_functionals", "name": "eg", "num_workers": int(sys.argv[4]), "shard_mb": float(sys.argv[3]),
        "durable": False}
get_features(m, spec, sys.argv[2], progress=False)
print("finished", flush=True)
"""

EGEMAPS_SPEC = {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False}


@pytest.fixture(scope="module")
def many_clips(tmp_path_factory):
    """40 clips of about 1 s: a few seconds of openSMILE work in two processes, cut into many small shards."""
    pytest.importorskip("opensmile")
    root = tmp_path_factory.mktemp("many")
    m = make_manifest(root / "audio", [16000 + 37 * i for i in range(40)])
    m.to_csv(root / "m.csv")
    return m, root / "m.csv"


def _start_extraction(csv: Path, cache_dir: Path, shard_mb: float, workers: int = 2) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", EXTRACT_SCRIPT, str(csv), str(cache_dir), str(shard_mb), str(workers)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )


def _wait_for_shards(cache_dir: Path, proc: subprocess.Popen, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(list(cache_dir.rglob("shard-*.npy"))) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the extraction ended early: {proc.stderr.read()}")
        time.sleep(0.01)
    pytest.fail(f"no {count} finished shards after {timeout} s")


def _processes() -> list[tuple[int, str, int, int]]:
    """(pid, state, parent pid, process group) of every process, from /proc (Linux; no extra dependency)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        out.append((int(d.name), fields[0], int(fields[1]), int(fields[2])))
    return out


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of the process group ``pgid``."""
    return [pid for pid, state, _, group in _processes() if group == pgid and state != "Z"]


def _children_of(pid: int) -> list[int]:
    return [child for child, state, parent, _ in _processes() if parent == pid and state != "Z"]


@linux_only
@pytest.mark.parametrize("signals", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["ctrl-c", "ctrl-c-twice"])
def test_ctrl_c_stops_egemaps_promptly_leaves_no_process_and_a_resumable_cache(tmp_path, many_clips, signals):
    m, csv = many_clips
    proc = _start_extraction(csv, tmp_path / "cache", shard_mb=0.0005)  # one clip per shard
    pgid = proc.pid
    try:
        _wait_for_shards(tmp_path / "cache", proc, 2)
        assert len(_children_of(proc.pid)) >= 2  # the worker processes are running
        start = time.monotonic()
        for k in range(signals):
            os.killpg(pgid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
            if k + 1 < signals:
                time.sleep(0.1)
        proc.wait(timeout=15)
        stopped_s = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode != 0 and "finished" not in proc.stdout.read(), ("the extraction was not interrupted", err)
    assert stopped_s < 10, (stopped_s, err)
    deadline = time.monotonic() + 5
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(pgid) == [], ("worker processes outlived the interrupted extraction", err)
    folder = next((tmp_path / "cache").rglob("shard-*.npy")).parent  # workers finish shards in any order
    assert not (folder / META_FILE).exists()
    resumed = get_features(m, {**EGEMAPS_SPEC, "shard_mb": 0.0005}, tmp_path / "cache", progress=False)
    assert resumed.path == folder and resumed.meta["build"]["shards_reused"] >= 2, err
    assert not list(folder.glob("*.partial")) and resumed.num_clips == len(m)


@linux_only
@pytest.mark.parametrize("workers", [1, pytest.param(2, marks=pytest.mark.slow)], ids=["in-process", "pool"])
def test_sigkill_midway_resumes_to_a_cache_identical_to_an_uninterrupted_one(tmp_path, many_clips, workers):
    m, csv = many_clips
    spec = {**EGEMAPS_SPEC, "shard_mb": 0.001}  # two clips per shard
    proc = _start_extraction(csv, tmp_path / "killed", shard_mb=0.001, workers=workers)
    try:
        _wait_for_shards(tmp_path / "killed", proc, 3)
        os.killpg(proc.pid, signal.SIGKILL)  # no clean-up code runs at all
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    deadline = time.monotonic() + 5  # PR_SET_PDEATHSIG takes the workers down with their parent
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(proc.pid) == []
    resumed = get_features(m, spec, tmp_path / "killed", progress=False)
    assert resumed.meta["build"]["shards_reused"] >= 3
    reference = get_features(m, {**spec, "num_workers": 1}, tmp_path / "reference", progress=False)
    assert resumed.path.name == reference.path.name
    names = sorted(p.name for p in reference.path.glob("shard-*"))
    assert names == sorted(p.name for p in resumed.path.glob("shard-*"))
    for name in [*names, "index.json"]:
        assert (resumed.path / name).read_bytes() == (reference.path / name).read_bytes(), name


def test_cache_built_before_checksums_still_opens_with_one_warning(built, caplog):
    """Caches written by an older wav2emo (no crc32 column) stay usable: same key, no re-extraction."""
    import hashlib

    path, _, arrays = built
    index = json.loads((path / "index.json").read_text())
    del index["crc32"]
    text = json.dumps(index, separators=(",", ":"))
    (path / "index.json").write_text(text)
    meta = json.loads((path / META_FILE).read_text())
    meta["index"]["sha256"] = hashlib.sha256(text.encode()).hexdigest()
    (path / META_FILE).write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="wav2emo.features.cache"):
        for _ in range(3):
            cache = FeatureCache.open(path)
    assert np.array_equal(cache.read(1), arrays[1])
    assert sum("has no checksums" in r.message for r in caplog.records) == 1


@pytest.mark.parametrize("array", [np.zeros((3, 12, 768), np.float16), np.zeros((5,), np.float32),
                                   np.zeros((), np.int64), np.zeros((2, 3), np.float32, order="F"),
                                   np.zeros((4,), ">f8"), np.zeros((2, 2), bool)])
def test_shard_headers_are_read_without_building_an_ast(tmp_path, monkeypatch, array):
    """A plain array's .npy header is parsed without ast.literal_eval, which numpy's reader calls and which can
    fail with 'SystemError: AST constructor recursion depth mismatch' when threads build ASTs at once on
    CPython 3.11 (python/cpython#106905; seen on a demo run while the shards of a cache were checked)."""
    import ast

    from wav2emo.features.cache.format import _read_npy_header

    path = tmp_path / "a.npy"
    np.save(path, array)
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f) if version == (1, 0) else \
            np.lib.format.read_array_header_2_0(f)
        expected = (tuple(shape), np.dtype(dtype), bool(fortran), f.tell())

    def no_ast(*_a, **_k):
        raise AssertionError("ast.literal_eval called")

    monkeypatch.setattr(ast, "literal_eval", no_ast)
    assert _read_npy_header(path) == expected


def test_other_npy_headers_still_go_to_numpy(tmp_path):
    from wav2emo.features.cache.format import _read_npy_header

    path = tmp_path / "s.npy"
    np.save(path, np.zeros((4, 2), dtype=[("a", "<f4"), ("b", "<i2")]))
    shape, dtype, fortran, offset = _read_npy_header(path)
    assert shape == (4, 2) and dtype.names == ("a", "b") and not fortran and offset == path.stat().st_size - 4 * 2 * 6
