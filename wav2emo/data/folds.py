"""Speaker-independent folds: which actors train, which choose checkpoints (dev), which are tested.

The dev actors are drawn from the training actors only, so checkpoints and hyper-parameters are never
chosen on the test speakers (a flaw of the reference system), and a dev set is never made of
utterances of training speakers.  The dev choice depends only on the training actors (ids, genders)
and the seed, so it is reproducible and independent of who the test actors are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from wav2emo.errors import UserError

from .manifest import Manifest

LUNA_JIMENEZ_FOLDS: list[list[int]] = [
    [2, 5, 14, 15, 16],
    [3, 6, 7, 13, 18],
    [10, 11, 12, 19, 20],
    [8, 17, 21, 23, 24],
    [1, 4, 9, 22],
]
_GENDER_ORDER = ("male", "female")


class FoldError(UserError, ValueError):
    """Folds that cannot be used as given; the message names the offending actors or values."""


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
    ) -> None:
        self.protocol = protocol or f"{name or 'speaker folds'}: {SPEAKER_INDEPENDENT}"
        self.test_folds: tuple[tuple[int, ...], ...] = tuple(
            tuple(sorted(int(a) for a in f)) for f in test_folds
        )
        self.genders: dict[int, str] = {int(a): str(g) for a, g in genders.items()}
        self.n_dev_actors = int(n_dev_actors)
        self.dev_seed = int(dev_seed)
        self.name = name
        self._validate()

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
        dev = choose_dev_actors({a: self.genders[a] for a in rest}, self.n_dev_actors, self.dev_seed, fold)
        train = tuple(a for a in rest if a not in dev)
        return Split(fold=fold, train=train, dev=dev, test=test, protocol=self.protocol)

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


def luna_jimenez_folds(genders: Mapping[int, str], n_dev_actors: int = 2, dev_seed: int = 0) -> SpeakerFolds:
    """The five RAVDESS actor folds of Luna-Jimenez et al. (fold 4 has 4 test actors)."""
    return SpeakerFolds(
        LUNA_JIMENEZ_FOLDS, genders, n_dev_actors=n_dev_actors, dev_seed=dev_seed, name="luna_jimenez"
    )


def speaker_kfold(
    genders: Mapping[int, str], k: int = 5, *, seed: int = 0, n_dev_actors: int = 2, dev_seed: int = 0
) -> SpeakerFolds:
    """Generic gender-stratified k-fold over speakers, for corpora without published folds.

    Each gender's speakers, in a seeded random order, are dealt round-robin into the folds; the deal
    continues where the previous gender stopped, so fold sizes differ by at most one.
    """
    if not isinstance(k, (int, np.integer)) or not 2 <= k <= len(genders):
        raise FoldError(f"k={k!r}; expected an integer 2..{len(genders)} (the number of speakers)")
    rng = np.random.default_rng([int(seed), 2027])
    folds: list[list[int]] = [[] for _ in range(k)]
    pos = 0
    for g in _gender_groups(genders):
        members = sorted(a for a, x in genders.items() if x == g)
        for i in rng.permutation(len(members)):
            folds[pos % k].append(members[i])
            pos += 1
    return SpeakerFolds(folds, genders, n_dev_actors=n_dev_actors, dev_seed=dev_seed, name="speaker_kfold")


def leave_one_speaker_out(
    genders: Mapping[int, str], *, n_dev_actors: int = 2, dev_seed: int = 0, speakers: Mapping[int, str] | None = None
) -> SpeakerFolds:
    """One fold per speaker.  With two speakers (TESS) it is "train on one, test on the other": no
    speaker is left for a dev set, so none is drawn, and the protocol says so."""
    actors = sorted(genders)
    if len(actors) < 2:
        raise FoldError(f"leave-one-speaker-out needs at least 2 speakers; the corpus has {actors}")
    name_of = (lambda a: speakers.get(a, str(a))) if speakers else str
    if len(actors) == 2:
        a, b = actors
        protocol = (
            f"two speakers, {SPEAKER_INDEPENDENT}: fold 0 trains on {name_of(b)} and tests on {name_of(a)}, "
            f"fold 1 trains on {name_of(a)} and tests on {name_of(b)}; no dev speaker (one training speaker)"
        )
        return SpeakerFolds([[a], [b]], genders, n_dev_actors=0, dev_seed=dev_seed, name="loso", protocol=protocol)
    n_dev = min(int(n_dev_actors), len(actors) - 2)
    return SpeakerFolds(
        [[a] for a in actors], genders, n_dev_actors=n_dev, dev_seed=dev_seed, name="loso",
        protocol=f"leave-one-speaker-out ({len(actors)} folds), {SPEAKER_INDEPENDENT}, {n_dev} dev speakers "
        "from the training speakers",
    )


def session_folds(manifest: Manifest, *, n_dev_actors: int = 2, dev_seed: int = 0) -> SpeakerFolds:
    """One fold per recording session (IEMOCAP: 5 sessions of two speakers each)."""
    sessions: dict[int, set[int]] = {}
    for c in manifest:
        sessions.setdefault(c.session, set()).add(c.actor)
    if 0 in sessions or len(sessions) < 2:
        raise FoldError(
            f"folds 'sessions': manifest {manifest.name!r} has sessions {sorted(sessions)}; expected a corpus "
            "with recording sessions 1..n on every clip (IEMOCAP); use folds=loso or speaker_kfold"
        )
    two = [a for acts in sessions.values() for a in acts]
    if len(two) != len(set(two)):
        raise FoldError(f"folds 'sessions': a speaker of {manifest.name!r} appears in several sessions")
    return SpeakerFolds(
        [sorted(sessions[s]) for s in sorted(sessions)], manifest.genders(), n_dev_actors=n_dev_actors,
        dev_seed=dev_seed, name="sessions",
        protocol=f"leave-one-session-out ({len(sessions)} folds), {SPEAKER_INDEPENDENT}, dev speakers from "
        "the training sessions",
    )


class SpeakerDependentFolds:
    """Random k folds over clips (stratified by emotion): the same speakers train and test.

    Papers report it, so it is available; its ``protocol`` (printed by every report) says
    "speaker-dependent".  The dev clips are a random ``dev_fraction`` of each fold's training clips.
    """

    name = "speaker_dependent"

    def __init__(self, manifest: Manifest, k: int = 5, *, seed: int = 0, dev_fraction: float = 0.1) -> None:
        if not isinstance(k, (int, np.integer)) or not 2 <= k <= len(manifest):
            raise FoldError(f"folds speaker_dependent: k={k!r}; expected an integer 2..{len(manifest)}")
        if not 0 <= float(dev_fraction) < 1:
            raise FoldError(f"folds speaker_dependent: dev_fraction={dev_fraction!r}; expected 0 <= x < 1")
        self.manifest, self.k, self.seed, self.dev_fraction = manifest, int(k), int(seed), float(dev_fraction)
        self.protocol = (
            f"random {k}-fold over clips, {SPEAKER_DEPENDENT} (test speakers are also trained on; not "
            "comparable with speaker-independent results)"
        )
        rng = np.random.default_rng([self.seed, 4099])
        fold_of: dict[str, int] = {}
        by_label: dict[int, list[str]] = {}
        for c in manifest:
            by_label.setdefault(c.label, []).append(c.clip_id)
        pos = 0
        for label in sorted(by_label):
            ids = by_label[label]
            for i in rng.permutation(len(ids)):
                fold_of[ids[i]] = pos % self.k
                pos += 1
        self._fold_of = fold_of

    @property
    def num_folds(self) -> int:
        return self.k

    def split(self, fold: int) -> Split:
        if not isinstance(fold, (int, np.integer)) or not 0 <= fold < self.k:
            raise FoldError(f"fold={fold!r}; expected an integer 0..{self.k - 1} (speaker_dependent)")
        fold = int(fold)
        test = [c.clip_id for c in self.manifest if self._fold_of[c.clip_id] == fold]
        rest = [c.clip_id for c in self.manifest if self._fold_of[c.clip_id] != fold]
        rng = np.random.default_rng([self.seed, fold, 1013])
        n_dev = int(round(self.dev_fraction * len(rest)))
        dev = set(rest[i] for i in rng.permutation(len(rest))[:n_dev])
        train = [i for i in rest if i not in dev]

        def actors(ids) -> tuple[int, ...]:
            return tuple(sorted({self.manifest[self.manifest.index_of(i)].actor for i in ids}))

        return Split(
            fold=fold, train=actors(train), dev=actors(dev), test=actors(test), protocol=self.protocol,
            train_clips=tuple(train), dev_clips=tuple(sorted(dev, key=self.manifest.index_of)),
            test_clips=tuple(test),
        )

    def splits(self) -> list[Split]:
        return [self.split(k) for k in range(self.k)]

    def __len__(self) -> int:
        return self.k


def _folds_section(cfg: Mapping) -> Mapping:
    inner = cfg.get("folds")
    return inner if isinstance(inner, Mapping) else cfg


def build_folds(
    cfg: Mapping, manifest: Manifest, *, clip_splits: bool = False
) -> SpeakerFolds | SpeakerDependentFolds:
    """Folds from a ``conf/folds/*.yaml`` mapping (or the whole config's ``folds`` section) and a manifest.

    By ``name``: ``loso`` (one speaker per fold), ``sessions`` (IEMOCAP), ``speaker_dependent`` (random
    clip folds, flagged; only with ``clip_splits=True``, which :func:`assemble_fold` passes: a caller that
    cuts the manifest by actors would otherwise put every clip in every part), else ``test_actors`` (explicit folds, e.g. luna_jimenez) or ``k``
    (speaker_kfold); the genders come from the manifest.
    """
    cfg = _folds_section(cfg)
    name = str(cfg.get("name", ""))
    n_dev = int(cfg.get("n_dev_actors", 2))
    dev_seed = int(cfg.get("dev_seed", 0))
    genders = manifest.genders()
    if name == "loso":
        speakers = {c.actor: c.speaker for c in manifest if c.speaker}
        return leave_one_speaker_out(genders, n_dev_actors=n_dev, dev_seed=dev_seed, speakers=speakers)
    if name == "sessions":
        return session_folds(manifest, n_dev_actors=n_dev, dev_seed=dev_seed)
    if name == "combined":  # several corpora (data=multi), each with its own folds
        from .combined_folds import CombinedFolds

        return CombinedFolds(manifest, cfg)  # type: ignore[return-value]
    if name == "emobox":  # EmoBox's published fold files
        from .emobox import EmoBoxFolds

        if not clip_splits:
            raise FoldError("folds=emobox lists clips, not speakers: it must be assembled with "
                            "wav2emo.data.folds.assemble_fold")
        return EmoBoxFolds(manifest, cfg)  # type: ignore[return-value]
    if name == "speaker_dependent":
        if not clip_splits:
            raise FoldError(
                "folds=speaker_dependent splits clips, not speakers: it must be assembled with "
                "wav2emo.data.folds.assemble_fold (cutting the manifest by actors would put every clip in "
                "train and test)"
            )
        return SpeakerDependentFolds(
            manifest, int(cfg.get("k", 5)), seed=int(cfg.get("seed", 0)),
            dev_fraction=float(cfg.get("dev_fraction", 0.1)),
        )
    explicit = cfg.get("test_actors")
    if explicit is None and name == "luna_jimenez":
        explicit = LUNA_JIMENEZ_FOLDS
    if explicit is not None:
        folds = [[int(a) for a in f] for f in explicit]
        needed = sorted({a for f in folds for a in f})
        missing = sorted(set(needed) - set(genders))
        if missing:
            raise FoldError(
                f"folds {name!r} need actors {missing}, which manifest {manifest.name!r} lacks (it has "
                f"{manifest.actors}); use the full corpus or folds: speaker_kfold"
            )
        return SpeakerFolds(folds, genders, n_dev_actors=n_dev, dev_seed=dev_seed, name=name)
    if cfg.get("k") is not None:
        return speaker_kfold(
            genders, int(cfg["k"]), seed=int(cfg.get("seed", 0)), n_dev_actors=n_dev, dev_seed=dev_seed
        )
    raise FoldError(
        f"folds config {dict(cfg)!r}: expected test_actors (explicit folds), k (speaker k-fold), or name "
        "loso, sessions or speaker_dependent"
    )


# Speakers (loso) and sessions of the corpora with a recipe, for counting folds without the manifest.
KNOWN_SPEAKERS = {"ravdess": 24, "synthetic": 24, "emodb": 10, "crema_d": 91, "tess": 2, "savee": 4, "emovo": 6,
                  "iemocap": 10}
KNOWN_SESSIONS = {"iemocap": 5}


def fold_count(folds_cfg: Mapping, corpus_cfg: Mapping | None = None) -> int | None:
    """How many folds ``folds_cfg`` gives, from the configs alone; None when only the manifest can say
    (loso over a corpus of your own, or a subset of actors) - then use ``len(build_folds(cfg, manifest))``.
    """
    cfg = _folds_section(folds_cfg)
    name = str(cfg.get("name", ""))
    corpus = corpus_cfg.get("corpus", corpus_cfg) if isinstance(corpus_cfg, Mapping) else {}
    corpus = corpus if isinstance(corpus, Mapping) else {}
    cname, actors = corpus.get("name"), corpus.get("actors")
    partial = corpus.get("require_complete", True) is False  # a partial copy: the documented count may not hold
    if name == "loso":
        if isinstance(actors, int) and not isinstance(actors, bool):
            return actors
        if actors is not None:
            return len(list(actors))
        if cname == "synthetic" and corpus.get("actors") is None:
            return None
        return None if partial else KNOWN_SPEAKERS.get(cname)
    if name == "sessions":
        return KNOWN_SESSIONS.get(cname) if actors is None and not partial else None
    if name == "speaker_dependent":
        return int(cfg.get("k", 5))
    if name == "combined":
        from .combined_folds import combined_fold_count

        return combined_fold_count(cfg, corpus_cfg)
    if name == "emobox":
        return None  # as many as the fold files (read with the manifest)
    if cfg.get("test_actors") is not None:
        return len(cfg["test_actors"])
    if name == "luna_jimenez":
        return len(LUNA_JIMENEZ_FOLDS)
    if cfg.get("k") is not None:
        return int(cfg["k"])
    return None


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
