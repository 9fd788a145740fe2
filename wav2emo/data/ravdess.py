"""The RAVDESS speech corpus: download, file-name parsing, checks, and the manifest (lhotse-style recipe).

Everything else in wav2emo sees RAVDESS only through the :class:`~wav2emo.data.manifest.Manifest` built
here, so every check that can catch a broken copy (a renamed file, a missing clip, a file that is not
audio) runs here, once, and reports all problems together.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import soundfile as sf

from wav2emo.errors import UserError

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
from .manifest import EMOTIONS, Clip, Manifest

RAVDESS_RECORD_URL = "https://zenodo.org/records/1188976"
RAVDESS_ZIP_NAME = "Audio_Speech_Actors_01-24.zip"
RAVDESS_URL = f"{RAVDESS_RECORD_URL}/files/{RAVDESS_ZIP_NAME}?download=1"

NUM_ACTORS = 24
CLIPS_PER_ACTOR = 60
MAX_LISTED = 10  # offending files named in one error message

# Marker written into a folder that prepare_ravdess extracted from a zip, so it is reused only for that zip.
EXTRACT_MARKER = ".wav2emo-extracted.json"

_NAME_RE = re.compile(r"^(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})$")
_ACTOR_DIR_RE = re.compile(r"^Actor_(\d+)$")


class CorpusError(UserError, ValueError):
    """A corpus copy that cannot be used as it is; the message names the files and what was expected."""


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
# Finding audio
# ------------------------------------------------------------------------------------------------
def audio_extensions() -> frozenset[str]:
    """Lower-case suffixes that libsndfile can decode (``.wav``, ``.flac``, ``.ogg``, ...)."""
    exts = {f".{k.lower()}" for k in sf.available_formats()}
    exts |= {
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".aif",
        ".aiff",
        ".aifc",
        ".mp3",
        ".au",
        ".snd",
        ".w64",
    }
    return frozenset(exts)


def find_audio_files(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursively, sorted); hidden files and ``__MACOSX`` folders are skipped.

    Symlinked files and folders are followed (each real folder is visited once, so a link loop ends).
    A dangling symlink that looks like audio or a folder is a :class:`CorpusError` naming the link and
    its target: skipping it would silently drop clips, and stat-ing it later gives a bare traceback.
    """
    root = Path(root)
    exts = audio_extensions()
    found: list[Path] = []
    dangling: list[str] = []
    visited: set[str] = {os.path.realpath(root)}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            if d.startswith(".") or d == "__MACOSX":
                continue
            real = os.path.realpath(os.path.join(dirpath, d))
            if real not in visited:  # a folder reached twice (links) is listed once
                visited.add(real)
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            suffix = path.suffix.lower()
            if suffix in exts or not suffix:
                if path.is_symlink() and not path.exists():
                    dangling.append(f"{path} -> {os.readlink(path)}")
                    continue
            if suffix in exts:
                found.append(path)
    if dangling:
        raise CorpusError(
            f"{root}: {len(dangling)} dangling symlinks (the target does not exist; expected a link to an "
            f"existing file or folder - restore the target or remove the link):\n{_listing(dangling)}"
        )
    return found


def _listing(items: Iterable[str], total: int | None = None) -> str:
    items = list(items)
    total = len(items) if total is None else total
    head = "\n  ".join(items[:MAX_LISTED])
    more = f"\n  ... and {total - MAX_LISTED} more" if total > MAX_LISTED else ""
    return f"  {head}{more}"


# ------------------------------------------------------------------------------------------------
# Zip input
# ------------------------------------------------------------------------------------------------
def _zip_identity(zip_path: Path) -> dict:
    st = zip_path.stat()
    return {"zip": zip_path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def extract_zip(zip_path: str | Path, extract_dir: str | Path | None = None) -> Path:
    """Extract ``zip_path`` into ``extract_dir`` (default: ``<zip stem>`` beside the zip), atomically.

    The archive is unpacked into a temporary sibling folder and renamed into place when complete, so an
    interrupted extraction never looks like a corpus.  A folder this function extracted earlier from the
    same zip (same size and mtime) is reused; any other existing folder is refused, never overwritten.
    """
    zip_path = Path(zip_path).resolve()
    target = Path(extract_dir).resolve() if extract_dir is not None else zip_path.with_suffix("")
    identity = _zip_identity(zip_path)
    if target.exists():
        return _reuse_extracted(zip_path, target, identity)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    except OSError as e:
        raise CorpusError(
            f"{zip_path}: cannot extract into {target} ({e}); pass extract_dir= a writable folder "
            "or extract the zip yourself and give the folder"
        ) from e
    try:
        with zipfile.ZipFile(zip_path) as zf:
            _check_members(zip_path, zf.infolist())
            zf.extractall(tmp)
        (tmp / EXTRACT_MARKER).write_text(json.dumps(identity))
        try:
            tmp.rename(target)
        except OSError:
            if target.exists():  # another process finished the same extraction first
                shutil.rmtree(tmp, ignore_errors=True)
                return _reuse_extracted(zip_path, target, identity)
            raise
    except zipfile.BadZipFile as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CorpusError(f"{zip_path}: not a readable zip archive ({e}); download it again") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _check_members(zip_path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse members that would land outside the folder, and two members that land on one file.

    ``extractall`` writes a repeated name twice and the later entry wins, so a clip named neutral could
    silently hold another recording; ``a/x.wav`` and ``a/./x.wav`` land on the same file as well.
    """
    seen: dict[str, str] = {}
    repeated: list[str] = []
    for info in infos:
        member = Path(info.filename)
        if member.is_absolute() or ".." in member.parts:
            raise CorpusError(
                f"{zip_path}: member {info.filename!r} points outside the archive (expected relative paths "
                "without '..'); refusing to extract it"
            )
        if info.is_dir():
            continue
        where = os.path.normpath(info.filename)
        if where in seen:
            repeated.append(f"{info.filename!r} (also stored as {seen[where]!r})")
        else:
            seen[where] = info.filename
    if repeated:
        raise CorpusError(
            f"{zip_path}: the archive holds {len(repeated)} member names more than once, so extracting it "
            "would let a later entry silently replace an earlier one (expected each file once; download "
            f"the archive again or repack it):\n{_listing(repeated)}"
        )


def _reuse_extracted(zip_path: Path, target: Path, identity: dict) -> Path:
    marker = target / EXTRACT_MARKER
    if not marker.is_file():
        raise CorpusError(
            f"{target} exists but was not extracted by wav2emo from {zip_path}; pass that folder as the "
            "source itself, or remove it, or choose another extract_dir"
        )
    if json.loads(marker.read_text()) != identity:
        raise CorpusError(
            f"{target} was extracted from a different version of {zip_path} (size or modification time "
            "changed); remove the folder to extract again"
        )
    return target


# ------------------------------------------------------------------------------------------------
# The manifest
# ------------------------------------------------------------------------------------------------
def _sha1(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


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
    twice, unreadable or empty files, and (``require_complete``) anything short of 24 actors x 60 clips.
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
    for stem, paths in by_stem.items():
        try:
            meta = parse_ravdess_name(stem)
        except CorpusError as e:
            problems["bad file names"].extend(f"{p.relative_to(root)}: {e}" for p in paths)
            continue
        present[stem] = meta
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
        if problems:
            lines = [f"{root}: the corpus copy has problems ({sum(map(len, problems.values()))} in all):"]
            for kind, items in problems.items():
                lines.append(f"{kind} ({len(items)}):")
                lines.append(_listing(items))
            raise CorpusError("\n".join(lines))

        if hash_files:
            hashes = dict(zip(stems, pool.map(lambda s: _sha1(parsed[s][0]), stems), strict=True))
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


def download_ravdess(
    dest_dir: str | Path,
    *,
    url: str = RAVDESS_URL,
    force: bool = False,
    timeout: float = 60,
    by_hand: str | None = None,
    filename: str | None = None,
) -> Path:
    """Download the RAVDESS speech zip into ``dest_dir`` and return its path.

    Streams to ``<zip>.part`` and resumes it with an HTTP Range request when it exists, so a broken
    200 MB download is not started over; the file is renamed into place only when its length matches
    Content-Length and :mod:`zipfile` can open it.  An existing complete zip is returned at once
    unless ``force``.  Other corpora's zips use it too (``by_hand``: what the user can do instead, for
    the error messages).  The server is asked before anything is created: a missing ``dest_dir`` is made
    only once the server answers, and the folders this call made are removed again if it fails and
    leaves them empty (a partial download worth resuming keeps them).
    """
    dest_dir = Path(dest_dir)
    hint = by_hand or _by_hand(url)
    name = filename or Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if name in ("", ".", ".."):
        name = RAVDESS_ZIP_NAME
    target = dest_dir / name
    part = target.with_name(target.name + ".part")
    if target.exists() and not force:
        if _zip_ok(target):
            return target
        raise CorpusError(f"{target}: exists but is not a readable zip; remove it or pass force=True")
    if force:
        part.unlink(missing_ok=True)

    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "wav2emo"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:  # nothing is created before the server has answered
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the .part is complete, or not this file
            if _zip_ok(part):
                os.replace(part, target)
                return target
            part.unlink()
            return download_ravdess(
                dest_dir, url=url, force=False, timeout=timeout, by_hand=by_hand, filename=filename
            )
        raise CorpusError(f"{url}: the server answered HTTP {e.code} {e.reason}; {hint}") from e
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise CorpusError(f"{url}: cannot reach the server ({reason}); {hint}") from e

    created: list[Path] = []
    try:
        with response:
            created = make_dirs(dest_dir)
            _receive(response, url, part, have)
        if not _zip_ok(part):
            part.unlink()
            raise CorpusError(
                f"{url}: the downloaded file is not a readable zip archive (removed); {hint}"
            )
        os.replace(part, target)
    except BaseException:
        if part.exists() and part.stat().st_size == 0:
            part.unlink()  # nothing worth resuming
        remove_empty_dirs(created)
        raise
    return target


def _receive(response, url: str, part: Path, have: int) -> None:
    """Append the response body to ``part`` (or write it afresh if the server ignored the Range)."""
    if have and response.status == 206:
        start = _range_start(response.headers.get("Content-Range", ""))
        if start != have:
            raise CorpusError(
                f"{url}: asked to resume at byte {have}, the server sent bytes from {start}; "
                f"remove {part} and try again"
            )
        mode = "ab"
    else:  # the server ignored the Range header: take the whole body
        have, mode = 0, "wb"
    length = response.headers.get("Content-Length")
    expected = have + int(length) if length is not None else None
    written = have
    try:
        with open(part, mode) as f:
            while block := response.read(1 << 20):
                f.write(block)
                written += len(block)
    except (OSError, http.client.HTTPException) as e:
        raise CorpusError(
            f"{url}: download interrupted after {written} bytes ({e}); run again to resume from {part}"
        ) from e
    if expected is not None and written != expected:
        raise CorpusError(
            f"{url}: download incomplete, {written} of {expected} bytes; run again to resume from {part}"
        )


def make_dirs(path: Path) -> list[Path]:
    """``mkdir -p path``; returns the folders it created, outermost first (for :func:`remove_empty_dirs`)."""
    missing: list[Path] = []
    p = Path(path)
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    path.mkdir(parents=True, exist_ok=True)
    return missing[::-1]


def remove_empty_dirs(created: list[Path]) -> None:
    """Undo :func:`make_dirs` as far as the folders are still empty (innermost first)."""
    for d in reversed(created):
        try:
            d.rmdir()
        except OSError:
            break  # not empty (or gone): keep it and everything above it


def _zip_ok(path: Path) -> bool:
    """True when ``path`` opens as a zip and every member's CRC checks out."""
    try:
        with zipfile.ZipFile(path) as zf:
            return zf.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


def _range_start(content_range: str) -> int | None:
    m = re.match(r"bytes\s+(\d+)-", content_range)
    return int(m.group(1)) if m else None
