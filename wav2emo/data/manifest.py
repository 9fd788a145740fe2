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

from wav2emo.errors import UserError

# RAVDESS emotion codes 01..08, in code order; the class index of an emotion is ``code - 1``.  The
# default class list of a manifest, so RAVDESS manifests (and the caches keyed by them) stay as they were.
EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
NUM_CLASSES = len(EMOTIONS)
UNLABELLED = -1  # Clip.label of a clip without an emotion (predict input); its emotion is ""


@dataclass(frozen=True)
class Clip:
    """One utterance of a corpus.

    ``label`` is the class index into the manifest's ``class_names`` (0..7 for the RAVDESS emotions), or
    ``UNLABELLED`` (-1, emotion "") for a recording without a supervision (predict input); ``emotion`` is
    the canonical name (wav2emo.data.labels) and ``code`` the corpus's own code for it (EmoDB ``W``,
    IEMOCAP ``exc``), kept for reports.  ``actor`` is the numeric speaker id the folds use, ``speaker``
    the corpus's own speaker name (``OAF``, ``Ses01F``; RAVDESS: ``Actor_01``), ``session`` the recording
    session where a corpus has them (IEMOCAP 1..5; else 0).  ``sha1`` is the hash of the file's bytes,
    which makes feature caches follow the audio and not the path.
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
    code: str = ""
    speaker: str = ""
    session: int = 0

    @property
    def labelled(self) -> bool:
        return self.label != UNLABELLED


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
_INT_FIELDS = {
    "actor", "label", "intensity", "statement", "repetition", "sample_rate", "channels", "num_frames", "session"
}
# Columns added after the first manifest format: an older CSV without them still reads (defaults).
_OPTIONAL_FIELDS = {"code": "", "speaker": "", "session": "0"}


class UnlabelledError(UserError, ValueError):
    """Clips without an emotion where the task needs labels (training, evaluation)."""


class Manifest(Sequence[Clip]):
    """An ordered, immutable list of clips with the lookups the pipeline needs."""

    def __init__(
        self,
        clips: Iterable[Clip],
        name: str = "corpus",
        report: Any = None,
        class_names: Sequence[str] | None = None,
    ) -> None:
        self._clips: tuple[Clip, ...] = tuple(clips)
        self.name = name
        # what the corpus check decided (a wav2emo.data.checks.CorpusReport), kept with the clips
        self.report = report
        # the ordered label set of the corpus: Clip.label indexes it (default the 8 RAVDESS emotions)
        self.class_names: tuple[str, ...] = tuple(EMOTIONS if class_names is None else class_names)
        if not self.class_names or len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"manifest {name!r}: class_names {list(self.class_names)}; expected distinct names")
        n = len(self.class_names)
        for c in self._clips:
            check_clip_id(c.clip_id, f"manifest {name!r}")
            if not (c.label == UNLABELLED or 0 <= c.label < n):
                raise ValueError(
                    f"manifest {name!r}: clip {c.clip_id!r} has label {c.label}; expected {UNLABELLED} "
                    f"(unlabelled) or 0..{n - 1} (class_names {list(self.class_names)})"
                )
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
            return self._like(self._clips[i])
        return self._clips[i]

    def _like(self, clips: Iterable[Clip]) -> Manifest:
        """A manifest of ``clips`` with this one's name, report and class names."""
        return Manifest(clips, name=self.name, report=self.report, class_names=self.class_names)

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
        return self._like(c for c in self._clips if keep is None or c.actor in keep)

    def select(self, clip_ids: Iterable[str]) -> Manifest:
        """The clips ``clip_ids`` names, in manifest order; KeyError naming an id the manifest lacks."""
        rows = sorted({self.index_of(i) for i in clip_ids})
        return self._like(self._clips[r] for r in rows)

    # Labels ----------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def unlabelled(self) -> list[str]:
        """Ids of the clips without an emotion."""
        return [c.clip_id for c in self._clips if not c.labelled]

    def require_labels(self, purpose: str = "training") -> Manifest:
        """This manifest if every clip has an emotion; :class:`UnlabelledError` naming some that lack one."""
        missing = self.unlabelled
        if missing:
            raise UnlabelledError(
                f"manifest {self.name!r}: {len(missing)} of {len(self)} clips have no emotion label "
                f"(e.g. {missing[:5]}); {purpose} needs a label on every clip. Give them an emotion, or "
                "leave them out of the corpus (unlabelled clips are for prediction only)"
            )
        return self

    def emotions_by_speaker(self) -> dict[int, tuple[str, ...]]:
        """Actor -> the classes its labelled clips cover, in class order."""
        seen: dict[int, set[int]] = {}
        for c in self._clips:
            if c.labelled:
                seen.setdefault(c.actor, set()).add(c.label)
        return {a: tuple(self.class_names[i] for i in sorted(labels)) for a, labels in sorted(seen.items())}

    def narrow_speakers(self, min_emotions: int = 3) -> dict[int, tuple[str, ...]]:
        """Speakers whose clips cover fewer than ``min_emotions`` classes: per-speaker normalisation
        there erases the emotion itself (natural corpora often have a speaker with one emotion), so the
        caller warns, naming them."""
        return {a: e for a, e in self.emotions_by_speaker().items() if len(e) < min_emotions}

    def class_counts(self) -> dict[str, int]:
        """Clips per class name (unlabelled clips are not counted)."""
        counts = dict.fromkeys(self.class_names, 0)
        for c in self._clips:
            if c.labelled:
                counts[self.class_names[c.label]] += 1
        return counts

    def content_hash(self) -> str:
        """Hash of what the audio *is* (ids, labels and file hashes), independent of where it lies.

        Two copies of the same corpus in different folders share feature caches; any changed,
        added or removed clip gives a different hash.
        """
        h = hashlib.sha256()
        if self.class_names != EMOTIONS:  # RAVDESS-labelled manifests keep the hashes they always had
            h.update(("classes|" + ",".join(self.class_names) + "\n").encode())
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
    def from_csv(
        cls, path: str | Path, name: str | None = None, class_names: Sequence[str] | None = None
    ) -> Manifest:
        """Read a manifest written by :meth:`to_csv`; CSVs from before ``code``/``speaker``/``session``
        existed still read (those columns then take their defaults).  ``class_names`` as in the
        constructor (the CSV stores label indices, not the class list)."""
        path = Path(path)
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(_FIELDS) - set(reader.fieldnames or []) - set(_OPTIONAL_FIELDS)
            if missing:
                raise ValueError(f"{path}: manifest is missing columns {sorted(missing)}; expected {_FIELDS}")
            clips = []
            for line, row in enumerate(reader, start=2):
                try:
                    kw = {k: row[k] if k in row else _OPTIONAL_FIELDS[k] for k in _FIELDS}
                    check_clip_id(kw["clip_id"], f"{path} line {line}")
                    for k in _INT_FIELDS:
                        kw[k] = int(kw[k])
                    kw["duration"] = float(kw["duration"])
                except (TypeError, ValueError) as e:
                    msg = str(e) if str(e).startswith(str(path)) else f"{path} line {line}: {e}"
                    raise ValueError(msg) from None
                clips.append(Clip(**kw))
        try:
            return cls(clips, name=name or path.stem, class_names=class_names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def summary(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "clips": len(self),
                "actors": len(self.actors),
                "classes": list(self.class_names),
                "hash": self.content_hash()[:12],
            }
        )


def sha1_of_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
