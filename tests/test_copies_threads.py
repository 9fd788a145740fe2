"""Cached augmentation copies written by worker threads are the files and meta the one-thread way writes."""

from __future__ import annotations

import json

import numpy as np
import soundfile as sf

import wav2emo.augment.copies as copies
from wav2emo.augment import build_augment
from wav2emo.data.manifest import Clip, Manifest, sha1_of_file


def tiny_train(tmp_path, n: int = 11) -> Manifest:
    rng = np.random.default_rng(0)
    clips = []
    for i in range(n):
        path = tmp_path / "audio" / f"c{i:02d}.wav"
        path.parent.mkdir(exist_ok=True)
        wave = (0.1 * rng.standard_normal(4000 + 300 * i)).astype(np.float32)
        sf.write(path, wave, 16000, subtype="FLOAT")
        clips.append(Clip(clip_id=f"c{i:02d}", path=str(path), corpus="toy", actor=1 + i % 3, gender="female",
                          emotion="neutral", label=0, intensity=1, statement=1, repetition=1,
                          duration=len(wave) / 16000, sample_rate=16000, channels=1, num_frames=len(wave),
                          sha1=sha1_of_file(path)))
    return Manifest(clips, name="tiny-train", class_names=("neutral",))


def test_threaded_copies_equal_the_one_thread_way(tmp_path, monkeypatch):
    train = tiny_train(tmp_path)
    aug = build_augment({"name": "noisegain", "mode": "cached", "copies": 2,
                         "wave": {"noise": {"p": 1.0}, "gain": {"p": 1.0}}})
    metas, files = [], []
    for threads in (0, 3, 1):
        monkeypatch.setattr(copies, "THREADS", threads)
        cache = tmp_path / f"cache{threads}"
        m = copies.make_copies(train, aug, 7, cache)
        folder = copies.copies_dir(cache, train, aug, 7)
        rows = json.loads((folder / copies.META).read_text())["clips"]
        assert all(sha1 == sha1_of_file(folder / "audio" / f"{cid}.wav") for cid, sha1, _ in rows)
        metas.append([[cid, frames] for cid, _, frames in rows])
        files.append({p.name: p.read_bytes() for p in sorted((folder / "audio").iterdir())})
        assert len(m) == 2 * len(train)
    assert metas[0] == metas[1] == metas[2]
    assert files[0] == files[1] == files[2]
    assert [row[0] for row in metas[0]][:2] == ["c00~aug1", "c01~aug1"]  # copy 1 of every clip, then copy 2


def test_a_copy_file_is_its_samples_alone(tmp_path):
    """The copies' float WAVs hold the samples exactly and nothing that changes between builds (libsndfile's
    writer put the time of writing into a PEAK chunk, so a rebuilt copy's sha1, and its features' cache key,
    changed), and every WAV reader takes them."""
    wave = np.random.default_rng(1).standard_normal(1001).astype(np.float32)
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    copies._write_wav(a, wave, 16000)
    copies._write_wav(b, wave.copy(), 16000)
    assert a.read_bytes() == b.read_bytes() and b"PEAK" not in a.read_bytes()
    info = sf.info(str(a))
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "FLOAT", 16000, 1, 1001)
    back, sr = sf.read(str(a), dtype="float32")
    assert sr == 16000 and np.array_equal(back, wave)
    from scipy.io import wavfile

    rate, data = wavfile.read(str(a))
    assert rate == 16000 and data.dtype == np.float32 and np.array_equal(data, wave)
