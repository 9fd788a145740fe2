"""``folds=emobox folds.path=<EmoBox>/data/<corpus>``: EmoBox's published folds, so numbers compare with its tables.

EmoBox (Ma et al., Interspeech 2024, https://github.com/emo-box/EmoBox) publishes, per corpus, the clips of
every fold.  wav2emo cannot download them; point ``folds.path`` at the folder of one corpus in your copy of
EmoBox's ``data/`` (e.g. ``EmoBox/data/emodb``), as the repository ships it::

    <path>/label_map.json                           EmoBox's emotion codes -> its classes (label_dict.json: EMOVO)
    <path>/fold_1/<corpus>_train_fold_1.jsonl      the documented lists: fields key, wav, emo
    <path>/fold_1/<corpus>_test_fold_1.jsonl
    <path>/fold_2/...                               folds numbered 1..K without gaps

EmoBox's README and its loader (``EmoBox/EmoDataset.py``) read ``<corpus>_{train,test}_fold_<k>.jsonl`` with
the fields ``wav`` and ``emo``; ``data/emodb`` also ships an older second set, ``emodb_{train,test}_fold<k>.jsonl``
(fields ``audio`` and ``label``, the same clips).  Where both exist the documented set is read and the protocol
says so; the older set is read only where it is the only one.  Each line is a JSON object; a listed clip is found
in the corpus by its file name (a clip id of the recipe: ``JE_n23`` is SAVEE's ``AudioData/JE/n23.wav``), else
by the end of its path without the extension (any copy of the corpus and any container match); its emotion,
through EmoBox's ``label_map.json``, must agree with wav2emo's label.  A listed clip that the corpus check set
aside (a known defect of the release, e.g. CREMA-D's silent ``1076_MTI_SAD_XX``) is left out and counted.  Fold
``i`` here is EmoBox's ``fold_<i+1>``.  Refused, naming the file and line: a missing list, a line that is not
such an object, a clip the corpus lacks or that matches several, an emotion that disagrees, a clip in train and
test of one fold or in the test lists of two folds.

EmoBox has no dev set: the dev part is drawn from each fold's training part - ``n_dev_actors`` training
speakers when the fold is speaker-independent, else ``dev_fraction`` of the training clips.  The speaker overlap
between EmoBox's training and test lists is measured over all folds and stated once, in the protocol every fold
shares (the report prints it once).
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


DOCUMENTED = "<corpus>_{train,test}_fold_<k>.jsonl (fields wav, emo; EmoBox's README and EmoDataset.py)"
OLDER = "<corpus>_{train,test}_fold<k>.jsonl (fields audio, label)"
FIELDS = {"documented": ("wav", "emo"), "older": ("audio", "label")}


def _list_file(fold_dir: Path, part: str, k: int) -> tuple[Path, str]:
    """The list of ``part`` in ``fold_dir`` and its variant: the documented one where it exists."""
    for variant, pattern in (("documented", f"*_{part}_fold_{k}.jsonl"), ("older", f"*_{part}_fold{k}.jsonl")):
        found = sorted(fold_dir.glob(pattern))
        if len(found) > 1:
            raise FoldError(f"folds=emobox: {fold_dir} holds {[p.name for p in found]}: {len(found)} {part} lists of "
                            f"one kind; expected exactly one <corpus>_{part}_fold_{k}.jsonl")
        if found:
            return found[0], variant
    raise FoldError(f"folds=emobox: {fold_dir} holds no {part} list; expected <corpus>_{part}_fold_{k}.jsonl "
                    f"(or EmoBox's older <corpus>_{part}_fold{k}.jsonl)")


def read_list(path: Path, variant: str = "documented") -> list[tuple[int, str, str]]:
    """``(line, wav, emo)`` of every entry of an EmoBox ``.jsonl`` list; FoldError naming a bad line."""
    wav_key, emo_key = FIELDS[variant]
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as e:
            raise FoldError(f"{path} line {n}: not JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) and entry[k]
                                                  for k in ("key", wav_key, emo_key)):
            raise FoldError(f"{path} line {n}: expected an object with string fields key, {wav_key} and {emo_key}")
        out.append((n, entry[wav_key], entry[emo_key]))
    if not out:
        raise FoldError(f"{path}: no entries; expected one JSON object per clip")
    return out


def read_label_map(root: Path) -> dict[str, str]:
    """EmoBox's code -> class map of this corpus (``label_map.json`` or ``label_dict.json``), keys lower-cased;
    empty when the folder has none."""
    for name in ("label_map.json", "label_dict.json"):
        path = root / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise FoldError(f"{path}: not JSON ({e.msg}); expected EmoBox's map of emotion codes") from None
            if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
                raise FoldError(f"{path}: expected a JSON object of emotion code -> class name")
            return {str(k).strip().lower(): v for k, v in data.items()}
    return {}


def set_aside_stems(manifest: Manifest) -> set[str]:
    """File stems the corpus check left out of ``manifest`` (known defects, skipped, set aside)."""
    report = getattr(manifest, "report", None)
    if report is None:
        return set()
    paths = [f for d in report.defects if d["action"].startswith("set aside") for f in d.get("files", [d["file"]])]
    paths += [d["path"] for d in report.skipped]
    paths += [d["what"].split(":", 1)[0] for d in report.set_aside]
    return {Path(p.replace("\\", "/")).stem for p in paths}


class _Matcher:
    """Finds the corpus clip of an EmoBox ``wav`` path by its shortest unique trailing path (no extension)."""

    def __init__(self, manifest: Manifest) -> None:
        self.clips = list(manifest)
        self.by_n: dict[int, dict[tuple[str, ...], list[int]]] = {}
        self.by_id = {c.clip_id: i for i, c in enumerate(self.clips)}
        self.left_out = set_aside_stems(manifest)

    def _index(self, n: int) -> dict[tuple[str, ...], list[int]]:
        if n not in self.by_n:
            idx: dict[tuple[str, ...], list[int]] = {}
            for i, c in enumerate(self.clips):
                idx.setdefault(_key(c.path, n), []).append(i)
            self.by_n[n] = idx
        return self.by_n[n]

    def find(self, wav: str, where: str) -> int | None:
        """The clip's row; None for a clip the corpus check set aside; FoldError when not found."""
        stem = Path(wav.replace("\\", "/")).stem
        if stem in self.by_id:
            return self.by_id[stem]
        depth = len(Path(wav.replace("\\", "/")).parts)
        for n in range(1, depth + 1):
            hits = self._index(n).get(_key(wav, n), [])
            if len(hits) == 1:
                return hits[0]
            if not hits:
                break
        if not hits and stem in self.left_out:
            return None
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
        self.label_map = read_label_map(root)
        self.lists: list[dict[str, list[int]]] = []
        self.variants: set[str] = set()
        self.left_out: set[str] = set()  # listed clips the corpus check set aside
        tested: dict[int, int] = {}
        for k in ks:
            parts = {}
            for part in ("train", "test"):
                path, variant = _list_file(root / f"fold_{k}", part, k)
                self.variants.add(variant)
                rows = []
                for line, wav, emo in read_list(path, variant):
                    where = f"{path} line {line}"
                    i = matcher.find(wav, where)
                    if i is None:
                        self.left_out.add(Path(wav.replace("\\", "/")).stem)
                        continue
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
        self.protocol = self._protocol()

    def _check_emotion(self, emo: str, ours: str, where: str) -> None:
        name = self.label_map.get(emo.strip().lower(), emo)
        try:
            theirs = canonical_emotion(EMOBOX_NAMES.get(name.strip().lower(), name))
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

    def overlap(self) -> list[tuple[int, float]]:
        """Per fold: (test speakers with training clips, share of test clips from such speakers)."""
        m, out = self.manifest, []
        for parts in self.lists:
            train = {m[i].actor for i in parts["train"]}
            test = [m[i].actor for i in parts["test"]]
            seen = {a for a in test if a in train}
            out.append((len(seen), sum(a in seen for a in test) / max(len(test), 1)))
        return out

    def _protocol(self) -> str:
        """One sentence for every fold (so a report states the overlap once, not once per fold)."""
        overlap = self.overlap()
        dependent = [k for k, (n, _) in enumerate(overlap) if n]
        lists = ("EmoBox's documented lists " + DOCUMENTED if self.variants == {"documented"} else
                 "EmoBox's older lists " + OLDER if self.variants == {"older"} else "both list variants")
        if dependent:
            share = sum(overlap[k][1] for k in dependent) / len(dependent)
            kind = (f"{SPEAKER_DEPENDENT}: in {len(dependent)} of {self.num_folds} folds the test speakers also have "
                    f"training clips ({share:.0%} of those folds' test clips come from speakers trained on); dev: "
                    f"{self.dev_fraction:g} of the training clips there")
            if len(dependent) < self.num_folds:
                kind += f", {self.n_dev} training speakers elsewhere"
        else:
            kind = (f"{SPEAKER_INDEPENDENT}: no test speaker has training clips in any fold; dev: {self.n_dev} "
                    "training speakers")
        m = self.manifest
        unused = [len(m) - len(p["train"]) - len(p["test"]) for p in self.lists]
        plural = "s" if self.num_folds != 1 else ""
        text = (f"EmoBox folds ({self.root}, {self.num_folds} fold{plural}; fold i = EmoBox fold_<i+1>; read from {lists}), "
                f"{kind}")
        if any(unused):
            text += f"; clips of the corpus in neither list of a fold (not used there): {unused}"
        if self.left_out:
            text += (f"; {len(self.left_out)} listed clips the corpus check set aside (not used): "
                     f"{', '.join(sorted(self.left_out)[:5])}")
        return text

    def split(self, fold: int) -> Split:
        if not isinstance(fold, (int, np.integer)) or not 0 <= fold < self.num_folds:
            raise FoldError(f"fold={fold!r}; expected an integer 0..{self.num_folds - 1} (EmoBox fold_1..fold_"
                            f"{self.num_folds})")
        fold = int(fold)
        m, parts = self.manifest, self.lists[fold]
        train, test = [m[i] for i in sorted(parts["train"])], [m[i] for i in sorted(parts["test"])]
        if {c.actor for c in train} & {c.actor for c in test}:
            rng = np.random.default_rng([self.dev_seed, fold, 1019])
            n_dev = int(round(self.dev_fraction * len(train)))
            dev_ids = {train[i].clip_id for i in rng.permutation(len(train))[:n_dev]}
        else:
            genders = {c.actor: c.gender for c in train}
            dev_actors = set(choose_dev_actors(genders, min(self.n_dev, max(len(genders) - 1, 0)), self.dev_seed, fold))
            dev_ids = {c.clip_id for c in train if c.actor in dev_actors}
        dev = [c for c in train if c.clip_id in dev_ids]
        train = [c for c in train if c.clip_id not in dev_ids]

        def actors(clips) -> tuple[int, ...]:
            return tuple(sorted({c.actor for c in clips}))

        return Split(fold=fold, train=actors(train), dev=actors(dev), test=actors(test), protocol=self.protocol,
                     train_clips=tuple(c.clip_id for c in train), dev_clips=tuple(c.clip_id for c in dev),
                     test_clips=tuple(c.clip_id for c in test))

    def splits(self) -> list[Split]:
        return [self.split(k) for k in range(self.num_folds)]


PROTOCOL = FoldProtocol("emobox", lambda cfg, manifest: EmoBoxFolds(manifest, cfg), by_clip=True)
