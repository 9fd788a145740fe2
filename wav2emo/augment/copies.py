"""Cached augmentation: K augmented copies of a fold's *training* clips, written once as audio files.

Why audio files: every feature kind (SSL hidden states, eGeMAPS, log-mel, MFCC) already reads its clips
by path through :func:`wav2emo.features.get_features`, so an augmented manifest (clip ids ``<id>~aug<j>``,
j = 1..K, pointing at the augmented audio) goes through the feature cache, its lock, checksums and resume
machinery unchanged.  The copies folder is keyed by the source manifest (the training clips), the
augmentation identity (:meth:`Augmenter.identity`) and the seed; each copy's ``sha1`` is the hash of its
written bytes, so the feature caches of the copies are keyed by the augmented audio itself and a changed
config can never open a wrong cache.

Randomness: copy j of the training clips is made in fixed groups of ``GROUP`` clips (manifest order),
each group with a generator seeded by ``(seed, j, group)``: reproducible per seed, and babble noise
mixes other *training* clips of the group only.  Only the waveform part of the augmenter is applied; its
feature masks (SpecAugment) run online on the copies' features (see ``wav2emo.augment.training``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from wav2emo.augment.compose import Augmenter
from wav2emo.cores import torch_threads, usable_cores
from wav2emo.data.audio import load_audio
from wav2emo.data.manifest import Manifest, sha1_of_file
from wav2emo.errors import ConfigError
from wav2emo.features.cache.format import CacheError, cache_key
from wav2emo.features.lock import build_lock

log = logging.getLogger(__name__)

COPY_SEP = "~aug"
GROUP = 8
# Worker threads (libsndfile, hashlib and torch's operators release the GIL).  On a GPU they decode the next group's
# clips and write and hash the copies while the device augments one group after another; on the CPU each makes whole
# groups (decodes them once, augments all K copies with one torch thread, writes and hashes them), so the groups
# spread over the cores.  None: one per usable core on the CPU, up to 8 beside a GPU.  0: everything in the calling
# thread (the previous way).  The files, their order and the meta are the same either way
# (tests/test_copies_threads.py).
THREADS: int | None = None
META = "copies.json"
# 2: copies on the CPU made with one torch thread (format 1 was made on the GPU when there was one, else with all of
# torch's threads, so its bytes depended on the machine); the device a copy is made on is part of the key.
FORMAT = 2


def copy_id(clip_id: str, j: int) -> str:
    """The clip id of augmented copy ``j`` (1..K) of ``clip_id``."""
    return f"{clip_id}{COPY_SEP}{j}"


def source_id(clip_id: str) -> str:
    """The original clip id of a copy id (an original's id is returned unchanged)."""
    return clip_id.split(COPY_SEP, 1)[0]


def check_cached(augmenter: Augmenter) -> None:
    """Refuse a cached-mode config whose copies would equal the originals (no waveform transform)."""
    if not augmenter.wave.steps:
        raise ConfigError(
            f"augment={augmenter.config.get('name')!r} with augment.mode=cached has no waveform transforms "
            "(augment.wave is empty): its copies would equal the originals; feature masks such as "
            "augment=spec run online - use augment.mode=online"
        )


def copies_key(train: Manifest, augmenter: Augmenter, seed: int, sample_rate: int,
               device: str | torch.device = "cpu") -> tuple[str, dict]:
    fields = {"format": FORMAT, "source": train.content_hash(), "augment": augmenter.identity(),
              "seed": int(seed), "sample_rate": int(sample_rate), "group": GROUP}
    if torch.device(device).type != "cpu":  # another device draws other random numbers: other copies
        fields["device"] = torch.device(device).type
    return cache_key(fields), fields


def copies_dir(cache_dir: str | Path, train: Manifest, augmenter: Augmenter, seed: int,
               sample_rate: int = 16000, device: str | torch.device = "cpu") -> Path:
    key, _ = copies_key(train, augmenter, seed, sample_rate, device)
    name = augmenter.config.get("name") or "augment"
    return Path(cache_dir) / train.name / f"augment-{name}-{key[:16]}"


def _copy_manifest(train: Manifest, folder: Path, key: str, clips: list[list], sample_rate: int) -> Manifest:
    """The augmented manifest: copy 1 of every clip, then copy 2, ... (row = i + N * (j - 1))."""
    by_id = {c.clip_id: c for c in train}
    out = []
    for cid, sha1, frames in clips:
        src = by_id[source_id(cid)]
        out.append(dataclasses.replace(src, clip_id=cid, path=str(folder / "audio" / f"{cid}.wav"), sha1=sha1,
                                       num_frames=int(frames), sample_rate=int(sample_rate), channels=1,
                                       duration=float(frames) / sample_rate))
    return Manifest(out, name=f"{train.name}-aug-{key[:12]}", class_names=train.class_names)


def _open(folder: Path, key: str, train: Manifest) -> Manifest:
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as e:
        raise CacheError(f"{folder / META}: unreadable ({e}); delete the folder {folder} to rebuild the copies") from e
    if meta.get("key") != key:
        raise CacheError(
            f"{folder / META}: these augmented copies belong to another augmentation config or seed "
            f"(key {str(meta.get('key'))[:16]}..., expected {key[:16]}...); they are not used - delete "
            f"{folder} if it is stale"
        )
    return _copy_manifest(train, folder, key, meta["clips"], meta["key_fields"]["sample_rate"])


def float_wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """A mono 32-bit float WAV (``WAVE_FORMAT_IEEE_FLOAT`` with its ``fact`` chunk) of ``wave``: the same samples
    always give the same bytes.  libsndfile's float WAV writer adds a PEAK chunk holding the time of writing, so
    two builds of the same copy hashed differently (and keyed their feature caches differently)."""
    data = np.ascontiguousarray(wave, dtype="<f4").tobytes()  # 4 bytes a sample: never an odd pad byte
    fmt = struct.pack("<HHIIHHH", 3, 1, sample_rate, sample_rate * 4, 4, 32, 0)  # IEEE float, mono, cbSize 0
    body = b"".join([b"WAVE", b"fmt ", struct.pack("<I", len(fmt)), fmt,
                     b"fact", struct.pack("<II", 4, len(data) // 4), b"data", struct.pack("<I", len(data)), data])
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _write_wav(path: Path, wave: np.ndarray, sample_rate: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(float_wav_bytes(wave, sample_rate))
    os.replace(tmp, path)


def _write_and_hash(path: Path, wave: np.ndarray, sample_rate: int) -> str:
    _write_wav(path, wave, sample_rate)
    return sha1_of_file(path)


class _Now:
    """A finished Future's interface for work done in the calling thread (``THREADS = 0``)."""

    def __init__(self, fn, *args) -> None:
        self.value = fn(*args)

    def result(self):
        return self.value


def _threads(device: torch.device) -> int:
    if THREADS is not None:
        return max(0, int(THREADS))
    cores = usable_cores()
    return cores if device.type == "cpu" else min(8, cores)


def _augment(waves: list[np.ndarray], augmenter: Augmenter, seed: int, j: int, g: int,
             device: torch.device) -> list[np.ndarray]:
    """Copy ``j`` of group ``g``: its clips' waves augmented as one batch, with the group's own generator."""
    lengths = torch.tensor([len(w) for w in waves], dtype=torch.long)
    batch = torch.zeros(len(waves), int(lengths.max()))
    for b, w in enumerate(waves):
        batch[b, : len(w)] = torch.from_numpy(w)
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([int(seed), j, g]).generate_state(1)[0]))
    out, out_len = augmenter.wave(batch.to(device), lengths.to(device), gen)
    out, out_len = out.cpu().numpy(), out_len.cpu().tolist()
    return [np.ascontiguousarray(out[b, : max(1, int(n))], dtype=np.float32) for b, n in enumerate(out_len)]


def _groups(train: Manifest) -> list[list]:
    clips = list(train)
    return [clips[start:start + GROUP] for start in range(0, len(clips), GROUP)]


def _augment_on_device(train: Manifest, augmenter: Augmenter, seed: int, folder: Path, sample_rate: int,
                       device: torch.device, pool: ThreadPoolExecutor | None) -> list[list]:
    """Every copy j of every group, one after another on ``device`` (the pool decodes the next group and writes
    the copies meanwhile); returns ``[copy id, sha1, frames]`` rows, copy 1 of every clip first."""
    groups = [(j, g, group) for j in range(1, augmenter.copies + 1) for g, group in enumerate(_groups(train))]

    def load(group):
        return [load_audio(c.path, sample_rate) for c in group]  # in one thread of the pool: no nesting

    submit = _Now if pool is None else pool.submit
    written: list[tuple[str, Future | _Now, int]] = []
    pending = submit(load, groups[0][2]) if groups else None
    for k, (j, g, group) in enumerate(groups):
        loaded = pending.result()
        pending = submit(load, groups[k + 1][2]) if k + 1 < len(groups) else None  # next group decodes meanwhile
        for clip, wav in zip(group, _augment(loaded, augmenter, seed, j, g, device), strict=True):
            cid = copy_id(clip.clip_id, j)
            written.append((cid, submit(_write_and_hash, folder / "audio" / f"{cid}.wav", wav, sample_rate), len(wav)))
    return [[cid, job.result(), n] for cid, job, n in written]


def _augment_in_threads(train: Manifest, augmenter: Augmenter, seed: int, folder: Path, sample_rate: int,
                        pool: ThreadPoolExecutor) -> list[list]:
    """The CPU's way: each task makes all K copies of one group (decoded once), with one torch thread (the
    caller's ``torch_threads(1)``), so the tasks spread over the cores.  The same rows as
    :func:`_augment_on_device`, in its order."""
    cpu = torch.device("cpu")

    def group_copies(g: int, group: list) -> list[list[list]]:
        waves = [load_audio(c.path, sample_rate) for c in group]
        by_copy = []
        for j in range(1, augmenter.copies + 1):
            rows = []
            for clip, wav in zip(group, _augment(waves, augmenter, seed, j, g, cpu), strict=True):
                cid = copy_id(clip.clip_id, j)
                rows.append([cid, _write_and_hash(folder / "audio" / f"{cid}.wav", wav, sample_rate), len(wav)])
            by_copy.append(rows)
        return by_copy

    groups = _groups(train)
    per_group = list(pool.map(group_copies, range(len(groups)), groups))
    return [row for j in range(augmenter.copies) for rows in per_group for row in rows[j]]


def make_copies(train: Manifest, augmenter: Augmenter, seed: int, cache_dir: str | Path, *,
                sample_rate: int = 16000, device: str | torch.device = "cpu",
                lock_timeout: float | None = None) -> Manifest:
    """The augmented manifest of ``train`` (K copies per clip), building the copies once under a lock.

    ``train`` must hold the fold's training clips only: the caller passes nothing else, so dev and test
    clips are never augmented.  A copy folder written for another config is refused by its key.  ``device``: the
    CPU (what the data module uses: whole groups spread over the cores, the same copies on any number of them) or
    a GPU (one group after another; its random numbers differ, so its copies are keyed apart).
    """
    check_cached(augmenter)
    if len(train) == 0:
        raise ValueError("no training clips to augment")
    key, fields = copies_key(train, augmenter, seed, sample_rate, device)
    folder = copies_dir(cache_dir, train, augmenter, seed, sample_rate, device)
    if (folder / META).is_file():
        return _open(folder, key, train)
    folder.mkdir(parents=True, exist_ok=True)
    with build_lock(folder / ".lock", timeout=lock_timeout):
        if (folder / META).is_file():
            return _open(folder, key, train)
        (folder / "audio").mkdir(exist_ok=True)
        device = torch.device(device)
        threads = _threads(device)
        # On the CPU torch runs one thread: its operators' sums then add in one order, so the copies (their bytes,
        # sha1s and feature caches) depend neither on THREADS nor on how many cores the machine has.
        one_thread = torch_threads(1) if device.type == "cpu" else nullcontext()
        pool_or_none = ThreadPoolExecutor(threads, thread_name_prefix="wav2emo-copies") if threads else nullcontext()
        with one_thread, pool_or_none as pool:
            if device.type == "cpu" and pool is not None:
                clips = _augment_in_threads(train, augmenter, seed, folder, sample_rate, pool)
            else:
                clips = _augment_on_device(train, augmenter, seed, folder, sample_rate, device, pool)
        meta = {"key": key, "key_fields": fields, "source": train.name, "clips": clips}
        tmp = folder / f".{META}.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / META)  # written last: a folder without it is unfinished and rebuilt
        log.info("wrote %d augmented copies of %d training clips in %s", len(clips), len(train), folder)
    return _copy_manifest(train, folder, key, clips, sample_rate)
