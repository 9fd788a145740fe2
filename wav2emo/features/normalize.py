"""Per-speaker feature normalisation (Pepino et al., 2021): each speaker standardised with its own statistics.

``features.normalize=speaker`` removes much of what makes voices differ (pitch range, loudness, timbre) by
standardising every feature dimension with the mean and standard deviation of that speaker's clips.  The
statistics are label-free, but they are taken over ALL of a speaker's clips, test speakers included: the
protocol reads the test speakers' unlabelled audio before predicting (transductive).  Reports declare it
(:func:`protocol_entry`); it is off by default.

One implementation for every feature kind.  A clip is an array whose first axis is frames and whose other axes
are the feature dimensions: a vector feature (eGeMAPS functionals, MFCC statistics) is one frame ``(D,)`` or
``(1, D)``; frame features are ``(T, M)`` (log-mel) or ``(T, H, D)`` (SSL hidden states: every layer is
standardised separately).  Frames are pooled over all of a speaker's clips, unpadded (a clip's array holds only
its real frames), so padding never enters the statistics.  Statistics accumulate in float64 from shifted sums
in one pass, so a caller can stream a large cache clip by clip (:class:`SpeakerStats`).

Where a speaker's clips cover only one or two emotions, the speaker's mean IS the emotion's mean and
normalising erases it: :func:`warn_narrow_speakers` says so (labels are used for that warning only, never for
the statistics).
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from wav2emo.errors import ConfigError

log = logging.getLogger(__name__)

MODES = (None, "none", "speaker")
MIN_EMOTIONS = 3  # a speaker whose clips cover fewer distinct emotions gets a warning
STD_FLOOR = 1e-8  # a dimension constant within a speaker becomes 0 (divided by 1), never NaN or inf


class NarrowSpeakerWarning(UserWarning):
    """Per-speaker normalisation of a speaker whose clips cover only one or two emotions."""


def check_mode(mode: Any, where: str = "features.normalize") -> str | None:
    """``"speaker"`` or ``None`` (off); anything else is a :class:`ValueError` naming the value."""
    if isinstance(mode, str) and mode.strip().lower() in ("none", "null", ""):
        return None
    if mode is None or mode is False:
        return None
    if mode == "speaker":
        return "speaker"
    raise ValueError(f"{where}={mode!r}: expected 'speaker' (per-speaker standardisation) or null (off)")


def normalize_mode(cfg: Any) -> str | None:
    """A run config's ``features.normalize``: ``"speaker"`` or None (off, the default); a bad value is one
    :class:`~wav2emo.errors.ConfigError` naming it."""
    try:
        return check_mode((cfg.get("features") or {}).get("normalize"))
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _frames(clip: np.ndarray) -> np.ndarray:
    """A clip as ``(frames, *dims)``: a 1-D vector is one frame."""
    a = np.asarray(clip)
    return a[None, :] if a.ndim == 1 else a


class SpeakerStats:
    """Per-speaker mean and standard deviation of every feature dimension, frames pooled over clips."""

    def __init__(self) -> None:
        self._n: dict[Hashable, int] = {}
        self._shift: dict[Hashable, np.ndarray] = {}
        self._sum: dict[Hashable, np.ndarray] = {}
        self._sumsq: dict[Hashable, np.ndarray] = {}
        self.feature_shape: tuple[int, ...] | None = None

    def add(self, speaker: Hashable, clip: np.ndarray) -> None:
        """Accumulate one clip's frames (``(T, *dims)``, or a vector ``(D,)``) for ``speaker``."""
        x = _frames(clip)
        if self.feature_shape is None:
            self.feature_shape = tuple(x.shape[1:])
        elif tuple(x.shape[1:]) != self.feature_shape:
            raise ValueError(f"speaker {speaker!r}: clip feature shape {tuple(x.shape[1:])}, expected "
                             f"{self.feature_shape} like the clips before it")
        if x.shape[0] == 0:
            return
        x = x.astype(np.float64)
        if not np.isfinite(x).all():
            raise ValueError(f"speaker {speaker!r}: a clip holds NaN or infinite features; cannot normalise")
        if speaker not in self._n:  # shifting by a first frame keeps sum-of-squares precise for large means
            self._n[speaker] = 0
            self._shift[speaker] = x[0].copy()
            self._sum[speaker] = np.zeros(x.shape[1:])
            self._sumsq[speaker] = np.zeros(x.shape[1:])
        d = x - self._shift[speaker]
        self._n[speaker] += x.shape[0]
        self._sum[speaker] += d.sum(0)
        self._sumsq[speaker] += (d * d).sum(0)

    @classmethod
    def fit(cls, clips: Iterable[np.ndarray], speakers: Iterable[Hashable]) -> SpeakerStats:
        stats = cls()
        for clip, spk in zip(clips, speakers, strict=True):
            stats.add(spk, clip)
        return stats

    @property
    def speakers(self) -> list[Hashable]:
        return list(self._n)

    def frames(self, speaker: Hashable) -> int:
        return self._n.get(speaker, 0)

    def mean_std(self, speaker: Hashable) -> tuple[np.ndarray, np.ndarray]:
        """The speaker's mean and population standard deviation (ddof 0) per feature dimension."""
        if speaker not in self._n:
            raise KeyError(f"speaker {speaker!r} has no frames in these statistics (known: {self.speakers[:10]})")
        n = self._n[speaker]
        m = self._sum[speaker] / n
        var = np.maximum(self._sumsq[speaker] / n - m * m, 0.0)
        return self._shift[speaker] + m, np.sqrt(var)

    def transform(self, speaker: Hashable, clip: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """``(clip - mean) / std`` of ``speaker``, same shape as ``clip``; a constant dimension becomes 0."""
        mean, std = self.mean_std(speaker)
        x = np.asarray(clip)
        out = (_frames(x).astype(np.float64) - mean) / np.where(std > STD_FLOOR, std, 1.0)
        return out.reshape(x.shape).astype(dtype)


def normalize_by_speaker(clips: np.ndarray | Sequence[np.ndarray], speakers: Sequence[Hashable],
                         dtype: Any = np.float32) -> np.ndarray | list[np.ndarray]:
    """Standardise every clip with the statistics of its own speaker, taken over all the clips given.

    ``clips`` is a 2-D array of vectors ``(N, D)`` (returns an array) or a sequence of per-clip arrays
    ``(T_i, *dims)`` (returns a list); ``speakers[i]`` is clip ``i``'s speaker.  Label-free.
    """
    if len(clips) != len(speakers):
        raise ValueError(f"{len(clips)} clips but {len(speakers)} speakers; expected one speaker per clip")
    if isinstance(clips, np.ndarray) and clips.ndim == 2:
        stats = SpeakerStats.fit(clips, speakers)  # each row a one-frame clip
        out = np.empty(clips.shape, dtype=dtype)
        for spk in stats.speakers:
            rows = np.array([s == spk for s in speakers])
            out[rows] = stats.transform(spk, clips[rows], dtype)
        return out
    stats = SpeakerStats.fit(clips, speakers)
    return [stats.transform(s, c, dtype) for c, s in zip(clips, speakers, strict=True)]


def narrow_speakers(speakers: Sequence[Hashable], labels: Sequence[int],
                    min_emotions: int = MIN_EMOTIONS) -> dict[Hashable, list[int]]:
    """Speakers whose clips cover fewer than ``min_emotions`` distinct labels -> their sorted labels."""
    covered: dict[Hashable, set[int]] = {}
    for s, y in zip(speakers, labels, strict=True):
        if y is not None and int(y) >= 0:
            covered.setdefault(s, set()).add(int(y))
        else:
            covered.setdefault(s, set())
    return {s: sorted(ys) for s, ys in covered.items() if len(ys) < min_emotions}


def warn_narrow_speakers(speakers: Sequence[Hashable], labels: Sequence[int],
                         class_names: Sequence[str] | None = None,
                         min_emotions: int = MIN_EMOTIONS) -> dict[Hashable, list[int]]:
    """Warn (``NarrowSpeakerWarning`` and the log) about speakers normalisation would strip of their emotion."""
    narrow = narrow_speakers(speakers, labels, min_emotions)
    if narrow:
        def named(ys: list[int]) -> list[Any]:
            return [class_names[y] if class_names and 0 <= y < len(class_names) else y for y in ys]

        shown = "; ".join(f"speaker {s}: {named(ys)}" for s, ys in list(narrow.items())[:10])
        msg = (f"features.normalize=speaker: {len(narrow)} speaker(s) have clips of only one or two emotions "
               f"({shown}{' ...' if len(narrow) > 10 else ''}); their own statistics are those emotions' "
               f"statistics, so normalising erases the emotion itself for them")
        log.warning(msg)
        warnings.warn(msg, NarrowSpeakerWarning, stacklevel=2)
    return narrow


def protocol_entry(mode: str | None) -> dict[str, Any]:
    """What a report's protocol section says about feature normalisation."""
    if mode == "speaker":
        return {
            "feature_normalization": "speaker",
            "reads_test_speakers_unlabelled_audio": True,
            "note": ("per-speaker standardisation: each speaker's features standardised with the mean/std of all "
                     "that speaker's clips (label-free), test speakers included, so the test speakers' unlabelled "
                     "audio is read before prediction (transductive; not comparable with speaker-blind results)"),
        }
    return {"feature_normalization": None, "reads_test_speakers_unlabelled_audio": False}


def protocol_markdown(protocol: Mapping[str, Any]) -> str:
    """The protocol section appended to a CV report's markdown."""
    lines = ["## Protocol (features)\n"]
    norm = protocol.get("feature_normalization")
    lines.append(f"- feature normalisation: {norm or 'none'}")
    if protocol.get("reads_test_speakers_unlabelled_audio"):
        lines.append(f"- **reads the test speakers' unlabelled audio**: {protocol.get('note', '')}")
    if norm:
        narrow = protocol.get("narrow_speakers") or {}
        lines.append(f"- speakers whose clips cover only one or two emotions: "
                     f"{', '.join(f'{s} {v}' for s, v in narrow.items()) or 'none'}")
    for k, v in protocol.items():
        if k not in ("feature_normalization", "reads_test_speakers_unlabelled_audio", "note", "narrow_speakers"):
            lines.append(f"- {k}: {v}")
    return "\n".join(lines)
