"""The keys of ``data.corpus`` every loader shares: the section itself, actor subsets, the corpus check's
options, and whether a missing root may be created (downloaded, generated)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .checks import DEFAULT_MAX_DURATION_S, DEFAULT_SILENCE_DBFS, check_options
from .errors import CorpusError
from .manifest import Manifest

CREATE_CHOICES = (True, False, "auto")


def corpus_section(cfg: Mapping) -> Mapping:
    """Accept either the ``data`` group (with a ``corpus`` key) or the corpus mapping itself."""
    inner = cfg.get("corpus") if isinstance(cfg, Mapping) else None
    return inner if isinstance(inner, Mapping) else cfg


def corpus_root(c: Mapping, name: str) -> Path:
    """``data.corpus.root`` as a path; CorpusError when unset or a dangling symlink."""
    if not c.get("root"):
        raise CorpusError(f"data.corpus.root is not set for corpus {name!r}; expected a folder path")
    root = Path(str(c["root"])).expanduser()
    if root.is_symlink() and not root.exists():
        raise CorpusError(
            f"data.corpus.root={root} is a dangling symlink to {os.readlink(root)} (the target does not "
            "exist); expected a corpus folder or zip"
        )
    return root


def actor_list(value, key: str = "actors") -> list[int] | int | None:
    """``data.corpus.actors``: None (every speaker), a count N (the corpus's first N speakers in id order: actors
    1..N of RAVDESS, the ten lowest EmoDB speaker numbers for N=10; resolved against the manifest by
    :func:`only_actors`) or a list of speaker ids."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise CorpusError(
            f"data.corpus.{key}={value!r}; expected null, a count N (the first N speakers) or a list of ids"
        )
    if isinstance(value, int):
        if value < 1:
            raise CorpusError(f"data.corpus.{key}={value}; expected a count of at least 1 (or null: every speaker)")
        return int(value)
    try:
        ids = sorted(int(a) for a in value)
    except (TypeError, ValueError) as e:
        raise CorpusError(
            f"data.corpus.{key}={value!r}; expected null, a count or a list of actor ids"
        ) from e
    if not ids or len(set(ids)) != len(ids):
        raise CorpusError(f"data.corpus.{key}={value!r}; expected distinct actor ids (at least one)")
    return ids



def check_options_of(c: Mapping) -> dict:
    """The corpus check's options from ``data.corpus`` (defaults where a key is absent), validated."""
    opts = {
        "on_silent": c.get("on_silent", "error"),
        "silence_dbfs": c.get("silence_dbfs", DEFAULT_SILENCE_DBFS),
        "max_duration_s": c.get("max_duration_s", DEFAULT_MAX_DURATION_S),
    }
    try:
        check_options(**opts)
    except ValueError as e:
        raise CorpusError(str(e)) from None
    opts["silence_dbfs"] = float(opts["silence_dbfs"])
    if opts["max_duration_s"] is not None:
        opts["max_duration_s"] = float(opts["max_duration_s"])
    return opts



def bool_option(c: Mapping, key: str, default):
    value = c.get(key, default)
    if isinstance(value, str) and value.lower() in ("true", "false", "auto"):
        value = {"true": True, "false": False, "auto": "auto"}[value.lower()]
    if value not in CREATE_CHOICES or (value == "auto" and not isinstance(value, str)):
        raise CorpusError(f"data.corpus.{key}={value!r}; expected true, false or auto")
    return value



def _is_default_root(root: Path, c: Mapping) -> bool:
    default = c.get("default_root")
    if not default:
        return False
    return Path(str(default)).expanduser().resolve() == root.resolve()



def may_create(root: Path, c: Mapping, key: str, default=False) -> bool:
    """Whether ``root`` may be created when missing: ``key`` (generate/download) true, or auto at the default."""
    value = bool_option(c, key, default)
    return value is True or (value == "auto" and _is_default_root(root, c))



def only_actors(manifest: Manifest, actors, where: Path) -> Manifest:
    """``data.corpus.actors``: the manifest cut to those actors (all when None; a count N: its first N speakers in
    id order); an unknown actor, or more speakers than the corpus has, is an error."""
    if actors is None:
        return manifest
    if isinstance(actors, int):
        present = sorted(manifest.actors)
        if actors > len(present):
            raise CorpusError(f"data.corpus.actors={actors}: {where} has {len(present)} speakers ({present}); "
                              f"expected a count 1..{len(present)}, a list of those ids, or null for all")
        return manifest.filter(present[:actors])
    unknown = sorted(set(actors) - set(manifest.actors))
    if unknown:
        raise CorpusError(f"data.corpus.actors: actors {unknown} are not in {where}")
    return manifest.filter(actors)
