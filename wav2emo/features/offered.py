"""Feature values offered by a producer that computed them from the samples it wrote to a file.

Why: the cached augmentation copies (:mod:`wav2emo.augment.copy_features`) hold each copy's samples in memory
when they write its file, so they start its eGeMAPS there, while the next copies are made; the cache of the
copies can only be built once every copy is written (its key is the hash of the whole manifest, each copy's
``sha1`` included).  The producer offers each result (a :class:`~concurrent.futures.Future`) under the written
file's ``sha1`` and a key of every setting that changes the values (the kind's ``key_fields``); the kind's
build (:meth:`wav2emo.features.egemaps._OpenSmileKind.build`) takes an offered value for a clip whose file has
that ``sha1`` instead of decoding the file again, and computes every other clip (and any offer that failed)
from its file as usual.  The cache, its key, layout and checks are the ones a build from the files writes:
only where a clip's values are computed changes (from the samples the file was written from, which the file
holds exactly: float32 WAV).

Offers live only inside :func:`offering` (the producer's ``with`` block around the cache build).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, wait
from contextlib import contextmanager
from typing import Any

from wav2emo.features.cache.format import cache_key

_OFFERS: dict[tuple[str, str], Future] = {}
_LOCK = threading.Lock()


def offer_key(key_fields: Mapping[str, Any]) -> str:
    """The key of a feature kind's settings (its ``key_fields()``): offers match only the same settings."""
    return cache_key(dict(key_fields))


@contextmanager
def offering(what: str, by_sha1: Mapping[str, Future]) -> Iterator[None]:
    """Offer ``{sha1: future of the values}`` for settings ``what`` (:func:`offer_key`) inside this block."""
    keys = [(what, sha1) for sha1 in by_sha1]
    with _LOCK:
        for (key, fut) in zip(keys, by_sha1.values(), strict=True):
            _OFFERS[key] = fut
    try:
        yield
    finally:
        with _LOCK:
            for key, fut in zip(keys, by_sha1.values(), strict=True):
                if _OFFERS.get(key) is fut:
                    del _OFFERS[key]


def offers_for(what: str, sha1s: Sequence[str], indices: Sequence[int]) -> dict[int, Future]:
    """``{index: future}`` for the clips ``indices`` (of ``sha1s``) whose values are offered for ``what``, in
    manifest order (the order a producer such as the copies makes and offers them)."""
    with _LOCK:
        found = {i: _OFFERS.get((what, sha1s[i])) for i in sorted(indices)}
    return {i: f for i, f in found.items() if f is not None}


def finished_offers(offers: Mapping[int, Future], failed: list[int],
                    check: Callable[[], None] = lambda: None) -> Iterator[tuple[int, Any]]:
    """``(index, value)`` of each offer once finished, in the order of ``offers``; the index of one that failed or
    was cancelled is appended to ``failed`` (its caller computes it from the file).  ``check()`` runs every 0.1 s
    while waiting (a stop request)."""
    for i, fut in offers.items():  # in the order offered, which is about the order they finish: O(n) waits
        while not fut.done():
            wait([fut], timeout=0.1)
            check()
        if fut.cancelled() or fut.exception() is not None:
            failed.append(i)
        else:
            yield i, fut.result()
