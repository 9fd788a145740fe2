"""Cached copies with their eGeMAPS computed while the copies are made (wav2emo.augment.copy_features): the same
copies, caches and values as copies first and features from the files afterwards; a failure in either stage
leaves nothing that later opens as complete."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import wav2emo.augment.copies as copies
import wav2emo.augment.copy_features as copy_features
from tests.test_copies_threads import tiny_train
from wav2emo.augment import build_augment
from wav2emo.features.cache.format import META_FILE
from wav2emo.features.offered import offer_key, offering, offers_for

pytest.importorskip("opensmile")

AUG = {"name": "noisegain", "mode": "cached", "copies": 2, "wave": {"noise": {"p": 1.0}, "gain": {"p": 1.0}}}
EGEMAPS = {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False}


def ssl_spec(tiny) -> dict:
    return {"kind": "ssl_hidden_states", "name": "tiny", "backbone": str(tiny), "batch_size": 4, "num_workers": 2,
            "durable": False}


def build(train, cache: Path, specs: dict, overlap: bool, monkeypatch) -> tuple:
    monkeypatch.setattr(copy_features.SETTINGS, "overlap", overlap)
    return copy_features.copies_with_features(train, build_augment(AUG), 7, cache, specs, extraction_device="cpu")


def values(cache) -> list[np.ndarray]:
    return [np.asarray(cache.read(i), dtype=np.float32) for i in range(cache.num_clips)]


def test_overlapped_copies_give_the_sequential_copies_caches_and_values(tmp_path, tiny, monkeypatch):
    from wav2emo.data.audio import load_audio
    from wav2emo.features.overlap import get_features_many

    train = tiny_train(tmp_path)
    specs = {"egemaps": EGEMAPS, "ssl": ssl_spec(tiny)}
    m0, _ = build(train, tmp_path / "sequential", {}, False, monkeypatch)
    m1, c1 = build(train, tmp_path / "overlapped", specs, True, monkeypatch)
    assert [(c.clip_id, c.num_frames) for c in m0] == [(c.clip_id, c.num_frames) for c in m1]
    for a, b in zip(m0, m1, strict=True):  # the same samples (the files' headers carry their write time)
        np.testing.assert_array_equal(load_audio(a.path), load_audio(b.path))
    # The caches extracted from the written files of the same copies: same keys, same values.
    c0 = get_features_many(m1, specs, tmp_path / "from-files", device="cpu", progress=False)
    for name in specs:
        assert c0[name].key == c1[name].key
        assert Path(c0[name].path).relative_to(tmp_path / "from-files") == Path(c1[name].path).relative_to(
            tmp_path / "overlapped")
        for a, b in zip(values(c0[name]), values(c1[name]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    meta = json.loads((Path(c1["egemaps"].path) / META_FILE).read_text())
    assert meta["build"]["clips_from_memory"] == len(m1)  # every copy's eGeMAPS came from the samples in memory
    assert json.loads((Path(c0["egemaps"].path) / META_FILE).read_text())["build"]["clips_from_memory"] == 0
    # A second run opens the copies and both caches from disk, starting no openSMILE worker at all.
    def no_pool(*a, **k):
        raise AssertionError("an openSMILE pool was started for copies that were already on disk")

    monkeypatch.setattr("wav2emo.features.smile_waves.SmileWavePool", no_pool)
    again, caches = build(train, tmp_path / "overlapped", specs, True, monkeypatch)
    assert [c.sha1 for c in again] == [c.sha1 for c in m1] and caches["egemaps"].key == c1["egemaps"].key


def test_offers_match_only_their_settings_and_files():
    from concurrent.futures import Future

    fut: Future = Future()
    fut.set_result(np.ones((1, 88), np.float32))
    what = offer_key({"feature_set": "eGeMAPSv02", "feature_level": "functionals"})
    other = offer_key({"feature_set": "eGeMAPSv01b", "feature_level": "functionals"})
    with offering(what, {"abc": fut}):
        assert offers_for(what, ["abc", "def"], [0, 1]) == {0: fut}
        assert offers_for(other, ["abc"], [0]) == {}
    assert offers_for(what, ["abc"], [0]) == {}  # gone after the block


def test_a_failed_offer_is_computed_from_its_file(tmp_path, monkeypatch):
    """Offers that fail (a worker died) fall back to the files: same values as a plain build."""
    from concurrent.futures import Future

    from wav2emo.features import get_features

    train = tiny_train(tmp_path)
    monkeypatch.setattr(copy_features.SETTINGS, "overlap", False)
    m = copies.make_copies(train, build_augment(AUG), 7, tmp_path / "c")
    plain = get_features(m, EGEMAPS, tmp_path / "plain", progress=False)
    failed: Future = Future()
    failed.set_exception(RuntimeError("worker died"))
    spec = {**EGEMAPS, "num_workers": 1}
    from wav2emo.features import make_kind

    what = offer_key(make_kind(spec).key_fields())
    with offering(what, {c.sha1: failed for c in m}):
        cache = get_features(m, spec, tmp_path / "fallback", progress=False)
    for a, b in zip(values(plain), values(cache), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    assert json.loads((Path(cache.path) / META_FILE).read_text())["build"]["clips_from_memory"] == 0


def test_a_failure_while_copies_are_made_leaves_nothing_complete(tmp_path, monkeypatch):
    train = tiny_train(tmp_path)
    aug = build_augment(AUG)
    monkeypatch.setattr(copy_features.SETTINGS, "overlap", True)
    real = copies.load_audio

    def failing_load(path, *a, **k):  # decoding fails in the second group of clips
        if Path(path).name == "c09.wav":
            raise RuntimeError("decoding failed")
        return real(path, *a, **k)

    monkeypatch.setattr(copies, "load_audio", failing_load)
    with pytest.raises(RuntimeError, match="decoding failed"):
        copy_features.copies_with_features(train, aug, 7, tmp_path / "cache", {"egemaps": EGEMAPS})
    monkeypatch.setattr(copies, "load_audio", real)
    folder = copies.copies_dir(tmp_path / "cache", train, aug, 7)
    assert not (folder / copies.META).exists()  # unfinished copies: rebuilt next time
    assert not list((tmp_path / "cache").glob(f"*/*/{META_FILE}"))  # no feature cache at all
    m, caches = copy_features.copies_with_features(train, aug, 7, tmp_path / "cache", {"egemaps": EGEMAPS})
    assert len(m) == 2 * len(train) and caches["egemaps"].num_clips == len(m)


def test_a_failure_in_the_feature_stage_leaves_no_complete_cache(tmp_path, monkeypatch):
    """openSMILE refusing a copy (NaN) fails the eGeMAPS build: no meta.json, so nothing opens as complete."""
    from concurrent.futures import Future

    train = tiny_train(tmp_path)
    monkeypatch.setattr(copy_features.SETTINGS, "overlap", True)
    from wav2emo.features.offered import offers_for as real_offers_for

    def nan_offers(*a, **k):
        offers = real_offers_for(*a, **k)
        first = next(iter(offers))
        bad: Future = Future()
        bad.set_result(np.full_like(offers[first].result(), np.nan))  # a NaN value reaches the build's checks
        return {**offers, first: bad}

    monkeypatch.setattr("wav2emo.features.egemaps.offers_for", nan_offers)
    from wav2emo.features.egemaps import EgemapsError

    with pytest.raises(EgemapsError, match="NaN"):
        copy_features.copies_with_features(train, build_augment(AUG), 7, tmp_path / "cache", {"egemaps": EGEMAPS})
    assert not list((tmp_path / "cache").glob(f"*/*/{META_FILE}"))
