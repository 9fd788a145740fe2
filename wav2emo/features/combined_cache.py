"""Features of several corpora trained on together (``data=multi``), read from each corpus's own cache.

A combined manifest (:class:`wav2emo.data.multi.MultiManifest`) keeps the manifests of its corpora; their
features are extracted (or found) per corpus, keyed by that corpus's content, so combining corpora never
rebuilds a cache another run already made, and adding a corpus extracts only the new one.
:class:`MultiCache` puts the per-corpus caches end to end behind the reading interface the data module and
the baselines use (``rows_for``, ``read``, ``read_copy``, ``locate``, ``lengths``, ``feature_shape``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.data.manifest import Manifest
from wav2emo.errors import ConfigError
from wav2emo.features import get_features
from wav2emo.features.cache.reader import FeatureCache, Spans, row_indices
from wav2emo.features.overlap import get_features_many


class MultiCache:
    """Several corpora's caches of one feature spec, as one: row ``offset[c] + i`` is row ``i`` of corpus c's."""

    def __init__(self, caches: Mapping[str, FeatureCache]) -> None:
        self.caches = dict(caches)
        first = next(iter(self.caches.values()))
        for name, c in self.caches.items():
            if tuple(c.feature_shape) != tuple(first.feature_shape) or c.kind != first.kind:
                raise ConfigError(f"data=multi: corpus {name!r} has {c.kind} features of shape {c.feature_shape}, "
                                  f"another has {first.kind} {first.feature_shape}; expected one feature spec")
        self.feature_shape = tuple(first.feature_shape)
        self.kind, self.meta, self.dtype = first.kind, first.meta, first.dtype
        self._offset, start = {}, 0
        for name, c in self.caches.items():
            self._offset[name] = start
            start += c.num_clips
        self.num_clips = start
        self.lengths = np.concatenate([np.asarray(c.lengths) for c in self.caches.values()])
        self._parts = [(self._offset[n], c) for n, c in self.caches.items()]

    @property
    def path(self) -> str:
        return "; ".join(f"{n}: {c.path}" for n, c in self.caches.items())

    def rows_for(self, clips: Iterable[Any]) -> np.ndarray:
        rows = []
        for clip in clips:
            if clip.corpus not in self.caches:
                raise ConfigError(f"clip {clip.clip_id!r} of corpus {clip.corpus!r}: no cache for that corpus "
                                  f"(combined corpora: {list(self.caches)})")
            rows.append(self._offset[clip.corpus] + int(self.caches[clip.corpus].rows_for([clip])[0]))
        return np.asarray(rows, dtype=np.int64)

    def _locate(self, i: int) -> tuple[FeatureCache, int]:
        i = int(i)
        if not 0 <= i < self.num_clips:
            raise IndexError(f"row {i} out of range for {self.num_clips} clips of the combined corpora")
        for start, cache in reversed(self._parts):
            if i >= start:
                return cache, i - start
        raise AssertionError("unreachable")

    def read(self, i: int) -> np.ndarray:
        cache, j = self._locate(i)
        return cache.read(j)

    def read_copy(self, i: int) -> np.ndarray:
        cache, j = self._locate(i)
        return cache.read_copy(j)

    def locate(self, rows: Iterable[int]) -> Spans:
        """Where rows ``rows`` lie in their corpora's cache files (:meth:`FeatureCache.locate`)."""
        rows = row_indices(rows)
        if len(rows) and not (0 <= rows.min() and rows.max() < self.num_clips):
            raise IndexError(f"rows {rows.min()}..{rows.max()} out of range for {self.num_clips} clips of the "
                             "combined corpora")
        cache, shard, offset = (np.zeros(len(rows), dtype=np.int64) for _ in range(3))
        for k, (start, part) in enumerate(self._parts):
            mine = (rows >= start) & (rows < start + part.num_clips)
            spans = part.locate(rows[mine] - start)
            cache[mine], shard[mine], offset[mine] = k, spans.shard, spans.offset
        return Spans(tuple(c for _, c in self._parts), cache, shard, offset, self.feature_shape, self.dtype)


def corpus_features(manifest: Manifest, spec: Mapping[str, Any], cache_dir: str | Path, **kwargs: Any):
    """The features of ``manifest``: :func:`~wav2emo.features.get_features`, or for a combined manifest each
    corpus's own cache, put together."""
    parts = getattr(manifest, "parts", None)
    if not parts:
        return get_features(manifest, spec, cache_dir, **kwargs)
    return MultiCache({name: get_features(m, spec, cache_dir, **kwargs) for name, m in parts.items()})


def corpus_features_many(manifest: Manifest, specs: Mapping[str, Any], cache_dir: str | Path,
                         **kwargs: Any) -> dict[str, Any]:
    """:func:`corpus_features` for several ``{key: spec}`` at once: per corpus, eGeMAPS builds while the SSL
    backbone extracts (:func:`~wav2emo.features.overlap.get_features_many`)."""
    parts = getattr(manifest, "parts", None)
    if not parts:
        return get_features_many(manifest, specs, cache_dir, **kwargs)
    per_corpus = {name: get_features_many(m, specs, cache_dir, **kwargs) for name, m in parts.items()}
    return {key: MultiCache({name: per_corpus[name][key] for name in parts}) for key in specs}
