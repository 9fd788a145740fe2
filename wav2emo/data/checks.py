"""The corpus check's look at what each file holds: decodable, finite, not silent, not overlong.

``prepare_ravdess`` already reads every file once for its sha1; decoding it too (streamed in blocks,
so memory stays bounded whatever the clip's length) costs about 1.5 s for the 1440 RAVDESS clips and
moves three failures from feature extraction (or from nowhere) to the corpus check: audio that does
not decode, NaN/infinite samples, and silence - a clip of zeros, or a stereo clip whose channels
cancel when mixed to mono, which otherwise becomes 77 of 88 eGeMAPS values 0 without a word.

What the check decided is kept in a :class:`CorpusReport` (skipped, warned-about and overlong clips,
each with its reason), written beside the cached manifest and logged on every load.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import AudioError

log = logging.getLogger(__name__)

ON_SILENT = ("error", "warn", "skip")
DEFAULT_SILENCE_DBFS = -60.0  # real RAVDESS: the quietest clip peaks at -46.8 dBFS
DEFAULT_MAX_DURATION_S = 60.0  # real RAVDESS: 2.9 .. 5.3 s
REPORT_VERSION = 1
_BLOCK = 1 << 16  # frames decoded at a time


def dbfs(amplitude: float) -> float:
    """Level of a peak amplitude in dB relative to full scale (-inf for exact zero)."""
    return 20.0 * math.log10(amplitude) if amplitude > 0 else -math.inf


@dataclass(frozen=True)
class AudioScan:
    """What decoding one file found: its length, the peak of the mono mix and of each channel."""

    frames: int
    mono_peak: float
    channel_peaks: tuple[float, ...]


def scan_audio(path: str | Path, block: int = _BLOCK) -> AudioScan:
    """Decode ``path`` block by block; :class:`AudioError` if it does not decode or holds NaN/inf.

    The mono mix is the channel mean, exactly as :func:`~wav2emo.data.audio.load_audio` makes it, so
    "silent" here means silent in what the features will see.
    """
    frames, mono_peak = 0, 0.0
    peaks: np.ndarray | None = None
    bad = 0
    try:
        with sf.SoundFile(str(path)) as f:
            for b in f.blocks(blocksize=block, dtype="float32", always_2d=True):
                finite = np.isfinite(b)
                if not finite.all():
                    bad += int((~finite).sum())
                    b = np.where(finite, b, 0.0)
                absb = np.abs(b)
                ch = absb.max(axis=0) if len(b) else np.zeros(b.shape[1], np.float32)
                peaks = ch if peaks is None else np.maximum(peaks, ch)
                if len(b):
                    mono = b.mean(axis=1) if b.shape[1] > 1 else b[:, 0]
                    mono_peak = max(mono_peak, float(np.abs(mono).max()))
                frames += len(b)
    except Exception as e:  # LibsndfileError / RuntimeError: a truncated or garbled stream
        raise AudioError(
            f"{path}: cannot be decoded ({type(e).__name__}: {e}); expected complete audio"
        ) from e
    if bad:
        raise AudioError(f"{path}: {bad} samples are NaN or infinite (expected finite audio)")
    if frames == 0:
        raise AudioError(f"{path}: decodes to no samples (expected a non-empty recording)")
    return AudioScan(frames, mono_peak, tuple(float(p) for p in (peaks if peaks is not None else ())))


def silence_reason(scan: AudioScan, silence_dbfs: float) -> str | None:
    """Why the clip counts as silent (its mono mix never reaches ``silence_dbfs``), or None."""
    mono = dbfs(scan.mono_peak)
    if mono >= silence_dbfs:
        return None
    loud = [dbfs(p) for p in scan.channel_peaks]
    if len(loud) > 1 and max(loud) >= silence_dbfs:
        levels = ", ".join(f"{x:.1f}" for x in loud)
        return (
            f"the channels cancel when mixed to mono (channel peaks {levels} dBFS, mono peak {mono:.1f} dBFS; "
            f"expected above {silence_dbfs:g} dBFS)"
        )
    return f"silent (peak {mono:.1f} dBFS; expected above {silence_dbfs:g} dBFS)"


def check_options(on_silent: str, silence_dbfs: float, max_duration_s: float | None) -> None:
    """Refuse option values that would make the check meaningless, naming the config key."""
    if on_silent not in ON_SILENT:
        raise ValueError(f"data.corpus.on_silent={on_silent!r}; expected one of {list(ON_SILENT)}")
    if isinstance(silence_dbfs, bool) or not isinstance(silence_dbfs, (int, float)) or not silence_dbfs <= 0:
        raise ValueError(
            f"data.corpus.silence_dbfs={silence_dbfs!r}; expected a level in dBFS <= 0, e.g. -60"
        )
    if max_duration_s is not None and (
        isinstance(max_duration_s, bool)
        or not isinstance(max_duration_s, (int, float))
        or not max_duration_s > 0
    ):
        raise ValueError(f"data.corpus.max_duration_s={max_duration_s!r}; expected seconds > 0, or null")


@dataclass
class CorpusReport:
    """What the corpus check decided beyond "all good": each entry is (clip id, file, reason)."""

    root: str
    clips: int = 0  # clips in the manifest
    options: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)  # not in the manifest: the user asked to skip them
    warnings: list[dict] = field(default_factory=list)  # in the manifest, but suspicious
    long_clips: list[dict] = field(default_factory=list)  # longer than max_duration_s (in the manifest)
    class_names: list[str] = field(default_factory=list)  # the manifest's ordered label set
    notes: list[str] = field(default_factory=list)  # what the recipe decided: totals, clips left out by rule
    durations: dict = field(default_factory=dict)  # seconds: min, mean, max, total
    set_aside: list[dict] = field(default_factory=list)  # require_complete=false: files left out (problem, what)
    defects: list[dict] = field(default_factory=list)  # known release defects handled (file, problem, action)

    def add(self, kind: str, clip_id: str, path: str | Path, reason: str, **extra) -> None:
        getattr(self, kind).append({"clip_id": clip_id, "path": str(path), "reason": reason, **extra})

    @property
    def clean(self) -> bool:
        return not (self.skipped or self.warnings or self.long_clips or self.set_aside or self.defects)

    def lines(self, limit: int = 10) -> list[str]:
        """The report as log lines: a summary, then up to ``limit`` clips per kind."""
        limit_s = self.options.get("max_duration_s")
        long_part = f"{len(self.long_clips)} longer than {limit_s:g} s" if limit_s else "no duration limit"
        out = [
            f"corpus check of {self.root}: {self.clips} clips in the manifest, {len(self.skipped)} skipped, "
            f"{len(self.warnings)} with warnings, {long_part}"
        ]
        if self.durations:
            d = self.durations
            out.append(
                f"  durations: {d['min']:.2f} .. {d['max']:.2f} s, mean {d['mean']:.2f} s, "
                f"{d['total'] / 60:.1f} min in all"
            )
        if self.class_names:
            out.append(f"  classes: {', '.join(self.class_names)}")
        out.extend(f"  {note}" for note in self.notes)
        for d in self.defects:
            out.append(f"  known defect of the release: {d['file']}: {d['problem']} -> {d['action']}")
        for item in self.set_aside[:limit]:
            out.append(f"  set aside (require_complete=false): {item['problem']}: {item['what']}")
        if len(self.set_aside) > limit:
            out.append(f"  ... and {len(self.set_aside) - limit} more set aside")
        for kind, title in (
            ("skipped", "skipped (not in the manifest)"),
            ("warnings", "warning (kept in the manifest)"),
            ("long_clips", "long clip (kept; feature extraction decides)"),
        ):
            items = getattr(self, kind)
            for item in items[:limit]:
                out.append(f"  {title}: {item['path']}: {item['reason']}")
            if len(items) > limit:
                out.append(f"  ... and {len(items) - limit} more {kind.replace('_', ' ')}")
        return out

    def log(self, report_path: Path | None = None) -> None:
        level = logging.INFO if self.clean else logging.WARNING
        lines = self.lines()
        if report_path is not None and not self.clean:
            lines.append(f"  (the full list: {report_path})")
        log.log(level, "\n".join(lines))

    def to_json(self) -> str:
        return json.dumps({"version": REPORT_VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CorpusReport:
        data = json.loads(text)
        if not isinstance(data, Mapping) or data.pop("version", None) != REPORT_VERSION:
            raise ValueError("not a corpus report of this version")
        return cls(**data)


def long_clip_entries(clips: Iterable, max_duration_s: float | None) -> list[dict]:
    """The clips (manifest rows) longer than ``max_duration_s``, as report entries."""
    if max_duration_s is None:
        return []
    return [
        {
            "clip_id": c.clip_id,
            "path": c.path,
            "reason": f"{c.duration:.1f} s long (data.corpus.max_duration_s={max_duration_s:g})",
            "duration": c.duration,
        }
        for c in clips
        if c.duration > max_duration_s
    ]
