"""Folds, the public entry: :func:`build_folds` (a folds config + a manifest -> folds), :func:`fold_count`
(how many, from the configs alone), :func:`folds_to_run` (the folds a ``fold=`` value asks for) and
:func:`assemble_fold` (one fold's train/dev/test manifests).

The protocols themselves are registered in :mod:`wav2emo.data.registry` (built-in ones in
:mod:`wav2emo.data.protocols`, :mod:`wav2emo.data.emobox`, :mod:`wav2emo.data.combined_folds`); importing
this module registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

from wav2emo.errors import ConfigError

from . import catalog  # noqa: F401  (registers the built-in recipes and protocols)
from .errors import FoldError
from .manifest import Manifest
from .registry import count_folds, make_folds
from .splits import Split


def build_folds(cfg: Mapping, manifest: Manifest, *, clip_splits: bool = False):
    """Folds from a ``conf/folds/*.yaml`` mapping (or the whole config's ``folds`` section) and a manifest.

    ``name`` picks the protocol (``default``: the corpus recipe's usual one; ``loso``, ``sessions``,
    ``speaker_kfold``, ``luna_jimenez``, ``speaker_dependent``, ``emobox``, ``combined``, or one you
    registered); a mapping with ``test_actors`` gives explicit folds.  Clip-level protocols
    (``speaker_dependent``, ``emobox``) need ``clip_splits=True``, which :func:`assemble_fold` passes: a
    caller that cuts the manifest by actors would otherwise put clips of one speaker in train and test.
    """
    return make_folds(cfg, manifest, clip_splits=clip_splits)


def fold_count(folds_cfg: Mapping, corpus_cfg: Mapping | None = None) -> int | None:
    """How many folds ``folds_cfg`` gives, from the configs alone; None when only the manifest can say
    (loso over a corpus of your own, a subset of actors, EmoBox's lists) - then use
    ``len(build_folds(cfg, manifest))``."""
    return count_folds(folds_cfg, corpus_cfg)


def folds_to_run(fold: Any, num_folds: int) -> list[int]:
    """The fold indices a ``fold=`` value asks for: an index, a list of distinct indices, or ``all``.

    Anything else is refused with a message naming the value: a typo must not train another fold,
    and a fold listed twice would train twice into the same fold directory (the second run would
    overwrite the first's checkpoints and count twice in the report), so duplicates are refused rather
    than silently dropped.
    """
    expected = f"expected a fold index 0..{num_folds - 1}, a list of distinct indices (fold=[0,2]) or 'all'"
    if fold is None or (isinstance(fold, str) and fold.strip() == "all"):
        return list(range(num_folds))
    is_list = isinstance(fold, (list, tuple)) or OmegaConf.is_list(fold)
    shown = list(fold) if is_list else fold
    folds = [_fold_index(item, shown, expected) for item in (fold if is_list else [fold])]
    if not folds:
        raise ConfigError(f"fold={shown}: the list is empty; {expected}")
    bad = [f for f in folds if not 0 <= f < num_folds]
    if bad:
        raise ConfigError(f"fold={shown}: fold {bad[0]} does not exist ({num_folds} folds); {expected}")
    dupes = sorted({f for f in folds if folds.count(f) > 1})
    if dupes:
        raise ConfigError(f"fold={shown}: fold {dupes[0]} is listed more than once (it would train twice into "
                         f"the same fold directory); {expected}")
    return folds


def _fold_index(item: Any, shown: Any, expected: str) -> int:
    if isinstance(item, bool) or not isinstance(item, (int, str)):
        raise ConfigError(f"fold={shown!r}: {item!r} is not a fold index; {expected}")
    if isinstance(item, str):
        text = item.strip()
        if not text.lstrip("-").isdigit():
            raise ConfigError(f"fold={shown!r}: {item!r} is not a fold index; {expected}")
        return int(text)
    return int(item)


@dataclass(frozen=True)
class FoldAssembly:
    """One fold, assembled: the split, and the manifest of each part (train, dev, test)."""

    split: Split
    parts: dict[str, Manifest]
    protocol: str
    class_names: tuple[str, ...]


def assemble_fold(manifest: Manifest, folds_cfg: Mapping, fold: int, *, require_labels: bool = True) -> FoldAssembly:
    """The single place where a fold is put together (datamodule, baselines, predict/eval share it).

    Refuses unlabelled clips when ``require_labels`` (training and evaluation need a label on every
    clip), builds the folds the config names, and cuts the manifest into train/dev/test by speaker (or
    by clip, for the speaker-dependent protocol).  Checks that no speaker is in train and test of a
    speaker-independent split and that no clip is in two parts.
    """
    if require_labels:
        manifest.require_labels("training and evaluation on folds")
    split = build_folds(folds_cfg, manifest, clip_splits=True).split(fold)
    if split.by_clip:
        parts = {
            "train": manifest.select(split.train_clips or ()),
            "dev": manifest.select(split.dev_clips or ()),
            "test": manifest.select(split.test_clips or ()),
        }
    else:
        shared = (set(split.train) | set(split.dev)) & set(split.test)
        if shared:  # SpeakerFolds guarantees this; a guard against a future protocol that does not
            raise FoldError(f"fold {fold}: speakers {sorted(shared)} are in training/dev and test")
        parts = {"train": manifest.filter(split.train), "dev": manifest.filter(split.dev),
                 "test": manifest.filter(split.test)}
    ids = [i for m in parts.values() for i in m.clip_ids]
    if len(ids) != len(set(ids)):
        raise FoldError(f"fold {fold}: a clip is in two parts of the split ({split.protocol})")
    if len(parts["train"]) == 0 or len(parts["test"]) == 0:
        raise FoldError(f"fold {fold}: the split leaves no training or no test clips ({split.protocol})")
    return FoldAssembly(split=split, parts=parts, protocol=split.protocol, class_names=manifest.class_names)
