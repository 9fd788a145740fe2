"""``folds=emobox folds.path=<EmoBox>/data/<corpus>``: EmoBox's published folds, so numbers compare with its tables.

EmoBox (Ma et al., Interspeech 2024, https://github.com/emo-box/EmoBox) publishes, per corpus, the clips of
every fold.  wav2emo cannot download them; point ``folds.path`` at the folder of one corpus in your copy of
EmoBox's ``data/`` (e.g. ``EmoBox/data/emodb``).  Expected layout, read strictly::

    <path>/fold_1/<corpus>_train_fold_1.jsonl      (``..._fold1.jsonl`` is accepted too, not both)
    <path>/fold_1/<corpus>_test_fold_1.jsonl
    <path>/fold_2/...                               folds numbered 1..K without gaps

Each non-empty line is a JSON object with at least ``key`` (``emodb-03a02Wb``), ``wav`` (the audio path in
EmoBox's tree) and ``emo`` (its emotion name).  A listed clip is found in the corpus by the end of its ``wav``
path without the extension (the file name, or as many trailing folders as make it unique), so any copy of the
corpus and any container match; its ``emo`` must agree with wav2emo's label.  Fold ``i`` here is EmoBox's
``fold_<i+1>``.  Refused, naming the file and line: a missing or duplicated list, a line that is not such an
object, a clip the corpus lacks or that matches several, an emotion that disagrees, a clip in train and test
of one fold or in the test lists of two folds.  Clips in neither list of a fold are not used there (counted in
the protocol).

EmoBox has no dev set: the dev part is drawn from each fold's training part - ``n_dev_actors`` training
speakers when the fold is speaker-independent, else ``dev_fraction`` of the training clips - and the protocol
says "speaker-dependent" when a fold's test speakers also have training clips.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FoldError
from .labels import LabelError, canonical_emotion
from .manifest import Manifest
from .registry import FoldProtocol
from .splits import SPEAKER_DEPENDENT, SPEAKER_INDEPENDENT, Split, choose_dev_actors

EMOBOX_NAMES = {"boredem": "boredom"}  # spellings in EmoBox's lists the vocabulary does not know
_FOLD_DIR = re.compile(r"^fold_(\d+)$")


def _key(path: str, n: int) -> tuple[str, ...]:
    parts = Path(path.replace("\\", "/")).parts
    parts = (*parts[:-1], Path(parts[-1]).stem) if parts else ()
    return tuple(parts[-n:])


def _list_file(fold_dir: Path, part: str, k: int) -> Path:
    found = sorted(set(fold_dir.glob(f"*_{part}_fold_{k}.jsonl")) | set(fold_dir.glob(f"*_{part}_fold{k}.jsonl")))
    if len(found) != 1:
        raise FoldError(f"folds=emobox: {fold_dir} holds {[p.name for p in found] or 'no'} {part} list(s); expected "
                        f"exactly one <corpus>_{part}_fold_{k}.jsonl")
    return found[0]


def read_list(path: Path) -> list[tuple[int, str, str]]:
    """``(line, wav, emo)`` of every entry of an EmoBox ``.jsonl`` list; FoldError naming a bad line."""
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise FoldError(f"{path} line {n}: not JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k] for k in ("key", "wav",
                                                                                                        "emo")):
            raise FoldError(f"{path} line {n}: expected an object with string fields key, wav and emo")
        out.append((n, entry["wav"], entry["emo"]))
    if not out:
        raise FoldError(f"{path}: no entries; expected one JSON object per clip")
    return out


class _Matcher:
    """Finds the corpus clip of an EmoBox ``wav`` path by its shortest unique trailing path (no extension)."""

    def __init__(self, manifest: Manifest) -> None:
        self.clips = list(manifest)
        self.by_n: dict[int, dict[tuple[str, ...], list[int]]] = {}

    def _index(self, n: int) -> dict[tuple[str, ...], list[int]]:
        if n not in self.by_n:
            idx: dict[tuple[str, ...], list[int]] = {}
            for i, c in enumerate(self.clips):
                idx.setdefault(_key(c.path, n), []).append(i)
            self.by_n[n] = idx
        return self.by_n[n]

    def find(self, wav: str, where: str) -> int:
        depth = len(Path(wav.replace("\\", "/")).parts)
        for n in range(1, depth + 1):
            hits = self._index(n).get(_key(wav, n), [])
            if len(hits) == 1:
                return hits[0]
            if not hits:
                break
        raise FoldError(f"{where}: clip {wav!r} is "
                        + ("not in the corpus" if not hits else f"ambiguous ({len(hits)} clips end like it)")
                        + "; expected EmoBox's list of this corpus")


class EmoBoxFolds:
    """EmoBox's folds of a corpus (see the module docstring); ``split(i)`` lists clips."""

    name = "emobox"

    def __init__(self, manifest: Manifest, cfg: Mapping[str, Any]) -> None:
        if not cfg.get("path"):
            raise FoldError("folds=emobox needs folds.path=<EmoBox>/data/<corpus> (EmoBox's fold lists; wav2emo "
                            "does not download them)")
        root = Path(str(cfg["path"])).expanduser()
        if not root.is_dir():
            raise FoldError(f"folds.path={root}: no such folder; expected EmoBox's data/<corpus> folder with fold_<k>/")
        ks = sorted(int(m.group(1)) for d in root.iterdir() if d.is_dir() and (m := _FOLD_DIR.match(d.name)))
        if not ks or ks != list(range(1, len(ks) + 1)):
            raise FoldError(f"folds.path={root}: fold folders {[f'fold_{k}' for k in ks]}; expected fold_1..fold_K")
        self.manifest, self.root = manifest, root
        self.n_dev, self.dev_seed = int(cfg.get("n_dev_actors", 2)), int(cfg.get("dev_seed", 0))
        self.dev_fraction = float(cfg.get("dev_fraction", 0.1))
        matcher = _Matcher(manifest)
        self.lists: list[dict[str, list[int]]] = []
        tested: dict[int, int] = {}
        for k in ks:
            parts = {}
            for part in ("train", "test"):
                path = _list_file(root / f"fold_{k}", part, k)
                rows = []
                for line, wav, emo in read_list(path):
                    where = f"{path} line {line}"
                    i = matcher.find(wav, where)
                    self._check_emotion(emo, manifest[i].emotion, where)
                    rows.append(i)
                dupes = sorted(manifest[i].clip_id for i, n in Counter(rows).items() if n > 1)
                if dupes:
                    raise FoldError(f"{path}: clips listed more than once: {dupes[:5]}")
                parts[part] = rows
            both = set(parts["train"]) & set(parts["test"])
            if both:
                raise FoldError(f"folds=emobox fold_{k}: {len(both)} clips in both train and test, e.g. "
                                f"{sorted(manifest[i].clip_id for i in both)[:5]}")
            for i in parts["test"]:
                if i in tested:
                    raise FoldError(f"folds=emobox: clip {manifest[i].clip_id!r} is in the test lists of fold_{tested[i]} "
                                    f"and fold_{k}; expected disjoint test folds")
                tested[i] = k
            self.lists.append(parts)

    @staticmethod
    def _check_emotion(emo: str, ours: str, where: str) -> None:
        try:
            theirs = canonical_emotion(EMOBOX_NAMES.get(emo.strip().lower(), emo))
        except LabelError as e:
            raise FoldError(f"{where}: {e}") from None
        if theirs != ours:
            raise FoldError(f"{where}: EmoBox says {emo!r} ({theirs}), the corpus's label is {ours!r}; expected the "
                            "same emotion (a list of another corpus or version?)")

    @property
    def num_folds(self) -> int:
        return len(self.lists)

    def __len__(self) -> int:
        return self.num_folds

    def split(self, fold: int) -> Split:
        if not isinstance(fold, (int, np.integer)) or not 0 <= fold < self.num_folds:
            raise FoldError(f"fold={fold!r}; expected an integer 0..{self.num_folds - 1} (EmoBox fold_1..fold_"
                            f"{self.num_folds})")
        fold = int(fold)
        m, parts = self.manifest, self.lists[fold]
        train, test = [m[i] for i in sorted(parts["train"])], [m[i] for i in sorted(parts["test"])]
        test_actors = {c.actor for c in test}
        train_actors = {c.actor for c in train}
        unused = len(m) - len(train) - len(test)
        if train_actors & test_actors:
            rng = np.random.default_rng([self.dev_seed, fold, 1019])
            n_dev = int(round(self.dev_fraction * len(train)))
            dev_ids = {train[i].clip_id for i in rng.permutation(len(train))[:n_dev]}
            kind = (f"{SPEAKER_DEPENDENT} (EmoBox's fold puts test speakers in training); dev: "
                    f"{self.dev_fraction:g} of the training clips")
        else:
            genders = {c.actor: c.gender for c in train}
            dev_actors = set(choose_dev_actors(genders, min(self.n_dev, max(len(genders) - 1, 0)), self.dev_seed, fold))
            dev_ids = {c.clip_id for c in train if c.actor in dev_actors}
            kind = f"{SPEAKER_INDEPENDENT}; dev: {len(dev_actors)} training speakers"
        protocol = (f"EmoBox folds ({self.root}), fold {fold} = EmoBox fold_{fold + 1}, {kind}"
                    + (f"; {unused} clips of the corpus in neither list (not used)" if unused else ""))
        dev = [c for c in train if c.clip_id in dev_ids]
        train = [c for c in train if c.clip_id not in dev_ids]

        def actors(clips) -> tuple[int, ...]:
            return tuple(sorted({c.actor for c in clips}))

        return Split(fold=fold, train=actors(train), dev=actors(dev), test=actors(test), protocol=protocol,
                     train_clips=tuple(c.clip_id for c in train), dev_clips=tuple(c.clip_id for c in dev),
                     test_clips=tuple(c.clip_id for c in test))

    def splits(self) -> list[Split]:
        return [self.split(k) for k in range(self.num_folds)]


PROTOCOL = FoldProtocol("emobox", lambda cfg, manifest: EmoBoxFolds(manifest, cfg), by_clip=True)
