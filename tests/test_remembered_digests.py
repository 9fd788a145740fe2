"""A local backbone's weights are hashed once per version of the files, not on every run (wav2emo/files.py)."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from wav2emo import files
from wav2emo.files import digests_remembered_in, remembered_digest


@pytest.fixture
def fresh_process(monkeypatch):
    """A new process's memory (nothing remembered in it), and a count of the files actually read."""
    monkeypatch.setattr(files, "_DIGESTS", {})
    reads: list[str] = []
    real = files.file_digest

    def counting(path, algorithm="sha1", block=1 << 20):
        reads.append(os.path.basename(path))
        return real(path, algorithm, block)

    monkeypatch.setattr(files, "file_digest", counting)
    return reads


def new_process(monkeypatch):
    monkeypatch.setattr(files, "_DIGESTS", {})


def test_a_digest_is_read_once_a_process_and_once_across_processes_with_a_memo(tmp_path, fresh_process, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(os.urandom(50_000))
    want = hashlib.sha256(weights.read_bytes()).hexdigest()
    memo = tmp_path / "cache" / "file_digests.json"
    with digests_remembered_in(memo):
        assert remembered_digest(weights) == want and remembered_digest(weights) == want
    assert fresh_process == ["model.safetensors"]  # once in the process
    assert json.loads(memo.read_text())  # written for the next process
    new_process(monkeypatch)
    with digests_remembered_in(memo):
        assert remembered_digest(weights) == want
    assert fresh_process == ["model.safetensors"]  # the next process read the memo, not the weights
    new_process(monkeypatch)
    assert remembered_digest(weights) == want  # without the memo: hashed again
    assert fresh_process == ["model.safetensors"] * 2


def test_new_bytes_under_the_old_size_and_mtime_are_hashed_again(tmp_path, fresh_process, monkeypatch):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"a" * 1000)
    memo = tmp_path / "file_digests.json"
    with digests_remembered_in(memo):
        old = remembered_digest(weights)
    st = weights.stat()
    weights.write_bytes(b"b" * 1000)  # same size; its mtime set back: only ctime (and the bytes) tell
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    new_process(monkeypatch)
    with digests_remembered_in(memo):
        new = remembered_digest(weights)
    assert new == hashlib.sha256(b"b" * 1000).hexdigest() != old
    assert len(fresh_process) == 2
    assert len(json.loads(memo.read_text())) == 1  # the old version's entry was dropped


def test_a_damaged_or_unwritable_memo_only_costs_the_hashing(tmp_path, fresh_process, monkeypatch):
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"x" * 100)
    memo = tmp_path / "file_digests.json"
    memo.write_text("{not json")
    with digests_remembered_in(memo):
        assert remembered_digest(weights) == hashlib.sha256(b"x" * 100).hexdigest()
    assert len(json.loads(memo.read_text())) == 1  # replaced by a valid memo
    memo.write_text(json.dumps({"[\"sha256\", \"/gone\", [1, 2, 3, 4]]": "0" * 64, "junk": 3}))
    new_process(monkeypatch)
    with digests_remembered_in(memo):
        remembered_digest(weights)
    assert list(json.loads(memo.read_text()).values()) == [hashlib.sha256(b"x" * 100).hexdigest()]
    blocked = tmp_path / "a_file_not_a_folder"
    blocked.write_text("")
    new_process(monkeypatch)
    with digests_remembered_in(blocked / "file_digests.json"):  # cannot be created: no error
        assert remembered_digest(weights) == hashlib.sha256(b"x" * 100).hexdigest()


def test_the_feature_cache_key_of_a_local_backbone_is_computed_from_the_memo(tmp_path, tiny, fresh_process,
                                                                            monkeypatch):
    from wav2emo.data.manifest import Manifest
    from wav2emo.features import DIGEST_MEMO_FILE, feature_cache_path

    spec = {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tiny), "precision": "fp32", "batch_size": 4,
            "num_workers": 0, "shard_mb": 256, "max_batch_s": 200.0, "max_clip_s": 60.0, "layers": None,
            "time_pooled": False}
    manifest = Manifest([], name="toy")
    first = feature_cache_path(manifest, spec, tmp_path / "cache", device="cpu")
    read = len(fresh_process)
    assert read >= 2 and (tmp_path / "cache" / DIGEST_MEMO_FILE).is_file()  # config and weights
    new_process(monkeypatch)
    assert feature_cache_path(manifest, spec, tmp_path / "cache", device="cpu") == first
    assert len(fresh_process) == read  # nothing hashed again
