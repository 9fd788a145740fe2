"""eGeMAPS worker pool from a plain script (no ``__main__`` guard), and eGeMAPS built while SSL extracts
(features/overlap.py): same caches as one after the other, stopped at once when the build beside it fails
or is interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.test_cache import make_manifest
from tests.test_cache_faults import _children_of, _group_members, linux_only
from wav2emo.data.audio import load_audio
from wav2emo.features.cache.format import META_FILE
from wav2emo.features.overlap import get_features_many

pytest.importorskip("opensmile")

REPO = Path(__file__).resolve().parents[1]
EGEMAPS = {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """24 clips of 0.5-1.6 s, and their manifest as CSV for scripts."""
    root = tmp_path_factory.mktemp("overlap")
    m = make_manifest(root / "audio", [8000 + 1013 * i for i in range(24)])
    m.to_csv(root / "m.csv")
    return m, root / "m.csv"


def ssl_spec(tiny) -> dict:
    return {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tiny), "batch_size": 4, "num_workers": 2,
            "durable": False}


def _engine_values(paths) -> np.ndarray:
    from wav2emo.features.smile_api import SmileEngine

    engine = SmileEngine()
    return np.concatenate([engine.process(load_audio(p), 16000) for p in paths])


# No __main__ guard, on purpose: multiprocessing's spawn/forkserver children would import this script again.
PLAIN_SCRIPT = """
import sys
import numpy as np
from wav2emo.data.manifest import Manifest
from wav2emo.features import get_features
from wav2emo.features.egemaps import compute_egemaps

m = Manifest.from_csv(sys.argv[1], name="toy")
arrays = compute_egemaps([c.path for c in m], num_workers=2)
cache = get_features(m, {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False},
                     sys.argv[2], progress=False)
np.save(sys.argv[3], np.concatenate(arrays))
np.save(sys.argv[4], np.concatenate(cache.read_many(range(cache.num_clips))))
print("finished", cache.meta["build"]["num_workers"], flush=True)
"""


def test_pool_from_a_plain_script_without_main_guard_finishes_with_the_right_features(tmp_path, corpus):
    m, csv = corpus
    script = tmp_path / "plain_script.py"
    script.write_text(PLAIN_SCRIPT)
    out = [tmp_path / "direct.npy", tmp_path / "cached.npy"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        done = subprocess.run([sys.executable, str(script), str(csv), str(tmp_path / "cache"), *map(str, out)],
                              env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the plain script hung (no result after 120 s): {e.stderr}")
    assert done.returncode == 0 and done.stdout.strip() == "finished 2", done.stderr
    expected = _engine_values([c.path for c in m])
    np.testing.assert_array_equal(np.load(out[0]), expected)
    np.testing.assert_array_equal(np.load(out[1]), expected)  # the cache holds the clips in manifest order


def test_overlapped_build_writes_both_caches_identical_to_sequential_ones(tmp_path, tiny, corpus):
    m, _ = corpus
    specs = {"ssl": ssl_spec(tiny), "egemaps": EGEMAPS}
    seconds: dict[str, float] = {}
    both = get_features_many(m, specs, tmp_path / "overlapped", device="cpu", progress=False, seconds=seconds)
    apart = get_features_many(m, specs, tmp_path / "sequential", device="cpu", progress=False, overlap=False)
    assert set(seconds) == {"ssl", "egemaps"}
    assert both["egemaps"].meta["build"]["overlapped"] and not apart["egemaps"].meta["build"]["overlapped"]
    for key in specs:
        a, b = both[key], apart[key]
        assert (a.path / META_FILE).is_file() and (b.path / META_FILE).is_file()
        assert a.path.name == b.path.name and a.num_clips == b.num_clips == len(m)
        for i in range(len(m)):
            np.testing.assert_array_equal(a.read(i), b.read(i), err_msg=f"{key} clip {i}")
    np.testing.assert_array_equal(np.concatenate(both["egemaps"].read_many(range(len(m)))),
                                  _engine_values([c.path for c in m]))
    again = get_features_many(m, specs, tmp_path / "overlapped", device="cpu", progress=False)  # opened
    assert all(again[k].path == both[k].path for k in specs)


@linux_only
def test_a_failure_beside_the_background_build_stops_its_workers_at_once(tmp_path, tiny, corpus):
    m, _ = corpus
    broken = {**ssl_spec(tiny), "backbone": str(tmp_path / "no-such-backbone")}
    before = set(_children_of(os.getpid()))  # processes other tests (or pytest plugins) may have left running
    start = time.monotonic()
    with pytest.raises(Exception, match="no-such-backbone"):
        get_features_many(m, {"ssl": broken, "egemaps": EGEMAPS}, tmp_path / "cache", device="cpu", progress=False)
    assert time.monotonic() - start < 30
    deadline = time.monotonic() + 5
    while set(_children_of(os.getpid())) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(_children_of(os.getpid())) - before == set()  # no openSMILE worker of this build left behind
    assert not list((tmp_path / "cache").rglob(META_FILE))


OVERLAP_SCRIPT = """
import sys
from wav2emo.data.manifest import Manifest
from wav2emo.features.overlap import get_features_many
m = Manifest.from_csv(sys.argv[1], name="toy")
ssl = {"kind": "ssl_hidden_states", "name": "tiny", "backbone": sys.argv[3], "batch_size": 4, "num_workers": 1,
       "durable": False}
eg = {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False, "shard_mb": 0.0005}
get_features_many(m, {"ssl": ssl, "egemaps": eg}, sys.argv[2], device="cpu", progress=False)
print("finished", flush=True)
"""


@linux_only
def test_ctrl_c_stops_an_overlapped_extraction_and_leaves_no_process(tmp_path, tiny):
    root = tmp_path / "many"
    m = make_manifest(root / "audio", [16000 + 37 * i for i in range(60)])
    m.to_csv(root / "m.csv")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", OVERLAP_SCRIPT, str(root / "m.csv"), str(tmp_path / "cache"),
                             str(tiny)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((tmp_path / "cache").rglob("eg-*/shard-*.npy")):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"no eGeMAPS shard appeared: {proc.stderr.read() if proc.poll() is not None else ''}")
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGINT)
        start = time.monotonic()
        proc.wait(timeout=30)
        stopped_s = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode != 0 and "finished" not in proc.stdout.read(), ("not interrupted", err)
    assert stopped_s < 15, (stopped_s, err)
    deadline = time.monotonic() + 5
    while _group_members(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _group_members(proc.pid) == [], ("worker processes outlived the interrupted extraction", err)


def test_overlap_setting_is_checked(tmp_path, corpus):
    from wav2emo.errors import ConfigError

    with pytest.raises(ConfigError, match="overlap='yes'; expected true or false"):
        get_features_many(corpus[0], {"egemaps": EGEMAPS}, tmp_path, overlap="yes")
