"""Features: SSL hidden states (backbones from wav2emo.backbones), eGeMAPS, log-mel, and the shared feature cache.

The one entry the rest of wav2emo calls is :func:`get_features`: given a manifest and one feature
spec (an entry of a ``conf/features/*.yaml`` file) it opens the matching finished cache or builds it,
under a file lock so that parallel fold jobs extract once.  Feature kinds are looked up in a small
registry by ``spec["kind"]``; a new kind (HuBERT through the same wav2vec2 code, a Whisper encoder,
...) is a class with ``key_fields()`` and ``build(manifest, path, base_meta, progress=...)`` passed to
``FEATURE_KINDS.register`` (wav2emo/registry.py); an optional ``check_clips(manifest)`` refuses unusable clips (too short or too
long for that kind, judged from the manifest's durations) before any extraction work starts.

May import: data, backbones, and the package root's errors, files and registry. Never imports models,
feeding, augment, training, runs or reports.
"""

from __future__ import annotations

import logging
import os
import platform
import socket
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

from wav2emo.data.manifest import Manifest
from wav2emo.features.cache.format import (
    FORMAT_VERSION,
    LOCK_FILE,
    META_FILE,
    CacheError,
    cache_key,
    cache_path,
)
from wav2emo.features.cache.maintenance import clean_stale_partials, prepare_rebuild
from wav2emo.features.cache.reader import FeatureCache
from wav2emo.features.lock import build_lock
from wav2emo.files import digests_remembered_in
from wav2emo.registry import Registry

log = logging.getLogger(__name__)

__all__ = [
    "CacheError",
    "FeatureCache",
    "FeatureKind",
    "feature_cache_path",
    "get_features",
    "make_kind",
    "FEATURE_KINDS",
]


class FeatureKind(Protocol):
    """What a feature kind provides to :func:`get_features`."""

    def key_fields(self) -> dict[str, Any]:
        """JSON-able description of everything that changes the stored numbers (nothing else)."""

    def build(self, manifest: Manifest, path: Path, base_meta: Mapping[str, Any], *, progress: bool = True) -> dict:
        """Compute every clip into the cache folder ``path`` (resuming if it can) and write meta.json last."""


KindFactory = Callable[[Mapping[str, Any], Any], FeatureKind]
# ``spec["kind"]`` -> ``factory(spec, device)``. Your own kind: ``@FEATURE_KINDS.register("my_kind")`` above a class
# in a module of yours, passed as ``plugins=[that.module]`` (wav2emo/registry.py); built-ins import on first use
# (opensmile / transformers only when needed).
FEATURE_KINDS: Registry[KindFactory] = Registry("feature kind", {
    "ssl_hidden_states": "wav2emo.features.ssl_hidden_states:SSLHiddenStates",
    "egemaps_functionals": "wav2emo.features.egemaps:EgemapsFunctionals",
    "egemaps_lld": "wav2emo.features.egemaps:EgemapsLLD",
    "logmel": "wav2emo.features.logmel:LogMel",
    "mfcc_stats": "wav2emo.features.mfcc:MfccStats",
})


def _plain(spec: Any) -> dict[str, Any]:
    """A feature spec as a plain dict (OmegaConf configs are resolved)."""
    if hasattr(spec, "_metadata"):  # an OmegaConf container, without importing omegaconf here
        from omegaconf import OmegaConf

        spec = OmegaConf.to_container(spec, resolve=True)
    if not isinstance(spec, Mapping):
        raise TypeError(f"a feature spec must be a mapping with 'kind' and 'name', got {type(spec).__name__}")
    out = dict(spec)
    for field in ("kind", "name"):
        if not out.get(field):
            raise ValueError(f"feature spec {out}: missing {field!r}")
    return out


def make_kind(spec: Mapping[str, Any], device: Any = "auto") -> FeatureKind:
    spec = _plain(spec)
    return FEATURE_KINDS.require(spec["kind"])(spec, device)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("wav2emo", "torch", "torchaudio", "transformers", "numpy", "opensmile", "soundfile"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


DIGEST_MEMO_FILE = "file_digests.json"  # in the cache folder: the sha256 of local backbones' files, per file version


def digests_remembered(cache_dir: str | Path):  # noqa: ANN201 (a context manager)
    """Inside it, a local backbone's weights are hashed once per version of the files, not once per process
    (0.2 s of sha256 for wav2vec2-base's 377 MB on a 2-core machine, every run): the digests live in ``cache_dir/file_digests.json``."""
    return digests_remembered_in(Path(cache_dir) / DIGEST_MEMO_FILE)


def _key(manifest: Manifest, spec: dict[str, Any], kind: FeatureKind,
         cache_dir: str | Path) -> tuple[str, dict[str, Any]]:
    with digests_remembered(cache_dir):  # a local backbone's files in the key: hashed once per version
        fields = {
            "format_version": FORMAT_VERSION,
            "corpus": manifest.content_hash(),
            "kind": spec["kind"],
            **kind.key_fields(),
        }
    return cache_key(fields), fields


def feature_cache_path(manifest: Manifest, spec: Mapping[str, Any], cache_dir: str | Path, *, device: Any = "auto") -> Path:
    """Where the cache of this manifest and spec lives (whether or not it exists yet)."""
    plain = _plain(spec)
    key, _ = _key(manifest, plain, make_kind(plain, device), cache_dir)
    return cache_path(cache_dir, manifest.name, plain["name"], key)


def _open_checked(path: Path, key: str, verify: str = "stamp") -> FeatureCache:
    cache = FeatureCache.open(path, verify=verify)
    if cache.key != key:
        raise CacheError(
            f"{path / META_FILE}: belongs to key {cache.key[:16]}..., expected {key[:16]}...; delete the folder"
        )
    return cache


def get_features(
    manifest: Manifest,
    spec: Mapping[str, Any],
    cache_dir: str | Path,
    *,
    device: Any = "auto",
    progress: bool = True,
    lock_timeout: float | None = None,
    rebuild: bool = False,
) -> FeatureCache:
    """The features of ``manifest`` described by ``spec``: opened from the cache, or built into it first.

    Building happens under a per-cache file lock; a second process asking for the same features
    waits, then opens what the first built.  An interrupted build resumes from its finished shards.
    A damaged cache is an error (:class:`CacheError` naming the shard); ``rebuild=True`` verifies the
    whole cache and computes its damaged shards again (a sound cache is left as it is).
    """
    plain = _plain(spec)
    kind = make_kind(plain, device)
    key, fields = _key(manifest, plain, kind, cache_dir)
    path = cache_path(cache_dir, manifest.name, plain["name"], key)
    if rebuild and (path / META_FILE).is_file():
        with build_lock(path / LOCK_FILE, timeout=lock_timeout):
            if not prepare_rebuild(path):
                log.info("%s verifies in full: nothing to rebuild", path)
                return _open_checked(path, key)
    if (path / META_FILE).is_file():
        return _open_checked(path, key)
    for alt_fields in getattr(kind, "accepted_key_fields", lambda: [])():
        alt_key = cache_key({**fields, **alt_fields})
        alt = cache_path(cache_dir, manifest.name, plain["name"], alt_key)
        if (alt / META_FILE).is_file():
            log.info("using %s: built by this spec at precision %s (this device would compute %s)",
                     alt, alt_fields.get("precision"), fields.get("precision"))
            return _open_checked(alt, alt_key)
    if len(manifest) == 0:
        raise ValueError(f"manifest {manifest.name!r} has no clips; nothing to extract")
    check = getattr(kind, "check_clips", None)
    if check is not None:
        check(manifest)  # before any audio is decoded: a bad clip is named now, not after a full pass
    for corpus_dir in [d for d in Path(cache_dir).iterdir() if d.is_dir()] if Path(cache_dir).is_dir() else []:
        clean_stale_partials(corpus_dir)  # left by killed extractions of any corpus and spec
    with build_lock(path / LOCK_FILE, timeout=lock_timeout) as waited:
        if (path / META_FILE).is_file():
            log.info("%s was built by another process while this one waited %.1f s", path, waited)
            return _open_checked(path, key)
        log.info("building %s features for %s (%d clips) in %s", plain["name"], manifest.name, len(manifest), path)
        start = time.perf_counter()
        base_meta = {
            "key": key,
            "key_fields": fields,
            "name": plain["name"],
            "kind": plain["kind"],
            "spec": getattr(kind, "spec", plain),
            "manifest": {"name": manifest.name, "content_hash": manifest.content_hash(), "num_clips": len(manifest)},
            "versions": _versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "build": {"host": socket.gethostname(), "pid": os.getpid()},
        }
        meta = kind.build(manifest, path, base_meta, progress=progress)
        log.info("built %s in %.1f s", path, time.perf_counter() - start)
        del meta
    return _open_checked(path, key)
