"""Finding the audio files of a corpus copy: every recipe lists its files through :func:`find_audio_files`."""

from __future__ import annotations

import os
from pathlib import Path

import soundfile as sf

from .errors import CorpusError, listing


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
            f"existing file or folder - restore the target or remove the link):\n{listing(dangling)}"
        )
    return found

