"""Reading audio: soundfile decodes, torchaudio resamples.

Everything downstream assumes mono float32 at one sample rate (16 kHz by default).  Bad input must
fail loudly here, naming the file, rather than become silent zeros or NaN features later.  torch is
imported only when a file needs resampling: the openSMILE worker processes read audio through this
module and would otherwise each pay torch's import (seconds) before their first clip.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from wav2emo.errors import UserError

TARGET_SAMPLE_RATE = 16_000


class AudioError(UserError, ValueError):
    """An audio file that cannot be used; the message names the file and the problem."""


@lru_cache(maxsize=16)
def _resampler(orig: int, new: int):
    import torch
    import torchaudio.transforms as T  # imported lazily: torchaudio is slow to import

    return T.Resample(orig, new, dtype=torch.float32)


def resample(wave: np.ndarray, orig_sr: int, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Resample a mono float32 waveform with torchaudio's band-limited sinc resampler."""
    if orig_sr == target_sr:
        return wave
    import torch

    out = _resampler(int(orig_sr), int(target_sr))(torch.from_numpy(np.ascontiguousarray(wave)))
    return out.numpy()


def load_audio(path: str | Path, target_sr: int = TARGET_SAMPLE_RATE) -> np.ndarray:
    """Load ``path`` as mono float32 at ``target_sr``.

    Multi-channel files are down-mixed by averaging the channels.  Raises :class:`AudioError` for
    unreadable, non-audio, empty or non-finite files.
    """
    path = Path(path)
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
        raise AudioError(f"{path}: cannot be read as audio ({type(e).__name__}: {e})") from e
    _check_wav_complete(path)
    if data.size == 0 or data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no samples (expected a non-empty recording)")
    if not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise AudioError(f"{path}: {bad} samples are NaN or infinite (expected finite audio)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    wave = resample(np.ascontiguousarray(wave, dtype=np.float32), sr, target_sr)
    return np.ascontiguousarray(wave, dtype=np.float32)


def audio_info(path: str | Path) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) of a file, read from its header; :class:`AudioError` if unreadable."""
    try:
        info = sf.info(str(path))
    except Exception as e:
        raise AudioError(f"{path}: cannot be read as audio ({type(e).__name__}: {e})") from e
    _check_wav_complete(path)
    return int(info.samplerate), int(info.channels), int(info.frames)


def _check_wav_complete(path: str | Path) -> None:
    """Refuse a RIFF/WAVE file whose data chunk is shorter than its header declares.

    libsndfile silently reads what is there, so a truncated WAV (a broken copy or extraction) would
    otherwise become a shorter clip without a word.  (A truncated FLAC fails when it is decoded.)
    """
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return
        size = f.seek(0, 2)
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                available = size - pos - 8
                if declared not in (0, 0xFFFFFFFF) and declared > available:  # 0/-1: size left unset
                    raise AudioError(
                        f"{path}: truncated WAV, the header declares {declared} bytes of audio but the file "
                        f"holds {available} (expected a complete file; copy or extract it again)"
                    )
                return
            pos += 8 + declared + (declared & 1)
