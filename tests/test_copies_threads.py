"""Cached augmentation copies written by worker threads are the files and meta the one-thread way writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

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


STANDARD = {"pitch": {"p": 1.0}, "speed": {"p": 1.0}, "noise": {"p": 1.0}, "gain": {"p": 1.0}}


def _build(tmp_path, train, aug, name) -> tuple[list, dict]:
    cache = tmp_path / name
    m = copies.make_copies(train, aug, 7, cache)
    folder = copies.copies_dir(cache, train, aug, 7)
    rows = json.loads((folder / copies.META).read_text())["clips"]
    assert all(sha1 == sha1_of_file(folder / "audio" / f"{cid}.wav") for cid, sha1, _ in rows)
    assert len(m) == aug.copies * len(train)
    return [[cid, frames] for cid, _, frames in rows], {p.name: p.read_bytes() for p in sorted((folder / "audio").iterdir())}


@pytest.mark.parametrize("wave", [{"noise": {"p": 1.0}, "gain": {"p": 1.0}}, STANDARD], ids=["noise-gain", "standard"])
def test_threaded_copies_equal_the_one_thread_way(tmp_path, monkeypatch, wave):
    """On the CPU each worker thread makes whole groups (all K copies of a group): the files, their order and the
    meta are those of the calling thread alone (THREADS = 0), whatever the number of threads."""
    train = tiny_train(tmp_path)
    aug = build_augment({"name": "standard", "mode": "cached", "copies": 2, "wave": wave})
    built = []
    for threads in (0, 3, 1, None):
        monkeypatch.setattr(copies, "THREADS", threads)
        built.append(_build(tmp_path, train, aug, f"cache{threads}"))
    assert all(b == built[0] for b in built[1:])
    assert [row[0] for row in built[0][0]][:2] == ["c00~aug1", "c01~aug1"]  # copy 1 of every clip, then copy 2


def test_cpu_copies_do_not_depend_on_torchs_thread_count(tmp_path, monkeypatch):
    """torch's pitch shift and resampling add in another order with more threads (their last bits change): the
    copies run with one torch thread, so a machine with more cores makes the same files (and feature caches), and
    the caller's thread count is given back."""
    train = tiny_train(tmp_path, n=24)
    aug = build_augment({"name": "standard", "mode": "cached", "copies": 2, "wave": STANDARD})
    monkeypatch.setattr(copies, "THREADS", 0)
    before = torch.get_num_threads()
    built = []
    try:
        for n in (1, 2, 3, 4):
            torch.set_num_threads(n)
            built.append(_build(tmp_path, train, aug, f"torch{n}"))
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(before)
    assert all(b == built[0] for b in built[1:])


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


def test_copies_made_on_another_device_are_keyed_apart(tmp_path):
    """A GPU draws other random numbers than the CPU for the same seed: its copies never open the CPU's folder."""
    train = tiny_train(tmp_path, n=3)
    aug = build_augment({"name": "standard", "mode": "cached", "copies": 1, "wave": STANDARD})
    cpu, cuda = (copies.copies_key(train, aug, 7, 16000, device)[0] for device in ("cpu", "cuda"))
    assert cpu != cuda and copies.copies_key(train, aug, 7, 16000)[0] == cpu
    assert copies.copies_dir(tmp_path, train, aug, 7) != copies.copies_dir(tmp_path, train, aug, 7, device="cuda:0")
