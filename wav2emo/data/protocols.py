"""The built-in fold protocols: published folds, leave-one-speaker-out, speaker k-fold, sessions,
speaker-dependent clip folds, and ``default`` (the corpus recipe's usual protocol).

Each is registered as a :class:`~wav2emo.data.registry.FoldProtocol` (see :data:`PROTOCOLS`), the same way
a protocol of your own is.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .dev_sets import DevRule, clips_by_actor
from .errors import FoldError
from .manifest import Manifest
from .registry import RECIPES, FoldProtocol, count_folds, folds_config, make_folds
from .splits import SPEAKER_DEPENDENT, SPEAKER_INDEPENDENT, SpeakerFolds, Split, _gender_groups

LUNA_JIMENEZ_FOLDS: list[list[int]] = [
    [2, 5, 14, 15, 16],
    [3, 6, 7, 13, 18],
    [10, 11, 12, 19, 20],
    [8, 17, 21, 23, 24],
    [1, 4, 9, 22],
]


def luna_jimenez_folds(genders: Mapping[int, str], n_dev_actors: int = 2, dev_seed: int = 0) -> SpeakerFolds:
    """The five RAVDESS actor folds of Luna-Jimenez et al. (fold 4 has 4 test actors)."""
    return SpeakerFolds(
        LUNA_JIMENEZ_FOLDS, genders, n_dev_actors=n_dev_actors, dev_seed=dev_seed, name="luna_jimenez"
    )


def speaker_kfold(
    genders: Mapping[int, str], k: int = 5, *, seed: int = 0, n_dev_actors: int = 2, dev_seed: int = 0, **dev
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
    return SpeakerFolds(folds, genders, n_dev_actors=n_dev_actors, dev_seed=dev_seed, name="speaker_kfold", **dev)


def leave_one_speaker_out(
    genders: Mapping[int, str], *, n_dev_actors: int = 2, dev_seed: int = 0, speakers: Mapping[int, str] | None = None,
    **dev,
) -> SpeakerFolds:
    """One fold per speaker.  With two speakers (TESS) it is "train on one, test on the other": no
    speaker is left for a dev speaker; with a dev rule (``folds.dev`` auto or clips) the dev set is then a share
    of the training speaker's clips, else there is none, and the protocol says which."""
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
        return SpeakerFolds([[a], [b]], genders, n_dev_actors=0, dev_seed=dev_seed, name="loso", protocol=protocol,
                            dev_wanted=int(n_dev_actors) > 0, **dev)
    n_dev = min(int(n_dev_actors), len(actors) - 2)
    return SpeakerFolds(
        [[a] for a in actors], genders, n_dev_actors=n_dev, dev_seed=dev_seed, name="loso",
        protocol=f"leave-one-speaker-out ({len(actors)} folds), {SPEAKER_INDEPENDENT}, {n_dev} dev speakers "
        "from the training speakers", **dev,
    )


def session_folds(manifest: Manifest, *, n_dev_actors: int = 2, dev_seed: int = 0, **dev) -> SpeakerFolds:
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
        "the training sessions", **dev,
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




# ------------------------------------------------------------------------------------------------
# Registration: config + manifest -> folds, and the fold count from the configs alone
# ------------------------------------------------------------------------------------------------
def _dev(cfg: Mapping, manifest: Manifest | None = None) -> dict:
    """The dev keys of a folds config as SpeakerFolds arguments (the dev rule needs the manifest's clips)."""
    out: dict = {"n_dev_actors": int(cfg.get("n_dev_actors", 2)), "dev_seed": int(cfg.get("dev_seed", 0))}
    if manifest is not None:
        out.update(dev_rule=DevRule(str(cfg.get("dev", "auto")), float(cfg.get("dev_fraction", 0.15))),
                   clips=clips_by_actor(manifest), class_names=list(manifest.class_names))
    return out


def _corpus_facts(corpus: Mapping) -> tuple[int | None, int | None]:
    """(speakers, sessions) of the corpus a data config names, as documented by its recipe; None where a
    subset of actors or a partial copy makes the documented number unreliable."""
    actors = corpus.get("actors")
    if actors is not None:
        n = actors if isinstance(actors, int) and not isinstance(actors, bool) else len(list(actors))
        return n, None
    recipe = RECIPES.get(str(corpus.get("name")))
    if recipe is None or corpus.get("require_complete", True) is False:
        return None, None
    speakers = len(recipe.totals.speakers) if recipe.totals and recipe.totals.speakers else None
    return speakers, recipe.sessions


def _build_explicit(cfg: Mapping, manifest: Manifest) -> SpeakerFolds:
    name = str(cfg.get("name", "")) or "explicit"
    explicit = cfg.get("test_actors")
    if explicit is None and name == "luna_jimenez":
        explicit = LUNA_JIMENEZ_FOLDS
    folds = [[int(a) for a in f] for f in explicit]
    genders = manifest.genders()
    missing = sorted({a for f in folds for a in f} - set(genders))
    if missing:
        raise FoldError(
            f"folds {name!r} need actors {missing}, which manifest {manifest.name!r} lacks (it has "
            f"{manifest.actors}); use the full corpus, or folds=default (the corpus's usual protocol)"
        )
    return SpeakerFolds(folds, genders, name=name, **_dev(cfg, manifest))


def _count_explicit(cfg: Mapping, corpus: Mapping) -> int:
    return len(cfg["test_actors"]) if cfg.get("test_actors") is not None else len(LUNA_JIMENEZ_FOLDS)


def _build_loso(cfg: Mapping, manifest: Manifest) -> SpeakerFolds:
    speakers = {c.actor: c.speaker for c in manifest if c.speaker}
    return leave_one_speaker_out(manifest.genders(), speakers=speakers, **_dev(cfg, manifest))


def _build_kfold(cfg: Mapping, manifest: Manifest) -> SpeakerFolds:
    return speaker_kfold(manifest.genders(), int(cfg.get("k", 5)), seed=int(cfg.get("seed", 0)),
                         **_dev(cfg, manifest))


def _build_speaker_dependent(cfg: Mapping, manifest: Manifest) -> SpeakerDependentFolds:
    return SpeakerDependentFolds(manifest, int(cfg.get("k", 5)), seed=int(cfg.get("seed", 0)),
                                 dev_fraction=float(cfg.get("dev_fraction", 0.1)))


# keys of a folds config that say how dev sets are drawn: carried over from folds=default to the usual protocol
DEV_KEYS = ("n_dev_actors", "dev_seed", "dev", "dev_fraction")


def usual_folds_config(cfg: Mapping, corpus: str, n_speakers: int | None) -> dict | None:
    """The folds config ``folds=default`` stands for on ``corpus`` (its recipe's usual protocol, with the dev
    keys of ``cfg``); None when it depends on a speaker count not known yet."""
    recipe = RECIPES.get(corpus)
    if recipe is None:
        raise FoldError(f"folds=default: corpus {corpus!r} has no recipe, so no usual protocol; set folds=<name>")
    name = recipe.usual_folds(n_speakers)
    if name is None:
        return None
    return {**folds_config(name, f"the usual folds of {corpus}"), **{k: cfg[k] for k in DEV_KEYS if k in cfg}}


def _build_default(cfg: Mapping, manifest: Manifest):
    corpora = {c.corpus for c in manifest}
    corpus = manifest.name if manifest.name in RECIPES else (corpora.pop() if len(corpora) == 1 else manifest.name)
    usual = usual_folds_config(cfg, corpus, len(manifest.actors))
    return make_folds(usual, manifest, clip_splits=True)  # type: ignore[arg-type]


def _count_default(cfg: Mapping, corpus: Mapping) -> int | None:
    name = str(corpus.get("name"))
    if name not in RECIPES:
        return None
    speakers, _ = _corpus_facts(corpus)
    usual = usual_folds_config(cfg, name, speakers)
    return None if usual is None else count_folds(usual, corpus)


PROTOCOLS = (
    FoldProtocol("default", _build_default, _count_default),
    FoldProtocol("luna_jimenez", _build_explicit, _count_explicit),
    FoldProtocol("explicit", _build_explicit, _count_explicit),
    FoldProtocol("loso", _build_loso, lambda cfg, corpus: _corpus_facts(corpus)[0]),
    FoldProtocol("speaker_kfold", _build_kfold, lambda cfg, corpus: int(cfg.get("k", 5))),
    FoldProtocol("sessions", lambda cfg, m: session_folds(m, **_dev(cfg, m)),
                 lambda cfg, corpus: _corpus_facts(corpus)[1]),
    FoldProtocol("speaker_dependent", _build_speaker_dependent, lambda cfg, corpus: int(cfg.get("k", 5)),
                 by_clip=True),
)
