"""Cutting a recording into overlapping analysis windows, optionally only where an energy check finds speech."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from wav2emo.errors import ConfigError


@dataclass(frozen=True)
class Window:
    """Samples ``[start, end)`` of a recording."""

    start: int
    end: int


def check_window_settings(window_s: float, hop_s: float) -> None:
    """Refuse settings that would skip audio or loop forever, before any file is read."""
    if not window_s > 0:
        raise ConfigError(f"window_s={window_s}: expected a positive window length in seconds")
    if not 0 < hop_s <= window_s:
        raise ConfigError(f"hop_s={hop_s}: expected 0 < hop_s <= window_s={window_s} (a larger hop skips audio)")


def plan_windows(num_samples: int, sample_rate: int, window_s: float, hop_s: float) -> list[Window]:
    """Windows of ``window_s`` every ``hop_s`` covering every sample; the last one ends at the recording's end.

    A recording no longer than one window is one window (the whole recording), which is what training saw.
    """
    check_window_settings(window_s, hop_s)
    win = max(1, round(window_s * sample_rate))
    hop = max(1, round(hop_s * sample_rate))
    if num_samples <= win:
        return [Window(0, int(num_samples))]
    starts = list(range(0, num_samples - win + 1, hop))
    if starts[-1] + win < num_samples:  # the tail: one more window aligned to the end
        starts.append(num_samples - win)
    return [Window(s, s + win) for s in starts]


def frame_levels_db(blocks: Iterable[np.ndarray], frame: int) -> np.ndarray:
    """Energy in dB of every whole ``frame``-sample frame of a recording given as consecutive blocks (each a
    multiple of ``frame`` long but the last), so an hour is read once and never held whole."""
    levels, rest = [], np.zeros(0, dtype=np.float64)
    for block in blocks:
        x = np.concatenate([rest, np.asarray(block, dtype=np.float64)])
        n = len(x) // frame
        if n:
            levels.append(10 * np.log10(np.mean(x[: n * frame].reshape(n, frame) ** 2, axis=1) + 1e-12))
        rest = x[n * frame :]
    if not levels:  # shorter than one frame: its one partial frame
        return np.array([10 * np.log10(np.mean(rest**2) + 1e-12)]) if len(rest) else np.zeros(0)
    return np.concatenate(levels)


def active_frames(levels_db: np.ndarray, *, floor_dbfs: float = -50.0, range_db: float = 35.0) -> np.ndarray:
    """Per frame: whether its energy is above ``floor_dbfs`` and within ``range_db`` of the loudest frame.

    A plain energy check, not a speech model: it keeps loud non-speech too, and drops silence and hum.
    """
    if levels_db.size == 0:
        return np.zeros(0, dtype=bool)
    threshold = max(floor_dbfs, float(levels_db.max()) - range_db)
    return levels_db > threshold


def speech_windows(active: np.ndarray, frame: int, windows: list[Window], *, min_speech: float = 0.1) -> list[Window]:
    """The windows in which at least ``min_speech`` of the ``frame``-sample frames are ``active``."""
    kept = []
    for w in windows:
        a, b = w.start // frame, max(w.start // frame + 1, -(-w.end // frame))
        seg = active[a:b]
        if seg.size and float(seg.mean()) >= min_speech:
            kept.append(w)
    return kept
