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
MAX_ACTOR_COUNT = 24  # data.corpus.actors=N means actors 1..N (RAVDESS-shaped corpora)


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


def actor_list(value, key: str = "actors") -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise CorpusError(
            f"data.corpus.{key}={value!r}; expected null, a count N (actors 1..N) or a list of ids"
        )
    if isinstance(value, int):
        if not 1 <= value <= MAX_ACTOR_COUNT:
            raise CorpusError(f"data.corpus.{key}={value}; expected a count 1..{MAX_ACTOR_COUNT}")
        return list(range(1, value + 1))
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
    """``data.corpus.actors``: the manifest cut to those actors (all when None); an unknown actor is an error."""
    if actors is None:
        return manifest
    unknown = sorted(set(actors) - set(manifest.actors))
    if unknown:
        raise CorpusError(f"data.corpus.actors: actors {unknown} are not in {where}")
    return manifest.filter(actors)
