"""openSMILE's C API called directly (features/smile_api.py) gives exactly what opensmile.Smile.process_signal
gives, the eGeMAPS cache built through the worker pool holds exactly those values, and a worker starts without
torch or pandas."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from tests.test_cache import make_manifest
from wav2emo.data.audio import load_audio
from wav2emo.features import get_features
from wav2emo.features.egemaps import EgemapsError, compute_egemaps

opensmile = pytest.importorskip("opensmile")

from wav2emo.features import smile_api  # noqa: E402
from wav2emo.features.smile_api import SmileApiError, SmileEngine  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LEVELS = {"functionals": opensmile.FeatureLevel.Functionals, "lld": opensmile.FeatureLevel.LowLevelDescriptors}


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Speech-like clips of 1-4 s, one stereo (load_audio mixes it down first)."""
    root = tmp_path_factory.mktemp("smile")
    mono = make_manifest(root / "mono", [16000, 23457, 47040, 64000])
    stereo = make_manifest(root / "stereo", [30001], channels=2, name="stereo")
    return [c.path for c in mono] + [c.path for c in stereo]


def _wrapper(level: str):
    return opensmile.Smile(opensmile.FeatureSet.eGeMAPSv02, LEVELS[level])


@pytest.mark.filterwarnings("ignore:Segment too short")
@pytest.mark.parametrize("renew_every", [500, 2], ids=["reset-between-clips", "renewed-every-2"])
@pytest.mark.parametrize("level", ["functionals", "lld"])
def test_direct_engine_equals_process_signal_exactly(clips, level, renew_every):
    """Clip after clip through one engine (an openSMILE instance reset between clips, renewed now and then)
    gives what a fresh opensmile.Smile gives each clip, a too-short clip in the middle included."""
    engine, smile = SmileEngine("eGeMAPSv02", level), _wrapper(level)
    engine.RENEW_EVERY = renew_every
    assert engine.direct and engine.feature_names == list(smile.feature_names)
    rng = np.random.default_rng(0)
    waves = [load_audio(p) for p in clips]
    waves[2:2] = [
        np.clip(rng.standard_normal(20000), -1, 1).astype(np.float32),  # full-scale noise, clipped samples
        np.zeros(400, np.float32),  # too short for any frame: a row of NaN
        (0.001 * rng.standard_normal(12000)).astype(np.float32),  # near-silence
    ]
    for wave in waves + waves[::-1]:
        new = engine.process(wave, 16000)
        old = smile.process_signal(wave, 16000).to_numpy()  # what the cache stored before (as float32)
        assert new.dtype == np.float32 and new.shape == old.shape
        np.testing.assert_array_equal(new, old.astype(np.float32))
        np.testing.assert_array_equal(new.astype(np.float64), old)  # openSMILE's values are float32 to begin with


def test_too_short_clip_gives_a_row_of_nan_as_opensmile_python_does():
    out = SmileEngine().process(np.zeros(400, np.float32), 16000)
    assert out.shape == (1, 88) and np.isnan(out).all()
    with pytest.warns(UserWarning, match="too short"):
        assert np.isnan(_wrapper("functionals").process_signal(np.zeros(400, np.float32), 16000).to_numpy()).all()


def test_without_the_c_binding_the_wrapper_gives_the_same_values(clips, monkeypatch):
    """If a future opensmile-python moves its ctypes binding, extraction still works (through Smile)."""
    direct = SmileEngine()
    smile_api._binding.cache_clear()

    def moved():
        raise FileNotFoundError("opensmile/core/lib.py")

    monkeypatch.setattr(smile_api, "_binding", moved)
    fallback = SmileEngine()
    assert not fallback.direct and fallback.feature_names == direct.feature_names
    wave = load_audio(clips[2])
    np.testing.assert_array_equal(fallback.process(wave, 16000), direct.process(wave, 16000))


def test_feature_sets_resolve_without_importing_opensmile_and_unknown_ones_are_named():
    code = ("import sys; from wav2emo.features.smile_api import config_file; p = config_file('eGeMAPSv02'); "
            "assert p.name == 'eGeMAPSv02.conf' and p.is_file(); assert 'opensmile' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert out.stdout.strip() == "ok", out.stderr
    assert smile_api.config_file("eGeMAPS").name == "eGeMAPSv01a.conf"  # a legacy alias, through opensmile.FeatureSet
    with pytest.raises(SmileApiError, match=r"feature_set='eGeMAPSv99'; expected one of \[.*'eGeMAPSv02'"):
        smile_api.config_file("eGeMAPSv99")


def test_a_worker_starts_without_torch_or_pandas(clips):
    """Start-up is what 16 workers pay at once: no torch (seconds), no pandas; ready well under a few seconds."""
    code = ("import sys; from wav2emo.features import egemaps; names = egemaps.init_engine('eGeMAPSv02', 'functionals'); "
            f"x = egemaps._process_path({clips[0]!r}); "
            "heavy = [m for m in ('torch', 'pandas', 'opensmile', 'audinterface') if m in sys.modules]; "
            "print(len(names), x.shape, x.dtype, heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert out.stdout.strip() == "88 (1, 88) float32 []", out.stderr


def test_pooled_cache_holds_exactly_what_process_signal_gives(tmp_path, clips):
    m = make_manifest(tmp_path / "a", [16000 + 997 * i for i in range(6)])
    spec = {"kind": "egemaps_functionals", "name": "eg", "num_workers": 2, "durable": False}
    cache = get_features(m, spec, tmp_path / "cache", progress=False)
    assert cache.meta["build"]["num_workers"] == 2
    smile = _wrapper("functionals")
    for i, clip in enumerate(m):
        old = smile.process_signal(load_audio(clip.path), 16000).to_numpy().astype(np.float32)
        np.testing.assert_array_equal(cache.read(cache.index_of(clip.clip_id)), old, err_msg=clip.clip_id)
        del i


def test_a_worker_error_names_the_file(tmp_path, clips):
    bad = tmp_path / "not-audio.wav"
    bad.write_text("hello")
    with pytest.raises(EgemapsError, match=r"not-audio.wav: openSMILE failed: AudioError: .*cannot be read as audio"):
        compute_egemaps([clips[0], str(bad), clips[1]], num_workers=2)
    with pytest.raises(EgemapsError, match=r"feature_set='eGeMAPSv99'"):
        compute_egemaps(clips[:2], feature_set="eGeMAPSv99", num_workers=2)
