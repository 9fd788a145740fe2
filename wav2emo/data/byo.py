"""Bring your own corpus: ``data=folder`` (one sub-folder per emotion) and ``data=csv`` (a table).

Both end in the same checks and report as the named recipes.  Emotion names go through the canonical
vocabulary (``anger`` -> ``angry``; ``emotion_map`` for names of your own); the speaker of a folder
corpus comes from a regular expression on the file's path relative to the root (its group ``speaker``,
or group 1), its gender optionally from a group ``gender`` (m/f/male/female).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from pathlib import Path

from .errors import CorpusError
from .labels import LabelError, canonical_emotion
from .manifest import Manifest
from .manifest_builder import Entry, audio_files, build_manifest, check_options_from, rel, resolve_source
from .problems import Problems
from .registry import Recipe, folds_by_speaker_count

GENDERS = {"m": "male", "male": "male", "f": "female", "female": "female", "": "unknown", "unknown": "unknown"}
CSV_COLUMNS = ("path", "emotion", "speaker")
# the text before the first "_" of the file name: angry/spk03_take1.wav -> spk03 (conf/data/folder.yaml)
DEFAULT_SPEAKER_REGEX = r"^[^/]+/(?:.*/)?(?P<speaker>[^/_]+)_[^/]*$"


def _gender(value: str | None) -> str:
    key = (value or "").strip().lower()
    if key not in GENDERS:
        raise ValueError(f"gender {value!r}; expected male/female (m/f) or empty")
    return GENDERS[key]


def _clip_id(relpath: str) -> str:
    """A file-name-safe clip id from a path relative to the root (separators become ``__``)."""
    stem = relpath.rsplit(".", 1)[0] if "." in Path(relpath).name else relpath
    return stem.replace("/", "__").replace("\\", "__").lstrip(".~") or "clip"


def prepare_folder(
    source: str | Path,
    *,
    corpus_name: str = "folder",
    speaker_regex: str = DEFAULT_SPEAKER_REGEX,
    emotion_map: Mapping[str, str] | None = None,
    **options,
) -> Manifest:
    """``<root>/<emotion>/**/<file>``: the first folder is the emotion, ``speaker_regex`` finds the speaker."""
    opts = check_options_from(options)
    try:
        pattern = re.compile(speaker_regex)
    except re.error as e:
        raise CorpusError(f"data.corpus.speaker_regex={speaker_regex!r} is not a regular expression ({e})") from e
    root = resolve_source(source, "a folder with one sub-folder per emotion")
    problems, entries = Problems(), []
    for path in audio_files(root, "audio files in <root>/<emotion>/ folders"):
        relpath = rel(path, root)
        parts = relpath.split("/")
        if len(parts) < 2:
            problems.add("files outside an emotion folder", f"{relpath}: expected <emotion>/{parts[-1]}")
            continue
        try:
            emotion = canonical_emotion(parts[0], emotion_map)
        except LabelError as e:
            problems.add("unknown emotion folders", f"{relpath}: {e}")
            continue
        m = pattern.search(relpath)
        if not m or not (m.groupdict().get("speaker") or (m.groups() and m.group(1))):
            problems.add(
                f"paths where speaker_regex {speaker_regex!r} finds no speaker",
                f"{relpath} (set data.corpus.speaker_regex; it is matched against the path relative to the root)",
            )
            continue
        speaker = m.groupdict().get("speaker") or m.group(1)
        try:
            gender = _gender(m.groupdict().get("gender"))
        except ValueError as e:
            problems.add("genders that do not parse", f"{relpath}: {e}")
            continue
        entries.append(Entry(path=path, clip_id=_clip_id(relpath), speaker=speaker, gender=gender,
                             emotion=emotion, code=parts[0]))
    return build_manifest(root, corpus_name, entries, problems, opts)


def prepare_csv(
    source: str | Path,
    *,
    corpus_name: str = "csv",
    emotion_map: Mapping[str, str] | None = None,
    require_labels: bool = True,
    **options,
) -> Manifest:
    """Rows ``path, emotion, speaker[, gender]``; paths relative to the CSV's folder and never outside it.

    Missing columns, empty rows, duplicate paths (after resolving), paths outside the folder and
    unknown emotions are refused naming the row.  ``require_labels=false`` lets an empty emotion make
    an unlabelled clip (input to prediction only).
    """
    opts = check_options_from(options)
    csv_path = Path(source)
    if not csv_path.is_file():
        raise CorpusError(f"{csv_path}: not a file; expected a CSV with columns path, emotion, speaker[, gender]")
    base = csv_path.resolve().parent
    problems, entries = Problems(), []
    seen: dict[Path, int] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in (reader.fieldnames or [])]
        missing = [c for c in CSV_COLUMNS if c not in columns]
        if missing:
            raise CorpusError(f"{csv_path}: missing columns {missing}; found {reader.fieldnames}, expected "
                              "path, emotion, speaker and optionally gender")
        for line, raw in enumerate(reader, start=2):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            where = f"{csv_path.name} row {line}"
            if not any(row.values()):
                problems.add("empty rows", f"{where}: empty (expected path, emotion, speaker)")
                continue
            if None in raw:
                problems.add("rows with extra cells", f"{where}: {len(raw[None])} cells beyond the header")
                continue
            if not row["path"] or not row["speaker"]:
                problems.add("rows with empty cells", f"{where}: path {row['path']!r}, speaker {row['speaker']!r}; "
                             "expected both")
                continue
            path = (base / row["path"]).resolve()
            if not path.is_relative_to(base):
                problems.add("paths outside the CSV's folder", f"{where}: {row['path']!r} resolves to {path}, "
                             f"outside {base}")
                continue
            if path in seen:
                problems.add("duplicate paths", f"{where}: {row['path']!r} is already row {seen[path]}")
                continue
            seen[path] = line
            if not path.is_file():
                problems.add("missing files", f"{where}: {row['path']!r} ({path}) does not exist")
                continue
            emotion = None
            if row["emotion"]:
                try:
                    emotion = canonical_emotion(row["emotion"], emotion_map)
                except LabelError as e:
                    problems.add("unknown emotions", f"{where}: {e}")
                    continue
            elif require_labels:
                problems.add("rows without an emotion", f"{where}: empty emotion (set data.corpus.require_labels="
                             "false for a prediction-only list)")
                continue
            try:
                gender = _gender(row.get("gender"))
            except ValueError as e:
                problems.add("genders that do not parse", f"{where}: {e}")
                continue
            entries.append(Entry(path=path, clip_id=_clip_id(rel(path, base)), speaker=row["speaker"],
                                 gender=gender, emotion=emotion, code=row["emotion"]))
    if not entries and not problems:
        raise CorpusError(f"{csv_path}: no rows; expected one row per clip")
    return build_manifest(base, corpus_name, entries, problems, opts)


FOLDER_RECIPE = Recipe(
    "folder", prepare_folder, "a folder with one sub-folder per emotion", "Point root at your own folder.",
    options=("speaker_regex", "emotion_map"), default_folds=folds_by_speaker_count,
)
CSV_RECIPE = Recipe(
    "csv", prepare_csv, "a CSV with columns path, emotion, speaker[, gender]", "Point root at your own CSV.",
    options=("emotion_map", "require_labels"), default_folds=folds_by_speaker_count,
)
