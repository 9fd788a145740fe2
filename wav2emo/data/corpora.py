"""``load_corpus(cfg)``: the one entry the training code calls to get a corpus as a manifest.

It turns the ``data.corpus`` config (conf/data/*.yaml) into a checked :class:`Manifest`: it generates
the synthetic corpus or fetches and extracts RAVDESS when asked to, and caches the prepared manifest
so that five fold jobs do not re-hash 1440 files each.  The cache key is the file list itself
(relative paths, sizes, modification times) and the check's options, so any changed, added or removed
file gives a new key.  The corpus check's report (skipped, silent, overlong clips) is kept beside the
cached manifest and logged on every load.

A corpus is created (generated, downloaded) only where the user asked for it: at the config's
``default_root`` (the place wav2emo manages under ``paths.data_dir``), or anywhere with
``generate=true`` / ``download=true``.  A ``root`` typed by hand that does not exist is an error, so a
typo never quietly becomes a new corpus in a new folder.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from pathlib import Path

from . import catalog  # noqa: F401  (registers the built-in recipes and protocols)
from .corpus_options import actor_list, check_options_of, corpus_root, corpus_section, may_create, only_actors
from .errors import CorpusError
from .fetching import extract_zip
from .folds import build_folds, fold_count
from .manifest import Manifest
from .manifest_cache import cached_manifest
from .registry import Recipe, recipe_for

log = logging.getLogger(__name__)


def load_corpus(cfg: Mapping, cache_dir: str | Path | None = None) -> Manifest:
    """The manifest of the corpus ``cfg`` names (any registered recipe: :mod:`wav2emo.data.registry`).

    Keys: name, root, default_root, download/generate (true|false|auto), seed, actors, clips_per_actor,
    require_complete, on_silent (error|warn|skip), silence_dbfs, max_duration_s, module (a module of your
    own that registers the recipe).  ``cache_dir`` (usually ``paths.cache_dir``) keeps prepared manifests
    under ``manifests/``; without it every call re-reads headers, decodes and re-hashes the audio.
    """
    c = corpus_section(cfg)
    recipe = recipe_for(c)
    if recipe.load is not None:  # generated, combined or zip-aware corpora load themselves
        return recipe.load(c, cache_dir, load_corpus=load_corpus)
    root = corpus_root(c, recipe.name)
    actors = actor_list(c.get("actors"))
    manifest = _recipe_manifest(recipe, root, c, cache_dir, check_options_of(c))
    return only_actors(manifest, actors, root)


def _recipe_manifest(recipe: Recipe, root: Path, c: Mapping, cache_dir, options: Mapping) -> Manifest:
    """The manifest of a corpus with a recipe: fetched if allowed, prepared, cached."""
    if not root.exists():
        if recipe.download is None or not may_create(root, c, "download"):
            raise CorpusError(
                f"data.corpus.root={root} does not exist; expected {recipe.expects}. {recipe.how_to_get}"
                + ("" if recipe.download is None else
                   " Or set data.corpus.download=true to fetch it into this path.")
            )
        recipe.download(root)
    if root.is_file() and root.suffix.lower() == ".zip":  # extracted beside it once; the folder is keyed
        root = extract_zip(root)
    extra = {k: c[k] for k in recipe.options if c.get(k) is not None}
    for k, v in list(extra.items()):  # OmegaConf containers arrive as plain dicts/lists already
        if isinstance(v, Mapping):
            extra[k] = dict(v)
    require_complete = bool(c.get("require_complete", recipe.require_complete_default))
    kwargs = {"corpus_name": recipe.name, "require_complete": require_complete, **options, **extra}
    labels = hashlib.sha256()
    if root.is_dir():
        for pattern in recipe.label_files:
            for f in sorted(root.glob(pattern)):
                labels.update(f"{f.relative_to(root).as_posix()}\n".encode() + f.read_bytes())
    return cached_manifest(root, recipe.name, require_complete, cache_dir, options, prepare=recipe.prepare,
                           kwargs=kwargs, key_extra={"labels": labels.hexdigest()} if recipe.label_files else {})



def num_folds(folds_cfg: Mapping, data_cfg: Mapping, cache_dir: str | Path | None = None) -> int:
    """The number of folds ``fold=all`` runs: from the configs where they say it (see
    :func:`wav2emo.data.folds.fold_count`), else from the corpus's manifest (loso over a corpus of your
    own, sessions of a subset), which is then prepared (and cached) once."""
    n = fold_count(folds_cfg, data_cfg)
    if n is None:
        n = len(build_folds(folds_cfg, load_corpus(data_cfg, cache_dir=cache_dir), clip_splits=True))
    return n
