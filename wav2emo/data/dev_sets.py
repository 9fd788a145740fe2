"""How a fold's dev set is drawn from its training speakers (``folds.dev``), for acted and natural corpora.

* ``speakers``: ``n_dev_actors`` gender-balanced training speakers (:func:`~wav2emo.data.splits.choose_dev_actors`),
  the rule for acted corpora where every speaker carries every emotion.
* ``covering``: training speakers chosen so the dev set covers every class it can, sized by clips (about
  ``dev_fraction`` of the training clips) rather than a fixed count; a speaker is never moved to dev when that
  would leave a class without training clips; the classes no choice can cover are named.
* ``clips``: ``dev_fraction`` of each training speaker's clips (stratified by emotion), for folds with one or
  two training speakers (TESS: train on one speaker, test on the other): a dev set of utterances of the
  training speakers, declared as such.
* ``auto`` (the default): ``clips`` where a fold has fewer than three training speakers; ``speakers`` where that
  choice covers every training class (acted corpora: the same dev speakers as before); ``covering`` otherwise.

Every choice depends only on the training speakers' clips, the seed and the fold: never on the test speakers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import FoldError
from .manifest import Manifest

DEV_MODES = ("auto", "speakers", "covering", "clips")
MIN_DEV_SPEAKER_POOL = 3  # auto: fewer training speakers than this -> a dev set of their clips

Clips = Mapping[int, Sequence[tuple[str, int]]]  # actor -> (clip id, label) of its labelled clips


@dataclass(frozen=True)
class DevRule:
    """``folds.dev`` and ``folds.dev_fraction``."""

    mode: str = "auto"
    fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.mode not in DEV_MODES:
            raise FoldError(f"folds.dev={self.mode!r}; expected one of {list(DEV_MODES)}")
        if not 0 < float(self.fraction) < 1:
            raise FoldError(f"folds.dev_fraction={self.fraction!r}; expected a share of the training clips, 0 < x < 1")


@dataclass(frozen=True)
class DevChoice:
    """One fold's dev decision: dev speakers, or dev clips (``clips`` mode); ``uncovered``: training classes the
    dev set lacks."""

    mode: str
    actors: tuple[int, ...] = ()
    clip_ids: tuple[str, ...] | None = None
    uncovered: tuple[int, ...] = ()


def clips_by_actor(manifest: Manifest) -> dict[int, list[tuple[str, int]]]:
    out: dict[int, list[tuple[str, int]]] = {}
    for c in manifest:
        if c.labelled:
            out.setdefault(c.actor, []).append((c.clip_id, c.label))
    return out


def _classes(clips: Clips, actors) -> set[int]:
    return {label for a in actors for _, label in clips.get(a, ())}


def covering_speakers(clips: Clips, rest: Sequence[int], fraction: float, seed: int, fold: int
                      ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Dev speakers covering every training class they can, about ``fraction`` of the training clips; and the
    classes left uncovered.  Greedy: the speaker adding the most uncovered classes (then the seeded order)."""
    rng = np.random.default_rng([int(seed), int(fold), 2039])
    order = [rest[i] for i in rng.permutation(len(rest))]
    wanted = _classes(clips, rest)
    total = sum(len(clips.get(a, ())) for a in rest)
    chosen: list[int] = []
    covered: set[int] = set()
    size = 0
    while True:
        left = [a for a in order if a not in chosen]
        # a candidate must leave at least one training speaker and every class in training
        ok = [a for a in left if len(left) > 1 and _classes(clips, [b for b in left if b != a]) == wanted]
        if not ok:
            break
        gain = {a: len(_classes(clips, [a]) - covered) for a in ok}
        best = max(ok, key=lambda a: gain[a])  # max keeps the first of equals: the seeded order decides
        if gain[best] == 0 and size >= fraction * total:
            break  # every class that can be covered is, and the dev set is big enough
        chosen.append(best)
        covered |= _classes(clips, [best])
        size += len(clips.get(best, ()))
    return tuple(sorted(chosen)), tuple(sorted(wanted - covered))


def dev_clips(clips: Clips, rest: Sequence[int], fraction: float, seed: int, fold: int) -> tuple[str, ...]:
    """``fraction`` of each training speaker's clips of each emotion (at least one where it has two or more)."""
    rng = np.random.default_rng([int(seed), int(fold), 2053])
    out: list[str] = []
    for a in sorted(rest):
        by_label: dict[int, list[str]] = {}
        for cid, label in clips.get(a, ()):
            by_label.setdefault(label, []).append(cid)
        for label in sorted(by_label):
            ids = by_label[label]
            n = int(round(fraction * len(ids))) or (1 if len(ids) >= 2 else 0)
            out += [ids[i] for i in sorted(rng.permutation(len(ids))[:n])]
    return tuple(out)


def choose_dev(rule: DevRule, clips: Clips, rest: Sequence[int], speaker_choice: tuple[int, ...], seed: int,
               fold: int) -> DevChoice:
    """The dev set of one fold under ``rule`` (see the module docstring); ``speaker_choice`` is what the
    ``speakers`` rule picked."""
    wanted = _classes(clips, rest)
    mode = rule.mode
    if mode == "auto":
        if len(rest) < MIN_DEV_SPEAKER_POOL:
            mode = "clips"
        elif not speaker_choice or _classes(clips, speaker_choice) >= wanted:
            mode = "speakers"
        else:
            mode = "covering"
    if mode == "speakers":
        return DevChoice("speakers", speaker_choice, uncovered=tuple(sorted(wanted - _classes(clips, speaker_choice)))
                         if speaker_choice else ())
    if mode == "clips":
        ids = dev_clips(clips, rest, rule.fraction, seed, fold)
        got = {label for a in rest for cid, label in clips.get(a, ()) if cid in set(ids)}
        return DevChoice("clips", tuple(sorted(rest)), clip_ids=ids, uncovered=tuple(sorted(wanted - got)))
    actors, uncovered = covering_speakers(clips, rest, rule.fraction, seed, fold)
    return DevChoice("covering", actors, uncovered=uncovered)


def describe(choices: Sequence[DevChoice], rule: DevRule, class_names: Sequence[str], n_dev: int) -> str:
    """One sentence for every fold: which dev rule each fold used, and the classes a dev set could not cover."""
    by_mode: dict[str, list[int]] = {}
    for k, c in enumerate(choices):
        by_mode.setdefault(c.mode, []).append(k)
    words = {"speakers": f"{n_dev} gender-balanced training speakers",
             "covering": f"training speakers covering every class they can (~{rule.fraction:.0%} of the training "
                         "clips)",
             "clips": f"{rule.fraction:.0%} of each training speaker's clips (too few training speakers for a dev "
                      "speaker: a dev set of training speakers' utterances)"}
    parts = [f"{words[m]} in folds {ks}" for m, ks in by_mode.items()]
    gaps = [f"fold {k}: {', '.join(class_names[i] if i < len(class_names) else str(i) for i in c.uncovered)}"
            for k, c in enumerate(choices) if c.uncovered]
    text = f"dev (folds.dev={rule.mode}): " + "; ".join(parts)
    if gaps:
        text += "; classes no dev set could cover: " + "; ".join(gaps)
    return text
