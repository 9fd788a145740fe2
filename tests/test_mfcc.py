"""MFCC statistics (feature kind ``mfcc_stats``): values vs torchaudio called directly, caching, the baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.test_cache import make_manifest
from wav2emo.data.audio import load_audio
from wav2emo.features import feature_cache_path, get_features
from wav2emo.features.limits import ClipDurationError
from wav2emo.features.mfcc import MfccStats

SAMPLES = [16000, 47040, 9000, 84351]
SPEC = {"kind": "mfcc_stats", "name": "mfcc40-stats", "durable": False}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("audio"), SAMPLES)


def direct_mfcc(wave: np.ndarray, **kw) -> np.ndarray:
    """torchaudio's MFCC with the documented parameters, (T, n_mfcc)."""
    import torchaudio

    t = torchaudio.transforms.MFCC(
        sample_rate=16000, n_mfcc=kw.get("n_mfcc", 40), dct_type=2, norm="ortho", log_mels=False,
        melkwargs={"n_fft": 400, "win_length": 400, "hop_length": 160, "n_mels": kw.get("n_mels", 64),
                   "center": False, "power": 2.0})
    return t(torch.from_numpy(wave)).T.double().numpy()


def test_mfcc_stats_are_means_then_stds_of_torchaudio_mfccs(tmp_path, toy):
    cache = get_features(toy, SPEC, tmp_path / "cache", progress=False)
    assert cache.feature_shape == (80,) and cache.dtype == np.float32 and cache.lengths.tolist() == [1] * 4
    assert cache.feature_names[:2] == ["mfcc0_mean", "mfcc1_mean"] and cache.feature_names[40] == "mfcc0_std"
    for i, n in enumerate(SAMPLES):
        m = direct_mfcc(load_audio(toy[i].path))
        assert m.shape == ((n - 400) // 160 + 1, 40)
        row = cache.read(i)[0]
        np.testing.assert_allclose(row[:40], m.mean(0), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(row[40:], m.std(0), rtol=1e-4, atol=1e-3)
        assert (row[40:] > 0).all()
    # Different clips give different vectors (nothing constant, nothing shared between rows).
    rows = np.concatenate(cache.read_many(range(4)))
    assert np.isfinite(rows).all() and rows.std(axis=0).min() > 0


def test_mfcc_options_change_the_numbers_and_the_cache_key(toy, tmp_path):
    a = MfccStats({**SPEC, "n_mfcc": 13, "n_mels": 40})
    wave = load_audio(toy[1].path)
    out = a.compute(wave)
    m = direct_mfcc(wave, n_mfcc=13, n_mels=40)
    assert out.shape == (1, 26)
    np.testing.assert_allclose(out[0], np.concatenate([m.mean(0), m.std(0)]), rtol=1e-4, atol=1e-3)
    p40 = feature_cache_path(toy, SPEC, tmp_path)
    p13 = feature_cache_path(toy, {**SPEC, "n_mfcc": 13, "n_mels": 40}, tmp_path)
    assert p40 != p13
    # Fields that do not change the numbers stay out of the key.
    assert feature_cache_path(toy, {**SPEC, "num_workers": 2, "shard_mb": 1.0}, tmp_path) == p40


def test_bad_specs_and_short_audio_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown fields.*n_mfccs"):
        MfccStats({**SPEC, "n_mfccs": 40})
    with pytest.raises(ValueError, match="n_mfcc <= n_mels"):
        MfccStats({**SPEC, "n_mfcc": 80, "n_mels": 64})
    with pytest.raises(ValueError, match="shorter than one 400-sample"):
        MfccStats(SPEC).compute(np.zeros(399, np.float32))
    short = make_manifest(tmp_path / "short", [16000, 300])
    with pytest.raises(ClipDurationError, match="clip001"):
        get_features(short, SPEC, tmp_path / "cache", progress=False)


def test_cache_is_reused_not_recomputed(tmp_path, toy, monkeypatch):
    first = get_features(toy, SPEC, tmp_path / "cache", progress=False)
    values = np.concatenate(first.read_many(range(4)))

    def fail(*a, **k):
        raise AssertionError("MFCCs recomputed although the cache was finished")

    monkeypatch.setattr(MfccStats, "compute", fail)
    again = get_features(toy, SPEC, tmp_path / "cache", progress=False)
    assert again.path == first.path
    np.testing.assert_array_equal(np.concatenate(again.read_many(range(4))), values)
    assert json.loads((first.path / "meta.json").read_text())["kind"] == "mfcc_stats"


def test_baselines_run_over_mfcc_features(tmp_path, baseline_dirs):
    """``python -m wav2emo.baselines model=logreg features=mfcc`` on the synthetic corpus: one fold."""
    from tests.test_baselines import baseline_cfg
    from wav2emo.baselines.runner import run_baselines

    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=logreg", "features=mfcc", "fold=0")
    run_baselines(cfg)
    r = json.loads((tmp_path / "fold_0" / "fold_result.json").read_text())
    assert r["protocol"]["feature"] == "mfcc" and r["protocol"]["feature_kind"] == "mfcc_stats"
    assert r["protocol"]["feature_normalization"] is None
    assert list(r["split"]["caches"]) == ["mfcc"] and "mfcc40-stats" in r["split"]["caches"]["mfcc"]
    assert r["test_clips"] == 40 and set(r["test"]) == {"wa", "ua", "f1"}


@pytest.fixture
def baseline_dirs(tmp_path_factory):
    from tests.test_sklearn_train import shared_dirs

    return shared_dirs(tmp_path_factory)
