"""Fetching a corpus: resumable HTTP downloads of an archive, and safe, atomic zip extraction.

Every recipe with a public address downloads through :func:`download_archive` and unpacks through
:func:`extract_zip`; nothing here knows a particular corpus.
"""

from __future__ import annotations

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
from pathlib import Path

from .errors import CorpusError, listing

# Marker written into a folder that extract_zip unpacked, so it is reused only for that zip.
EXTRACT_MARKER = ".wav2emo-extracted.json"


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
            f"the archive again or repack it):\n{listing(repeated)}"
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


def download_archive(
    dest_dir: str | Path,
    *,
    url: str,
    by_hand: str,
    force: bool = False,
    timeout: float = 60,
    filename: str | None = None,
) -> Path:
    """Download the zip at ``url`` into ``dest_dir`` and return its path.

    Streams to ``<zip>.part`` and resumes it with an HTTP Range request when it exists, so a broken
    200 MB download is not started over; the file is renamed into place only when its length matches
    Content-Length and :mod:`zipfile` can open it.  An existing complete zip is returned at once
    unless ``force``.  ``by_hand`` says what the user can do instead (for the error messages).  The server is asked before anything is created: a missing ``dest_dir`` is made
    only once the server answers, and the folders this call made are removed again if it fails and
    leaves them empty (a partial download worth resuming keeps them).
    """
    dest_dir = Path(dest_dir)
    hint = by_hand
    name = filename or Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if name in ("", ".", ".."):
        raise CorpusError(f"{url}: names no file to save; pass filename=")
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
            return download_archive(
                dest_dir, url=url, by_hand=by_hand, force=False, timeout=timeout, filename=filename
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
