"""What every corpus recipe shares: parsed files in, one checked :class:`Manifest` out.

A recipe (emodb.py, tess.py, ...) only knows its corpus's names and label files: it turns each audio
file into an :class:`Entry` (speaker, gender, the corpus's emotion code and its canonical name) or a
problem naming the file.  :func:`build_manifest` then does what is the same for all of them, as
``prepare_ravdess`` does for RAVDESS: headers read with soundfile (any container, rate, channel count,
whatever the extension says), every file decoded once (silent / NaN / undecodable clips), the corpus's
known totals compared (missing speakers named, missing and extra files counted), all problems raised
together in one :class:`CorpusError`, then hashed into clips.
"""

from __future__ import annotations

import os
import zipfile
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .audio import AudioError, audio_info
from .checks import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_SILENCE_DBFS,
    AudioScan,
    CorpusReport,
    check_options,
    long_clip_entries,
    scan_audio,
    silence_reason,
)
from .errors import CorpusError
from .fetching import extract_zip
from .files import find_audio_files
from .labels import ordered_classes
from .manifest import UNLABELLED, Clip, Manifest, sha1_of_file
from .problems import Defects, Problems, identical_files
from .registry import Totals


@dataclass
class Entry:
    """One audio file as its recipe understood it."""

    path: Path
    clip_id: str
    speaker: str
    gender: str = "unknown"
    emotion: str | None = None  # canonical name; None = no label (a recording without supervision)
    code: str = ""  # the corpus's own code for the emotion
    session: int = 0
    actor: int | None = None  # the corpus's numeric speaker id, where it has one (EmoDB 03, CREMA-D 1001)


@dataclass
class CheckOptions:
    """The corpus check's switches (the same keys as ``data.corpus``)."""

    require_complete: bool = True
    hash_files: bool = True
    check_audio: bool = True
    on_silent: str = "error"
    silence_dbfs: float = DEFAULT_SILENCE_DBFS
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S

    def __post_init__(self) -> None:
        try:
            check_options(self.on_silent, self.silence_dbfs, self.max_duration_s)
        except ValueError as e:
            raise CorpusError(str(e)) from None


def resolve_source(source: str | Path, what: str, extract_dir: str | Path | None = None) -> Path:
    """The corpus folder of ``source`` (a folder, or a zip extracted beside it); CorpusError otherwise."""
    source = Path(source)
    if source.is_symlink() and not source.exists():
        raise CorpusError(f"{source}: dangling symlink to {os.readlink(source)} (the target does not exist)")
    if not source.exists():
        raise CorpusError(f"{source}: does not exist; expected {what}")
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise CorpusError(f"{source}: expected {what} (a folder, or its zip archive), found another file")
        return extract_zip(source, extract_dir).resolve()
    return source.resolve()


def audio_files(root: Path, what: str) -> list[Path]:
    files = find_audio_files(root)
    if not files:
        raise CorpusError(f"{root}: no audio files found; expected {what}")
    return files


def rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _scan(path: Path) -> AudioScan | str:
    try:
        return scan_audio(path)
    except AudioError as e:
        return str(e)


def speaker_ids(entries: Iterable[Entry]) -> dict[str, int]:
    """Speaker name -> numeric actor id: the corpus's own number where every entry has one, else 1..n
    in sorted name order (stable: the same speakers always get the same ids)."""
    entries = list(entries)
    names = sorted({e.speaker for e in entries})
    if entries and all(e.actor is not None for e in entries):
        ids = {e.speaker: int(e.actor) for e in entries}  # type: ignore[arg-type]
        if len(set(ids.values())) == len(ids):
            return ids
    return {s: i + 1 for i, s in enumerate(names)}


def compare_totals(entries: Sequence[Entry], totals: Totals | None, problems: Problems, corpus: str) -> list[str]:
    """Compare the parsed files with the documented totals; problems when a complete copy is required.

    Returns the report's note lines (what was found against what was expected).
    """
    if totals is None:
        return [f"{corpus}: {len(entries)} files; no documented totals to compare with"]
    speakers = sorted({e.speaker for e in entries})
    classes = ordered_classes({e.emotion for e in entries if e.emotion})
    notes = [
        f"{corpus}: {len(entries)} files, {len(speakers)} speakers, {len(classes)} classes"
        + (
            f" (a complete copy: {totals.files} files, {len(totals.speakers)} speakers, {len(totals.classes)} "
            "classes)"
        )
    ]
    if totals.speakers:
        missing = [s for s in totals.speakers if s not in speakers]
        extra = [s for s in speakers if s not in totals.speakers]
        if missing:
            problems.add(f"missing speakers (expected {len(totals.speakers)})", ", ".join(missing))
        if extra:
            problems.add("speakers the corpus does not have", ", ".join(extra))
    if totals.classes:
        missing_c = [c for c in totals.classes if c not in classes]
        if missing_c:
            problems.add(f"missing emotions (expected {list(totals.classes)})", ", ".join(missing_c))
    if totals.files is not None and len(entries) != totals.files:
        word = "missing" if len(entries) < totals.files else "extra"
        problems.add(
            f"file count (expected {totals.files})",
            f"found {len(entries)} usable files, {abs(totals.files - len(entries))} {word}; set "
            "data.corpus.require_complete=false to use a partial copy",
        )
    return notes


def build_manifest(
    root: Path,
    corpus: str,
    entries: Sequence[Entry],
    problems: Problems,
    options: CheckOptions,
    *,
    totals: Totals | None = None,
    class_names: Sequence[str] | None = None,
    notes: Sequence[str] = (),
    defects: Defects | None = None,
) -> Manifest:
    """Check ``entries`` (see the module docstring) and return their manifest, or raise every problem.

    ``defects``: the recipe's known release defects (renamed files were renamed while parsing; a known
    silent clip is set aside whatever ``on_silent`` says).  With ``options.require_complete`` false,
    problems of single files (names that do not parse, duplicates, unreadable or silent audio) set those
    files aside, listed in the report, instead of stopping.
    """
    defects = defects or Defects()
    by_id: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        by_id[e.clip_id].append(e)
    unique: list[Entry] = []
    for cid, group in by_id.items():
        if len(group) == 1 and defects.set_aside_always(cid, group[0].path):
            continue
        if len(group) > 1 and identical_files([e.path for e in sorted(group, key=lambda e: str(e.path))]):
            group = sorted(group, key=lambda e: (len(e.path.parts), str(e.path)))  # the shallowest copy is kept
            defects.identical_copies([e.path for e in group], root)
            unique.append(group[0])
        elif len(group) > 1:
            problems.add("the same clip id more than once", f"{cid}: " + ", ".join(rel(e.path, root) for e in group))
        else:
            unique.append(group[0])
    report = CorpusReport(
        root=str(root),
        options={
            "on_silent": options.on_silent,
            "silence_dbfs": options.silence_dbfs,
            "max_duration_s": options.max_duration_s,
        },
    )
    report.notes = list(notes)
    if options.require_complete:
        report.notes += compare_totals([e for g in by_id.values() for e in g[:1]], totals, problems, corpus)

    infos: dict[str, tuple[int, int, int]] = {}
    for e in unique:
        try:
            sr, ch, n = audio_info(e.path)
        except AudioError as err:
            if not defects.set_aside_if_silent(e.clip_id, e.path, "unreadable"):
                problems.add("unreadable files", str(err))
            continue
        if n <= 0 or sr <= 0:
            if not defects.set_aside_if_silent(e.clip_id, e.path, "no samples"):
                problems.add("unreadable files", f"{e.path}: holds no samples (expected a non-empty recording)")
            continue
        infos[e.clip_id] = (sr, ch, n)
    kept = [e for e in unique if e.clip_id in infos]
    ids = speaker_ids(entries)
    kept.sort(key=lambda e: (ids[e.speaker], e.clip_id))

    with ThreadPoolExecutor(max_workers=4) as pool:
        if options.check_audio:
            scans = list(pool.map(lambda e: _scan(e.path), kept))
            bad: set[str] = set()
            for e, scan in zip(kept, scans, strict=True):
                if isinstance(scan, str):
                    problems.add("audio that does not decode or is not finite", scan)
                    bad.add(e.clip_id)
                    continue
                reason = silence_reason(scan, options.silence_dbfs)
                if reason is None:
                    continue
                if defects.set_aside_if_silent(e.clip_id, e.path, reason):
                    bad.add(e.clip_id)
                    continue
                if options.on_silent == "error":
                    problems.add(
                        "silent clips (set data.corpus.on_silent=skip to leave them out, or =warn to keep them)",
                        f"{e.path}: {reason}",
                    )
                elif options.on_silent == "skip":
                    report.add("skipped", e.clip_id, e.path, reason)
                    bad.add(e.clip_id)
                else:
                    report.add("warnings", e.clip_id, e.path, reason)
            kept = [e for e in kept if e.clip_id not in bad]
        problems.settle(root, report, options.require_complete)
        report.defects = list(defects.applied)
        if not kept:
            raise CorpusError(f"{root}: no usable clips of corpus {corpus!r} (expected at least one)")
        hashes = dict(zip([e.clip_id for e in kept], pool.map(lambda e: sha1_of_file(e.path), kept), strict=True)) if options.hash_files else {}

    names = tuple(class_names) if class_names is not None else ordered_classes({e.emotion for e in kept if e.emotion})
    if not names:
        names = ("unknown",)  # a corpus of unlabelled recordings only (predict input)
    index = {c: i for i, c in enumerate(names)}
    clips = []
    for e in kept:
        sr, ch, n = infos[e.clip_id]
        if e.emotion is not None and e.emotion not in index:
            raise CorpusError(f"{e.path}: emotion {e.emotion!r} is not one of the classes {list(names)}")
        clips.append(
            Clip(
                clip_id=e.clip_id,
                path=str(e.path),
                corpus=corpus,
                actor=ids[e.speaker],
                gender=e.gender,
                emotion=e.emotion or "",
                label=index[e.emotion] if e.emotion is not None else UNLABELLED,
                intensity=0,
                statement=0,
                repetition=0,
                duration=n / sr,
                sample_rate=sr,
                channels=ch,
                num_frames=n,
                sha1=hashes.get(e.clip_id, ""),
                code=e.code,
                speaker=e.speaker,
                session=e.session,
            )
        )
    report.long_clips = long_clip_entries(clips, options.max_duration_s)
    report.clips = len(clips)
    report.class_names = list(names)
    durations = [c.duration for c in clips]
    report.durations = {
        "min": min(durations),
        "mean": sum(durations) / len(durations),
        "max": max(durations),
        "total": sum(durations),
    }
    return Manifest(clips, name=corpus, report=report, class_names=names)


def check_options_from(kwargs: Mapping) -> CheckOptions:
    """:class:`CheckOptions` from the keyword arguments a ``prepare_*`` function received."""
    keys = {f for f in CheckOptions.__dataclass_fields__}
    return CheckOptions(**{k: v for k, v in kwargs.items() if k in keys})
