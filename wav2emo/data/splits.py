"""Splits of a corpus into train, dev and test speakers, and the rule that draws the dev speakers.

The dev actors are drawn from the training actors only, so checkpoints and hyper-parameters are never
chosen on the test speakers (a flaw of the reference system), and a dev set is never made of
utterances of training speakers.  The dev choice depends only on the training actors (ids, genders)
and the seed, so it is reproducible and independent of who the test actors are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .dev_sets import Clips, DevChoice, DevRule, choose_dev, describe
from .errors import FoldError

_GENDER_ORDER = ("male", "female")


SPEAKER_INDEPENDENT = "speaker-independent"
SPEAKER_DEPENDENT = "speaker-dependent"


@dataclass(frozen=True)
class Split:
    """The actors (sorted ids) of one fold's train, dev and test sets.

    ``protocol`` is the sentence a report prints (it says "speaker-dependent" where test speakers are
    also trained on).  A speaker-dependent split lists its clips (``*_clips``); the actor tuples then
    name every speaker with clips in that part, so they overlap.
    """

    fold: int
    train: tuple[int, ...]
    dev: tuple[int, ...]
    test: tuple[int, ...]
    protocol: str = ""
    train_clips: tuple[str, ...] | None = None
    dev_clips: tuple[str, ...] | None = None
    test_clips: tuple[str, ...] | None = None

    @property
    def by_clip(self) -> bool:
        """Whether the parts are lists of clips (speaker-dependent folds, EmoBox's fold files)."""
        return self.train_clips is not None

    @property
    def speaker_dependent(self) -> bool:
        """Whether a test speaker also has clips in training or dev."""
        return self.by_clip and bool((set(self.train) | set(self.dev)) & set(self.test))


def _gender_groups(genders: Mapping[int, str]) -> list[str]:
    found = set(genders.values())
    return [g for g in _GENDER_ORDER if g in found] + sorted(found - set(_GENDER_ORDER))


class SpeakerFolds:
    """K test folds of actors; ``split(k)`` gives the train/dev/test actors of fold k."""

    def __init__(
        self,
        test_folds: Sequence[Sequence[int]],
        genders: Mapping[int, str],
        *,
        n_dev_actors: int = 2,
        dev_seed: int = 0,
        name: str = "",
        protocol: str = "",
        dev_rule: DevRule | None = None,
        clips: Clips | None = None,
        class_names: Sequence[str] = (),
        dev_wanted: bool | None = None,
    ) -> None:
        """``dev_rule`` and ``clips`` (actor -> (clip id, label), :func:`~wav2emo.data.dev_sets.clips_by_actor`)
        choose dev sets by class coverage or from clips (:mod:`wav2emo.data.dev_sets`); without them the dev set
        is ``n_dev_actors`` gender-balanced training speakers.  ``dev_wanted=False`` means no dev set at all
        (default: ``n_dev_actors > 0``)."""
        self.protocol = protocol or f"{name or 'speaker folds'}: {SPEAKER_INDEPENDENT}"
        self.test_folds: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(int(a) for a in f)) for f in test_folds
        )
        self.genders: dict[int, str] = {int(a): str(g) for a, g in genders.items()}
        self.n_dev_actors = int(n_dev_actors)
        self.dev_seed = int(dev_seed)
        self.name = name
        self._validate()
        self.dev_rule, self.clips = dev_rule, clips
        wanted = self.n_dev_actors > 0 if dev_wanted is None else bool(dev_wanted)
        self.dev_choices: list[DevChoice] | None = None
        if dev_rule is not None and clips is not None and wanted:
            self.dev_choices = [self._choose(k) for k in range(self.num_folds)]
            if any(c.mode != "speakers" or c.uncovered for c in self.dev_choices):
                self.protocol += "; " + describe(self.dev_choices, dev_rule, list(class_names), self.n_dev_actors)

    def _choose(self, fold: int) -> DevChoice:
        rest = sorted(set(self.genders) - set(self.test_folds[fold]))
        by_gender = choose_dev_actors({a: self.genders[a] for a in rest}, self.n_dev_actors, self.dev_seed, fold)
        return choose_dev(self.dev_rule, self.clips, rest, by_gender, self.dev_seed, fold)  # type: ignore[arg-type]

    def _validate(self) -> None:
        label = f"folds {self.name!r}" if self.name else "folds"
        if not self.test_folds:
            raise FoldError(f"{label}: no test folds given; expected at least 2")
        empty = [k for k, f in enumerate(self.test_folds) if not f]
        if empty:
            raise FoldError(f"{label}: folds {empty} have no test actors")
        seen: dict[int, int] = {}
        repeated = []
        for k, fold in enumerate(self.test_folds):
            for a in fold:
                if a in seen:
                    repeated.append(f"actor {a} in folds {seen[a]} and {k}")
                seen[a] = k
        if repeated:
            raise FoldError(f"{label}: folds overlap: {'; '.join(repeated[:10])}; expected disjoint folds")
        unknown = sorted(set(seen) - set(self.genders))
        if unknown:
            raise FoldError(
                f"{label}: actors {unknown} are in the folds but have no known gender (not in the corpus)"
            )
        unplaced = sorted(set(self.genders) - set(seen))
        if unplaced:
            raise FoldError(
                f"{label}: actors {unplaced} are in the corpus but in no fold; expected each in exactly one"
            )
        if self.n_dev_actors < 0:
            raise FoldError(f"{label}: n_dev_actors={self.n_dev_actors}; expected 0 or more")
        for k, fold in enumerate(self.test_folds):
            n_train = len(self.genders) - len(fold)
            if n_train - self.n_dev_actors < 1:
                raise FoldError(
                    f"{label}: fold {k} leaves {n_train} non-test actors, too few for {self.n_dev_actors} dev "
                    "actors and at least one training actor"
                )

    @property
    def num_folds(self) -> int:
        return len(self.test_folds)

    @property
    def actors(self) -> list[int]:
        return sorted(self.genders)

    def split(self, fold: int) -> Split:
        """Train/dev/test actors of ``fold`` (0-based)."""
        if not isinstance(fold, (int, np.integer)) or not 0 <= fold < self.num_folds:
            raise FoldError(
                f"fold={fold!r}; expected an integer 0..{self.num_folds - 1} ({self.name or 'folds'})"
            )
        fold = int(fold)
        test = self.test_folds[fold]
        rest = sorted(set(self.genders) - set(test))
        if self.dev_choices is not None and self.dev_choices[fold].clip_ids is not None:
            return self._clip_split(fold, rest, self.dev_choices[fold].clip_ids)
        if self.dev_choices is not None:
            dev = self.dev_choices[fold].actors
        else:
            dev = choose_dev_actors({a: self.genders[a] for a in rest}, self.n_dev_actors, self.dev_seed, fold)
        train = tuple(a for a in rest if a not in dev)
        return Split(fold=fold, train=train, dev=dev, test=test, protocol=self.protocol)

    def _clip_split(self, fold: int, rest: list[int], dev_ids: tuple[str, ...]) -> Split:
        """A split whose dev set is clips of the training speakers (few training speakers)."""
        clips = self.clips or {}
        dev = set(dev_ids)
        train_ids = tuple(cid for a in rest for cid, _ in clips.get(a, ()) if cid not in dev)
        test = self.test_folds[fold]
        test_ids = tuple(cid for a in test for cid, _ in clips.get(a, ()))
        return Split(fold=fold, train=tuple(rest), dev=tuple(sorted({a for a in rest for cid, _ in clips.get(a, ())
                                                                     if cid in dev})), test=test,
                     protocol=self.protocol, train_clips=train_ids, dev_clips=tuple(dev_ids), test_clips=test_ids)

    def splits(self) -> list[Split]:
        return [self.split(k) for k in range(self.num_folds)]

    def __iter__(self) -> Iterator[Split]:
        return iter(self.splits())

    def __len__(self) -> int:
        return self.num_folds

    def __repr__(self) -> str:
        return f"SpeakerFolds(name={self.name!r}, folds={list(map(list, self.test_folds))}, n_dev={self.n_dev_actors})"


def choose_dev_actors(train_genders: Mapping[int, str], n_dev: int, seed: int, fold: int) -> tuple[int, ...]:
    """Gender-balanced dev actors drawn from the training actors only.

    Each gender's training actors are put in a seeded random order (seed and fold only: the test actors
    have no say) and the first ones are taken: n_dev/2 per gender; an odd extra one alternates between
    the genders by fold.  A gender with too few actors is topped up from the others.
    """
    if n_dev <= 0:
        return ()
    groups = _gender_groups(train_genders)
    rng = np.random.default_rng([int(seed), int(fold), 1009])
    ordered = {}
    for g in groups:
        members = sorted(a for a, x in train_genders.items() if x == g)
        ordered[g] = [members[i] for i in rng.permutation(len(members))]
    quota = {g: n_dev // len(groups) for g in groups}
    for j in range(n_dev % len(groups)):
        quota[groups[(fold + j) % len(groups)]] += 1
    chosen = [a for g in groups for a in ordered[g][: quota[g]]]
    spare = [a for g in groups for a in ordered[g][quota[g] :]]
    chosen += spare[: n_dev - len(chosen)]
    return tuple(sorted(chosen))


