"""load_audio: down-mixing, resampling, and loud failures that name the file."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from wav2emo.data.audio import AudioError, audio_info, load_audio


def test_stereo_is_downmixed_to_the_channel_mean(tmp_path):
    n = 16000
    left = np.full(n, 0.5, dtype=np.float32)
    right = np.linspace(-0.25, 0.25, n, dtype=np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    assert audio_info(path) == (16000, 2, n)
    y = load_audio(path)
    assert y.ndim == 1 and y.dtype == np.float32 and y.shape == (n,)
    np.testing.assert_allclose(y, (left + right) / 2, atol=1e-7)
    assert y.mean() == pytest.approx(0.25, abs=1e-6)


@pytest.mark.parametrize("sr", [44100, 8000, 48000])
def test_resampling_to_16k_keeps_length_and_pitch(tmp_path, sr):
    seconds, freq = 1.5, 440.0
    t = np.arange(int(seconds * sr)) / sr
    path = tmp_path / f"tone{sr}.flac"
    sf.write(path, 0.5 * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")
    y = load_audio(path)
    assert y.dtype == np.float32
    assert abs(len(y) - round(len(t) * 16000 / sr)) <= 1
    spectrum = np.abs(np.fft.rfft(y * np.hanning(len(y))))
    peak_hz = np.argmax(spectrum) * 16000 / len(y)
    assert peak_hz == pytest.approx(freq, abs=2.0)
    assert np.sqrt(np.mean(y[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_load_at_native_rate_is_unchanged(tmp_path):
    x = (np.random.default_rng(0).standard_normal(4000) * 0.1).astype(np.float32)
    path = tmp_path / "x.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path), x)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(path, np.zeros(0, dtype=np.float32), 16000)
    with pytest.raises(AudioError, match=r"empty\.wav.*no samples"):
        load_audio(path)


def test_nan_samples_are_refused(tmp_path):
    x = np.zeros(1000, dtype=np.float32)
    x[10] = np.nan
    x[20] = np.inf
    path = tmp_path / "nan.wav"
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: 2 samples are NaN or infinite"):
        load_audio(path)


@pytest.mark.parametrize("name", ["notes.flac", "notes.wav"])
def test_text_file_with_audio_extension_is_refused(tmp_path, name):
    path = tmp_path / name
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError, match=rf"{name}: cannot be read as audio"):
        load_audio(path)
    with pytest.raises(AudioError, match=name):
        audio_info(path)


def test_truncated_flac_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "cut.flac"
    sf.write(path, rng.standard_normal(32000) * 0.1, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(AudioError, match=r"cut\.flac"):
        load_audio(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(AudioError, match=r"nowhere\.wav"):
        load_audio(tmp_path / "nowhere.wav")


def test_truncated_wav_is_refused(tmp_path):
    """libsndfile would silently return the shorter audio; load_audio must not."""
    path = tmp_path / "cut.wav"
    sf.write(path, np.random.default_rng(2).standard_normal(32000) * 0.1, 16000, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated WAV"):
        load_audio(path)
    with pytest.raises(AudioError, match=r"cut\.wav: truncated WAV"):
        audio_info(path)
