"""Backbone-free features: eGeMAPSv02 functionals and LLDs through openSMILE, and log-mel spectrograms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_cache import make_manifest
from wav2emo.data.audio import load_audio
from wav2emo.features import get_features
from wav2emo.features.egemaps import EgemapsError, compute_egemaps
from wav2emo.features.limits import ClipDurationError
from wav2emo.features.logmel import LogMel

pytest.importorskip("opensmile")

SAMPLES = [16000, 47040, 59200, 84351]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    return make_manifest(tmp_path_factory.mktemp("audio"), SAMPLES)


def test_functionals_are_88_finite_float32_values_per_clip(tmp_path, toy):
    spec = {"kind": "egemaps_functionals", "name": "egemaps", "feature_set": "eGeMAPSv02", "durable": False}
    cache = get_features(toy, spec, tmp_path / "cache", progress=False)
    assert cache.feature_shape == (88,) and cache.dtype == np.float32 and cache.frame_rate is None
    assert cache.lengths.tolist() == [1] * len(toy)
    names = cache.feature_names
    assert len(names) == 88 and names[0] == "F0semitoneFrom27.5Hz_sma3nz_amean"
    values = np.concatenate(cache.read_many(range(len(toy))))
    assert np.isfinite(values).all() and values.std(axis=0).max() > 0
    # Matches openSMILE called directly on the same audio.
    import opensmile

    smile = opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, opensmile.FeatureLevel.Functionals)
    direct = smile.process_signal(load_audio(toy[2].path), 16000).to_numpy()[0]
    np.testing.assert_allclose(cache.read(2)[0], direct, rtol=1e-6)
    assert cache.meta["opensmile"]["feature_set"] == "eGeMAPSv02"


def test_llds_are_25_per_10ms_frame(tmp_path, toy):
    cache = get_features(toy, {"kind": "egemaps_lld", "name": "lld", "durable": False}, tmp_path / "cache", progress=False)
    assert cache.feature_shape == (25,) and cache.frame_rate == 100.0 and len(cache.feature_names) == 25
    # openSMILE's eGeMAPS LLDs: 60 ms windows every 10 ms.
    assert cache.lengths.tolist() == [(n - 800) // 160 + 1 for n in SAMPLES]
    assert all(np.isfinite(cache.read(i)).all() for i in range(len(toy)))


def test_too_short_clip_is_refused_before_any_extraction(tmp_path, monkeypatch):
    """A 25 ms clip (openSMILE would fill it with NaN) is named up front, from the manifest's durations:
    openSMILE never runs, for the short clip or any other."""
    import wav2emo.features.egemaps as eg

    m = make_manifest(tmp_path / "a", [30000, 400, 959, 960])
    monkeypatch.setattr(eg, "_process_path", lambda p: pytest.fail("openSMILE ran before the duration check"))
    for kind in ("egemaps_functionals", "egemaps_lld"):
        with pytest.raises(ClipDurationError) as err:
            get_features(m, {"kind": kind, "name": "egemaps"}, tmp_path / "cache", progress=False)
        msg = str(err.value)
        assert "2 clip(s) shorter than the 0.06 s" in msg and "clip001 (0.0250 s" in msg and "clip002 (0.0599 s" in msg
        assert "clip003" not in msg and "clip000" not in msg and "NaN" in msg
    assert not list((tmp_path / "cache").rglob("*.npy*"))


def test_nan_from_opensmile_is_reported_not_stored(tmp_path, monkeypatch):
    import wav2emo.features.egemaps as eg

    m = make_manifest(tmp_path / "a", [30000, 20000, 25000])
    real = eg._process_path

    def nan_for_second(path):
        out = real(path).copy()
        if path.endswith("clip001.wav"):
            out[0, 3] = np.nan
        return out

    monkeypatch.setattr(eg, "_process_path", nan_for_second)
    spec = {"kind": "egemaps_functionals", "name": "egemaps"}
    with pytest.raises(EgemapsError, match=r"1 clip\(s\).*clip001: \['F0semitoneFrom27.5Hz_sma3nz_percentile50.0'\]"):
        get_features(m, spec, tmp_path / "cache", progress=False)
    assert not list((tmp_path / "cache").rglob("meta.json"))


def test_process_pool_gives_the_same_values(toy):
    paths = [c.path for c in toy]
    serial = compute_egemaps(paths, num_workers=1)
    pooled = compute_egemaps(paths, num_workers=2)
    assert all(np.array_equal(a, b) for a, b in zip(serial, pooled, strict=True))


def test_unknown_feature_set_is_an_error(tmp_path, toy):
    with pytest.raises(EgemapsError, match="feature_set='eGeMAPSv99'"):
        get_features(toy, {"kind": "egemaps_functionals", "name": "e", "feature_set": "eGeMAPSv99"}, tmp_path)


# Log-mel ------------------------------------------------------------------------------------------------------
def test_logmel_shapes_and_values(tmp_path, toy):
    spec = {"kind": "logmel", "name": "logmel64", "durable": False}
    cache = get_features(toy, spec, tmp_path / "cache", progress=False)
    assert cache.feature_shape == (64,) and cache.dtype == np.float32 and cache.frame_rate == 100.0
    assert cache.lengths.tolist() == [(n - 400) // 160 + 1 for n in SAMPLES]  # 25 ms window, 10 ms hop
    import torchaudio

    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=400, win_length=400, hop_length=160, n_mels=64,
                                               center=False)(torch.from_numpy(load_audio(toy[1].path)))
    np.testing.assert_allclose(cache.read(1), torch.log(mel.clamp(min=1e-6)).T.numpy(), rtol=1e-5, atol=1e-5)
    assert cache.read(1).min() >= np.log(1e-6) - 1e-6


def test_logmel_options_and_short_audio():
    lm = LogMel({"kind": "logmel", "name": "x", "n_mels": 40, "hop_ms": 20.0, "center": True})
    out = lm.compute(np.zeros(8000, np.float32))
    assert out.shape == (8000 // 320 + 1, 40) and np.allclose(out, np.log(1e-6))  # silence sits on the floor
    with pytest.raises(ValueError, match="shorter than one 400-sample"):
        LogMel({"kind": "logmel", "name": "x"}).compute(np.zeros(399, np.float32))


@pytest.mark.ravdess
def test_real_ravdess_with_one_tiny_clip_is_refused_at_once(ravdess_dir, tmp_path, monkeypatch):
    """The tester's case: a full RAVDESS copy with one 0.05 s clip.  The error names that clip before
    openSMILE touches any of the 1441 files (it used to come after a full ~50 s pass)."""
    import dataclasses
    import time

    import wav2emo.features.egemaps as eg
    from tests.test_cache import write_clip
    from wav2emo.data.manifest import Manifest, sha1_of_file
    from wav2emo.data.ravdess import prepare_ravdess

    real = prepare_ravdess(ravdess_dir)
    tiny = write_clip(tmp_path / "03-01-05-01-01-01-01.wav", 800)
    broken = dataclasses.replace(real[0], clip_id="broken-0.05s", path=str(tiny), duration=0.05, num_frames=800,
                                 sha1=sha1_of_file(tiny))
    m = Manifest([*real, broken], name="ravdess-with-a-broken-clip")
    monkeypatch.setattr(eg, "_process_path", lambda p: pytest.fail("openSMILE ran before the duration check"))
    start = time.perf_counter()
    with pytest.raises(ClipDurationError, match=r"1 clip\(s\) shorter than the 0.06 s.*broken-0.05s \(0.0500 s"):
        get_features(m, {"kind": "egemaps_functionals", "name": "egemaps"}, tmp_path / "cache", progress=False)
    assert time.perf_counter() - start < 5
