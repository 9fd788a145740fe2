"""``folds=combined``: each corpus's own speaker folds, combined fold by fold (conf/folds/combined.yaml).

Fold i of the combination is fold i of every corpus: training speakers with training speakers, dev with
dev, test with test, so no speaker of any corpus is in train and test.  With different fold counts the
combination has ``n`` = the smallest count; a corpus with more folds tests, in fold i, the speakers of its own
folds ``j`` with ``j mod n == i`` (its dev speakers are then drawn again from its other speakers, by the rule
of :class:`~wav2emo.data.folds.SpeakerFolds`), so every clip is tested exactly once.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import FoldError
from .multi import sub_corpus_configs
from .protocols import usual_folds_config
from .registry import FoldProtocol, count_folds, folds_config, make_folds
from .splits import SPEAKER_INDEPENDENT, SpeakerFolds, Split


def per_corpus_configs(cfg: Mapping, corpora: Mapping[str, int | None]) -> dict[str, dict[str, Any] | None]:
    """Each corpus's folds config: ``folds.per_corpus.<corpus>``, else its recipe's usual protocol (None when
    that depends on a speaker count not known yet).  ``corpora``: name -> number of speakers (or None)."""
    given = dict(cfg.get("per_corpus") or {})
    unknown = sorted(set(given) - set(corpora))
    if unknown:
        raise FoldError(f"folds.per_corpus names {unknown}, which are not among the corpora {list(corpora)}")
    out: dict[str, dict[str, Any] | None] = {}
    for c, n in corpora.items():
        if c in given:
            out[c] = folds_config(given[c], f"folds.per_corpus.{c}")
        else:
            out[c] = usual_folds_config({}, c, n)
    return out


class CombinedFolds:
    """Fold i of every corpus's folds, together (see the module docstring)."""

    name = "combined"

    def __init__(self, manifest, cfg: Mapping) -> None:
        parts = getattr(manifest, "parts", None)
        if not parts:
            raise FoldError(f"folds=combined combines the folds of several corpora; manifest {manifest.name!r} is "
                            "one corpus (use it with data=multi data.corpora=[...])")
        self.manifest = manifest
        own: dict[str, SpeakerFolds] = {}
        sizes = {c: len(m.actors) for c, m in parts.items()}
        for corpus, fcfg in per_corpus_configs(cfg, sizes).items():
            # speaker dev sets only: fold i of each corpus is combined by speakers
            folds = make_folds({**fcfg, "dev": "speakers"}, parts[corpus], clip_splits=True)  # type: ignore[arg-type]
            if not isinstance(folds, SpeakerFolds):
                raise FoldError(f"folds=combined: corpus {corpus!r} uses clip-level folds ({fcfg.get('name')}); "
                                "only speaker folds can be combined")
            own[corpus] = folds
        self.num_folds = min(f.num_folds for f in own.values())
        self.folds: dict[str, SpeakerFolds] = {}
        notes = []
        for corpus, f in own.items():
            if f.num_folds == self.num_folds:
                self.folds[corpus] = f
                notes.append(f"{corpus}: its {f.num_folds} {f.name} folds")
                continue
            groups = [[a for j in range(i, f.num_folds, self.num_folds) for a in f.test_folds[j]]
                      for i in range(self.num_folds)]
            self.folds[corpus] = SpeakerFolds(groups, f.genders, n_dev_actors=f.n_dev_actors, dev_seed=f.dev_seed,
                                              name=f"{f.name} merged")
            notes.append(f"{corpus}: its {f.num_folds} {f.name} folds merged into {self.num_folds} (fold i tests its "
                         f"folds j with j mod {self.num_folds} = i)")
        self.protocol = (f"combined speaker folds ({self.num_folds}), {SPEAKER_INDEPENDENT}: fold i of each corpus; "
                         + "; ".join(notes))

    def split(self, fold: int) -> Split:
        if not isinstance(fold, int) or not 0 <= fold < self.num_folds:
            raise FoldError(f"fold={fold!r}; expected an integer 0..{self.num_folds - 1} (combined folds)")
        parts: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
        for corpus, f in self.folds.items():
            s = f.split(fold)
            for key in parts:
                parts[key] += [self.manifest.corpus_actor(corpus, a) for a in getattr(s, key)]
        return Split(fold=fold, train=tuple(sorted(parts["train"])), dev=tuple(sorted(parts["dev"])),
                     test=tuple(sorted(parts["test"])), protocol=self.protocol)

    def splits(self) -> list[Split]:
        return [self.split(k) for k in range(self.num_folds)]

    def __len__(self) -> int:
        return self.num_folds


def combined_fold_count(cfg: Mapping, data_cfg: Mapping | None) -> int | None:
    """The number of combined folds from the configs alone (None when a corpus's count needs its manifest)."""
    corpus = (data_cfg or {}).get("corpus", data_cfg) if isinstance(data_cfg, Mapping) else None
    if not isinstance(corpus, Mapping) or corpus.get("name") != "multi":
        return None
    subs = sub_corpus_configs(corpus)
    counts = [None if fcfg is None else count_folds(fcfg, {"corpus": subs[c]})
              for c, fcfg in per_corpus_configs(cfg, dict.fromkeys(subs)).items()]
    return None if any(n is None for n in counts) else min(counts)  # type: ignore[type-var]


PROTOCOL = FoldProtocol("combined", lambda cfg, manifest: CombinedFolds(manifest, cfg), combined_fold_count)
