"""Reading any stretch of a recording of any length at 16 kHz mono, without decoding the whole file.

:func:`wav2emo.data.audio.load_audio` (what training and the caches read) decodes a whole file, mixes it to
mono and resamples it.  An hour of 48 kHz stereo would be 1.4 GB of float32 before resampling, so
:class:`AudioStream` reads only the stretch asked for, plus a margin of context, and resamples that.  The
stretch starts on a sample where torchaudio's polyphase resampler starts a new period, so the samples it gives
are those of resampling the whole file (the same kernel at the same phase; only float rounding may differ).  A
file that fits in one read gives exactly what ``load_audio`` gives.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile as sf

from wav2emo.data.audio import TARGET_SAMPLE_RATE, AudioError, _check_wav_complete, resample

# torchaudio.functional.resample's defaults, which data.audio.resample uses.
_LOWPASS_WIDTH, _ROLLOFF = 6, 0.99


class AudioStream:
    """One audio file opened for reading stretches of it as mono float32 at ``target_sr``.

    ``num_samples`` is the length the whole file has after resampling (as ``load_audio`` gives it).  Raises
    :class:`~wav2emo.data.audio.AudioError` for a file that cannot be opened, is empty, or holds NaN/inf in
    the stretch read.
    """

    def __init__(self, path: str | Path, target_sr: int = TARGET_SAMPLE_RATE) -> None:
        self.path = Path(path)
        self.target_sr = int(target_sr)
        if not self.path.exists():
            raise AudioError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise AudioError(f"{self.path}: a folder, not an audio file")
        try:
            self._file = sf.SoundFile(str(self.path))
        except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError
            raise AudioError(f"{self.path}: cannot be read as audio ({type(e).__name__}: {e})") from e
        try:
            _check_wav_complete(self.path)
        except BaseException:
            self.close()
            raise
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.frames = int(self._file.frames)
        if self.frames <= 0:
            self.close()
            raise AudioError(f"{self.path}: the file holds no samples (expected a non-empty recording)")
        g = math.gcd(self.sample_rate, self.target_sr)
        self._orig_g, self._new_g = self.sample_rate // g, self.target_sr // g
        self.num_samples = -(-self.frames * self._new_g // self._orig_g)  # ceil, as torchaudio's resample
        width = math.ceil(_LOWPASS_WIDTH * self._orig_g / (min(self._orig_g, self._new_g) * _ROLLOFF))
        self._margin = width + 2 * self._orig_g  # input samples of context either side of a stretch

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.target_sr

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_input(self, start: int, stop: int) -> np.ndarray:
        """Input samples ``[start, stop)`` mixed to mono (the channel mean, as ``load_audio``)."""
        self._file.seek(start)
        try:
            data = self._file.read(stop - start, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{self.path}: cannot be decoded after {start / self.sample_rate:.2f} s "
                             f"({type(e).__name__}: {e})") from e
        if data.shape[0] != stop - start:
            raise AudioError(f"{self.path}: ends after {(start + data.shape[0]) / self.sample_rate:.2f} s, but its "
                             f"header declares {self.frames / self.sample_rate:.2f} s (a truncated file?)")
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).sum())
            raise AudioError(f"{self.path}: {bad} samples between {start / self.sample_rate:.2f} s and "
                             f"{stop / self.sample_rate:.2f} s are NaN or infinite (expected finite audio)")
        wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
        return np.ascontiguousarray(wave, dtype=np.float32)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` at ``target_sr`` (mono float32), as if the whole file had been resampled."""
        start, stop = max(0, int(start)), min(int(stop), self.num_samples)
        if stop <= start:
            raise ValueError(f"{self.path}: empty stretch [{start}, {stop}) of {self.num_samples} samples")
        if self._orig_g == self._new_g:
            return self._read_input(start, stop)
        # Input stretch: whole resampler periods (orig_g input samples <-> new_g output samples), with margins.
        first = max(0, (start * self._orig_g // self._new_g - self._margin) // self._orig_g)
        last_in = min(self.frames, -(-stop * self._orig_g // self._new_g) + self._margin)
        out_start = first * self._new_g
        wave = resample(self._read_input(first * self._orig_g, last_in), self.sample_rate, self.target_sr)
        return np.ascontiguousarray(wave[start - out_start : stop - out_start], dtype=np.float32)

    def blocks(self, block: int) -> Iterator[np.ndarray]:
        """The whole recording at ``target_sr`` in consecutive stretches of ``block`` samples (the last shorter)."""
        for s in range(0, self.num_samples, block):
            yield self.read(s, min(s + block, self.num_samples))
