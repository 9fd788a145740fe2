"""The manifest: one row per clip, the single description of a corpus that every later stage reads.

Every corpus recipe (RAVDESS, the synthetic stand-in, later CREMA-D, TESS, ...) produces a
:class:`Manifest`.  Features, folds and training only ever see manifests, never folder layouts.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

# RAVDESS emotion codes 01..08, in code order; the class index of an emotion is ``code - 1``.
EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NUM_CLASSES = len(EMOTIONS)


@dataclass(frozen=True)
class Clip:
    """One utterance of a corpus.

    ``label`` is the class index (0..7 for the RAVDESS emotions); ``sha1`` is the hash of the file's
    bytes, which makes feature caches follow the audio and not the path.
    """

    clip_id: str
    path: str
    corpus: str
    actor: int
    gender: str  # "male" | "female"
    emotion: str
    label: int
    intensity: int
    statement: int
    repetition: int
    duration: float  # seconds, at the file's own sample rate
    sample_rate: int
    channels: int
    num_frames: int  # samples per channel in the file
    sha1: str


_FIELDS = [f.name for f in fields(Clip)]
# A clip id may one day name a file (a per-clip export, a cache entry): it must not be able to climb out
# of the folder it lands in.  Printable, no path separators, not hidden or "." / "..", not too long.
_UNSAFE_ID = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_ID_LEN = 200


def check_clip_id(clip_id: object, where: str = "manifest") -> str:
    """``clip_id`` if it is safe to use as a file name; ValueError naming it and ``where`` otherwise."""
    if (
        not isinstance(clip_id, str)
        or not clip_id
        or clip_id != clip_id.strip()
        or clip_id.startswith((".", "~"))
        or len(clip_id) > MAX_ID_LEN
        or _UNSAFE_ID.search(clip_id)
    ):
        raise ValueError(
            f"{where}: clip_id {clip_id!r} is not a safe name (expected 1..{MAX_ID_LEN} printable characters "
            "without / or \\, not starting with '.' or '~', e.g. 03-01-05-02-01-01-12); a clip id could "
            "otherwise name a file outside the output folder"
        )
    return clip_id
_INT_FIELDS = {"actor", "label", "intensity", "statement", "repetition", "sample_rate", "channels", "num_frames"}


class Manifest(Sequence[Clip]):
    """An ordered, immutable list of clips with the lookups the pipeline needs."""

    def __init__(self, clips: Iterable[Clip], name: str = "corpus", report: Any = None) -> None:
        self._clips: tuple[Clip, ...] = tuple(clips)
        self.name = name
        # what the corpus check decided (a wav2emo.data.checks.CorpusReport), kept with the clips
        self.report = report
        for c in self._clips:
            check_clip_id(c.clip_id, f"manifest {name!r}")
        self._index = {c.clip_id: i for i, c in enumerate(self._clips)}
        if len(self._index) != len(self._clips):
            seen: set[str] = set()
            dups = sorted({c.clip_id for c in self._clips if c.clip_id in seen or seen.add(c.clip_id)})
            raise ValueError(f"manifest {name!r} has duplicate clip ids: {dups[:10]}")

    # Sequence protocol ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return Manifest(self._clips[i], name=self.name, report=self.report)
        return self._clips[i]

    def __iter__(self) -> Iterator[Clip]:
        return iter(self._clips)

    # Lookups ---------------------------------------------------------------------------------------
    def index_of(self, clip_id: str) -> int:
        try:
            return self._index[clip_id]
        except KeyError:
            raise KeyError(f"clip {clip_id!r} is not in manifest {self.name!r}") from None

    @property
    def clip_ids(self) -> list[str]:
        return [c.clip_id for c in self._clips]

    @property
    def actors(self) -> list[int]:
        return sorted({c.actor for c in self._clips})

    def genders(self) -> dict[int, str]:
        """Actor -> gender, as the manifest states it."""
        return {c.actor: c.gender for c in self._clips}

    def filter(self, actors: Iterable[int] | None = None) -> Manifest:
        keep = set(actors) if actors is not None else None
        return Manifest(
            (c for c in self._clips if keep is None or c.actor in keep), name=self.name, report=self.report
        )

    def content_hash(self) -> str:
        """Hash of what the audio *is* (ids, labels and file hashes), independent of where it lies.

        Two copies of the same corpus in different folders share feature caches; any changed,
        added or removed clip gives a different hash.
        """
        h = hashlib.sha256()
        for c in self._clips:
            h.update(f"{c.clip_id}|{c.label}|{c.actor}|{c.sha1}\n".encode())
        return h.hexdigest()

    # Persistence -----------------------------------------------------------------------------------
    def to_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=_FIELDS)
            w.writeheader()
            for c in self._clips:
                w.writerow(asdict(c))
        tmp.replace(path)
        return path

    @classmethod
    def from_csv(cls, path: str | Path, name: str | None = None) -> Manifest:
        path = Path(path)
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(_FIELDS) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: manifest is missing columns {sorted(missing)}; expected {_FIELDS}")
            clips = []
            for line, row in enumerate(reader, start=2):
                try:
                    kw = {k: row[k] for k in _FIELDS}
                    check_clip_id(kw["clip_id"], f"{path} line {line}")
                    for k in _INT_FIELDS:
                        kw[k] = int(kw[k])
                    kw["duration"] = float(kw["duration"])
                except (TypeError, ValueError) as e:
                    msg = str(e) if str(e).startswith(str(path)) else f"{path} line {line}: {e}"
                    raise ValueError(msg) from None
                clips.append(Clip(**kw))
        return cls(clips, name=name or path.stem)

    def summary(self) -> str:
        return json.dumps(
            {"name": self.name, "clips": len(self), "actors": len(self.actors), "hash": self.content_hash()[:12]}
        )


def sha1_of_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
