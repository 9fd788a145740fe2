"""Folds, the public entry: :func:`build_folds` (a folds config + a manifest -> folds), :func:`fold_count`
(how many, from the configs alone) and :func:`assemble_fold` (one fold's train/dev/test manifests).

The protocols themselves are registered in :mod:`wav2emo.data.registry` (built-in ones in
:mod:`wav2emo.data.protocols`, :mod:`wav2emo.data.emobox`, :mod:`wav2emo.data.combined_folds`); importing
this module registers them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

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
