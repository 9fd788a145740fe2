"""Duration limits of the feature kinds, checked on the manifest before any audio is decoded.

Why up front: a clip too short for a kind (eGeMAPS fills too-short clips with NaN) or too long for it
(an SSL backbone's attention grows with the square of the length) used to fail only after a full pass
over the corpus, or exhaust the host's memory.  ``Clip.duration`` is in the manifest already, so the
whole corpus is judged in microseconds and every bad clip is named at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from wav2emo.errors import UserError


class ClipDurationError(UserError, ValueError):
    """Clips outside a feature kind's duration limits; names each clip, its duration and the limit."""


def _duration(clip: Any) -> float:
    d = getattr(clip, "duration", None)
    if d is None or not d > 0:
        return float(clip.num_frames) / float(clip.sample_rate)
    return float(d)


def check_durations(
    clips: Iterable[Any],
    *,
    what: str,
    min_s: float | None = None,
    max_s: float | None = None,
    min_reason: str = "",
    max_key: str | None = None,
    error: type[ClipDurationError] | None = None,
) -> None:
    """Raise :class:`ClipDurationError` naming every clip shorter than ``min_s`` or longer than ``max_s``.

    ``what`` names the feature (e.g. ``"eGeMAPS functionals"``); ``max_key`` is the config key that
    raises the upper limit, quoted in the message; ``error`` a subclass to raise instead.
    """
    short, long = [], []
    for clip in clips:
        d = _duration(clip)
        if min_s is not None and d < min_s:
            short.append(f"{clip.clip_id} ({d:.4f} s, {clip.path})")
        elif max_s is not None and d > max_s:
            long.append(f"{clip.clip_id} ({d:.1f} s, {clip.path})")
    problems = []
    if short:
        problems.append(
            f"{len(short)} clip(s) shorter than the {min_s:g} s that {what} needs: "
            + "; ".join(short[:5]) + (" ..." if len(short) > 5 else "")
            + (f" (why: {min_reason})" if min_reason else "") + ". Drop or fix these clips"
        )
    if long:
        key = f"; or raise the limit with {max_key}=<seconds> if this host has the memory" if max_key else ""
        problems.append(
            f"{len(long)} clip(s) longer than the {max_s:g} s limit of {what}: "
            + "; ".join(long[:5]) + (" ..." if len(long) > 5 else "")
            + f". Cut them into shorter clips{key}"
        )
    if problems:
        raise (error or ClipDurationError)(". ".join(problems) + ". Nothing was extracted.")
