"""Several corpora as one training corpus: ``data=multi data.corpora=[ravdess,emodb]``.

Each corpus is loaded exactly as ``data=<name>`` loads it (its own ``conf/data/<name>.yaml``, with the keys of
``data.options.<name>`` on top, e.g. ``+data.options.emodb.root=/path``), checked, and cached as itself.  The
combined manifest (:class:`MultiManifest`) keeps them (``parts``), so features come from each corpus's own
cache (:mod:`wav2emo.features.combined_cache`).

* **One label set**: the union of the corpora's canonical classes, in canonical order; every clip is
  relabelled into it (its emotion name and code are unchanged).
* **Speakers stay apart**: corpus ``i`` (1-based, in ``data.corpora`` order) numbers its speakers
  ``i * 100000 + actor`` (EmoDB's speaker 3 second in the list is 200003), so no two corpora share a speaker id;
  the speaker name becomes ``<corpus>:<name>``.
* Clip ids are kept (each corpus's cache knows its clips by them): two corpora with the same clip id are an
  error naming it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from .errors import CorpusError
from .labels import ordered_classes
from .manifest import Manifest
from .registry import CONF_DIR, Recipe

ACTOR_STRIDE = 100_000


class MultiManifest(Manifest):
    """A manifest of several corpora; ``parts`` maps each corpus name to its own (unchanged) manifest."""

    def __init__(self, clips, parts: Mapping[str, Manifest], offsets: Mapping[str, int], **kwargs: Any) -> None:
        super().__init__(clips, **kwargs)
        self.parts = dict(parts)
        self.offsets = dict(offsets)

    def corpus_actor(self, corpus: str, actor: int) -> int:
        """The combined id of ``corpus``'s speaker ``actor``."""
        return self.offsets[corpus] + int(actor)


def corpus_names(c: Mapping) -> list[str]:
    names = c.get("corpora")
    if isinstance(names, str) or not isinstance(names, Sequence) or len(names) < 2:
        raise CorpusError(f"data.corpora={names!r}; expected a list of at least two corpus names, e.g. "
                          "data.corpora=[ravdess,emodb]")
    names = [str(n) for n in names]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise CorpusError(f"data.corpora={names}: {dupes} listed more than once; expected distinct corpora")
    if "multi" in names:
        raise CorpusError(f"data.corpora={names}: 'multi' cannot contain itself")
    return names


def sub_corpus_configs(c: Mapping) -> dict[str, dict[str, Any]]:
    """Each listed corpus's ``data.corpus`` section: its conf/data file, resolved against ``data_dir``, with the
    keys of ``options.<name>`` on top."""
    options = c.get("options") or {}
    if not isinstance(options, Mapping):
        raise CorpusError(f"data.options={options!r}; expected a mapping corpus -> keys of its data.corpus section")
    names = corpus_names(c)
    unknown = sorted(set(options) - set(names))
    if unknown:
        raise CorpusError(f"data.options names {unknown}, which are not in data.corpora={names}")
    out = {}
    for name in names:
        path = CONF_DIR / "data" / f"{name}.yaml"
        if not path.is_file() or name == "multi":
            known = sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem != "multi")
            raise CorpusError(f"data.corpora: no corpus config {name!r}; expected names from {known}")
        root = OmegaConf.create({"paths": {"data_dir": str(c.get("data_dir") or "")},
                                 "data": OmegaConf.load(path)})
        extra = options.get(name) or {}
        if not isinstance(extra, Mapping):
            raise CorpusError(f"data.options.{name}={extra!r}; expected a mapping of data.corpus keys")
        root.data.corpus = OmegaConf.merge(root.data.corpus, OmegaConf.create(dict(extra)))
        out[name] = OmegaConf.to_container(root.data.corpus, resolve=True)
    return out


def combine(manifests: Mapping[str, Manifest], name: str = "multi") -> MultiManifest:
    """One manifest of ``manifests`` (corpus name -> manifest), in that order (see the module docstring)."""
    classes = ordered_classes({c for m in manifests.values() for c in m.class_names if c != "unknown"})
    index = {c: i for i, c in enumerate(classes)}
    seen: dict[str, str] = {}
    clips, offsets, parts = [], {}, {}
    for i, (corpus, m) in enumerate(manifests.items(), start=1):
        m.require_labels(f"training on several corpora ({corpus})")
        offsets[corpus] = i * ACTOR_STRIDE
        big = [a for a in m.actors if a >= ACTOR_STRIDE]
        if big:
            raise CorpusError(f"corpus {corpus!r}: speaker ids {big[:5]} reach {ACTOR_STRIDE}; combining corpora "
                              f"numbers speakers corpus * {ACTOR_STRIDE} + id")
        for c in m:
            if c.clip_id in seen:
                raise CorpusError(f"clip id {c.clip_id!r} is in corpus {seen[c.clip_id]!r} and {corpus!r}; combined "
                                  "corpora need distinct clip ids")
            seen[c.clip_id] = corpus
            clips.append(dataclasses.replace(
                c, label=index[m.class_names[c.label]], actor=offsets[corpus] + c.actor,
                speaker=f"{corpus}:{c.speaker or c.actor}", corpus=corpus))
        parts[corpus] = m
    return MultiManifest(clips, parts, offsets, name=name, class_names=classes)


def load_multi(c: Mapping, cache_dir: str | Path | None = None, *, load_corpus: Callable) -> MultiManifest:
    """The combined manifest of the corpora ``data.corpus`` (name multi) lists, each loaded and checked as itself
    by ``load_corpus`` (:func:`wav2emo.data.corpora.load_corpus`)."""
    manifests = {}
    for name, sub in sub_corpus_configs(c).items():
        m = load_corpus(sub, cache_dir=cache_dir)
        corpus = {clip.corpus for clip in m}
        if len(corpus) != 1:
            raise CorpusError(f"data.corpora: corpus {name!r} has clips of corpora {sorted(corpus)}")
        manifests[corpus.pop()] = m
    return combine(manifests)


RECIPE = Recipe("multi", None, "several corpora (data.corpora=[...])", "List them in data.corpora.",
                default_folds="combined", load=load_multi)
