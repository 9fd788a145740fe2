"""What to predict: files as given, audio files below folders, and the entries of CSV or text lists."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from wav2emo.errors import ConfigError, MissingFileError

log = logging.getLogger(__name__)

LIST_SUFFIXES = (".csv", ".tsv", ".txt", ".lst", ".list", ".scp")
# File name endings soundfile (libsndfile) reads, found in folders; a file named explicitly is tried whatever
# its name.  (RAW is headerless: its rate and format cannot be known.)
AUDIO_SUFFIXES = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au",
                  ".snd", ".caf", ".w64", ".rf64", ".nist", ".sph", ".voc", ".ircam", ".sf", ".paf", ".svx",
                  ".mat", ".pvf", ".htk", ".sd2", ".avr", ".wve", ".xi", ".mpc", ".sds")
LIST_COLUMNS = ("path", "file", "filename", "audio", "wav")


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def audio_below(folder: Path) -> list[Path]:
    """Audio files (by name) anywhere below ``folder``, sorted; hidden files and folders are skipped."""
    found = sorted(f for f in folder.rglob("*")
                   if f.suffix.lower() in AUDIO_SUFFIXES and not _is_hidden(f, folder) and f.is_file())
    if not found:
        log.warning("%s: no audio files (%s) below this folder", folder, ", ".join(AUDIO_SUFFIXES[:8]) + ", ...")
    return found


def read_list(path: Path) -> list[Path]:
    """Paths from a CSV/TSV (column path/file/filename/audio/wav, else the first) or a text list (one path a
    line, ``#`` comments), relative to the list's folder.  A folder in a list stands for the audio below it;
    a path that does not exist is kept: its row will say so, and the other files are still predicted."""
    if path.suffix.lower() in (".csv", ".tsv"):
        import pandas as pd  # only for a CSV list: predicting audio files needs no pandas (~0.5 s of start-up)

        try:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: cannot be read as a list of files ({e})") from e
        if not len(df.columns):
            raise ConfigError(f"{path}: an empty list; expected a column named one of {LIST_COLUMNS}")
        col = next((c for c in df.columns if c.strip().lower() in LIST_COLUMNS), df.columns[0])
        entries = [e.strip() for e in df[col] if e.strip()]
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not a text list of files (expected UTF-8 text, one path a line)") from e
        entries = [e.strip() for e in lines if e.strip() and not e.lstrip().startswith("#")]
    out: list[Path] = []
    for entry in map(Path, entries):
        p = entry.expanduser()
        p = p if p.is_absolute() else path.parent / p
        out += audio_below(p) if p.is_dir() else [p]
    return out


def collect_inputs(inputs: Iterable[str | Path]) -> list[Path]:
    """Every file to predict, in the order given: files, audio below folders (recursive, sorted), list entries.

    An input named here that does not exist is a user error (a typo stops before any model is loaded).
    """
    items = [Path(str(i)).expanduser() for i in inputs]
    out: list[Path] = []
    for p in items:
        if p.is_dir():
            out += audio_below(p)
        elif p.is_file() and p.suffix.lower() in LIST_SUFFIXES:
            out += read_list(p)
        elif p.exists():
            out.append(p)
        else:
            raise MissingFileError(f"input {p}: no such file or folder")
    if not out:
        raise ConfigError(f"inputs={[str(p) for p in items]}: no audio file to predict")
    return out
