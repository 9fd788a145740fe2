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
import json
import logging
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

from .checks import DEFAULT_MAX_DURATION_S, DEFAULT_SILENCE_DBFS, CorpusReport, check_options
from .manifest import Manifest
from .ravdess import (
    RAVDESS_RECORD_URL,
    RAVDESS_URL,
    RAVDESS_ZIP_NAME,
    CorpusError,
    download_ravdess,
    extract_zip,
    find_audio_files,
    prepare_ravdess,
)
from .recipes import RECIPES, Recipe
from .synthetic import NUM_ACTORS, generate_synthetic_corpus

log = logging.getLogger(__name__)

CORPORA = ("ravdess", "synthetic", *RECIPES, "multi")
# 2: the key holds the check options; a report file sits beside each manifest
# 3: clips carry code/speaker/session; the report holds the class names
MANIFEST_CACHE_VERSION = 3
CREATE_CHOICES = (True, False, "auto")


def _corpus_section(cfg: Mapping) -> Mapping:
    """Accept either the ``data`` group (with a ``corpus`` key) or the corpus mapping itself."""
    inner = cfg.get("corpus") if isinstance(cfg, Mapping) else None
    return inner if isinstance(inner, Mapping) else cfg


def _actor_list(value, key: str = "actors") -> list[int] | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise CorpusError(
            f"data.corpus.{key}={value!r}; expected null, a count N (actors 1..N) or a list of ids"
        )
    if isinstance(value, int):
        if not 1 <= value <= NUM_ACTORS:
            raise CorpusError(f"data.corpus.{key}={value}; expected a count 1..{NUM_ACTORS}")
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


def _bool_option(c: Mapping, key: str, default):
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
    value = _bool_option(c, key, default)
    return value is True or (value == "auto" and _is_default_root(root, c))


def load_corpus(cfg: Mapping, cache_dir: str | Path | None = None) -> Manifest:
    """The manifest of the corpus ``cfg`` names.

    Keys: name, root, default_root, download/generate (true|false|auto), seed, actors, clips_per_actor,
    require_complete, on_silent (error|warn|skip), silence_dbfs, max_duration_s.  ``cache_dir``
    (usually ``paths.cache_dir``) keeps prepared manifests under ``manifests/``; without it every call
    re-reads headers, decodes and re-hashes the audio.
    """
    c = _corpus_section(cfg)
    name = c.get("name")
    if name not in CORPORA:
        raise CorpusError(f"data.corpus.name={name!r}; expected one of {list(CORPORA)}")
    if name == "multi":  # several corpora, each loaded as itself (wav2emo.data.multi)
        from .multi import load_multi

        return load_multi(c, cache_dir)
    if not c.get("root"):
        raise CorpusError(f"data.corpus.root is not set for corpus {name!r}; expected a folder path")
    root = Path(str(c["root"])).expanduser()
    actors = _actor_list(c.get("actors"))
    options = check_options_of(c)
    if root.is_symlink() and not root.exists():
        raise CorpusError(
            f"data.corpus.root={root} is a dangling symlink to {os.readlink(root)} (the target does not "
            "exist); expected a corpus folder or zip"
        )

    if name == "synthetic":
        n_actors = actors if actors is not None else list(range(1, NUM_ACTORS + 1))
        per_actor = int(c.get("clips_per_actor") or 60)
        root = _synthetic_root(
            root, c, seed=int(c.get("seed") or 0), actors=n_actors, clips_per_actor=per_actor
        )
        full = len(n_actors) == NUM_ACTORS and per_actor == 60
        wanted = c.get("require_complete", "auto")
        complete = full if wanted in (None, "auto") else bool(wanted)
        return _prepared(root, "synthetic", complete, cache_dir, options)

    if name in RECIPES:
        return _only_actors(_recipe_manifest(RECIPES[name], root, c, cache_dir, options), actors, root)

    folder = _ravdess_folder(root, download=may_create(root, c, "download"))
    manifest = _prepared(folder, "ravdess", bool(c.get("require_complete", True)), cache_dir, options)
    return _only_actors(manifest, actors, folder)


def _only_actors(manifest: Manifest, actors, where: Path) -> Manifest:
    """``data.corpus.actors``: the manifest cut to those actors (all when None); an unknown actor is an error."""
    if actors is None:
        return manifest
    unknown = sorted(set(actors) - set(manifest.actors))
    if unknown:
        raise CorpusError(f"data.corpus.actors: actors {unknown} are not in {where}")
    return manifest.filter(actors)


def _recipe_manifest(recipe: Recipe, root: Path, c: Mapping, cache_dir, options: Mapping) -> Manifest:
    """The manifest of a corpus with a recipe (wav2emo.data.recipes): fetched if allowed, prepared, cached."""
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
    return _prepared(root, recipe.name, require_complete, cache_dir, options, prepare=recipe.prepare,
                     kwargs=kwargs, key_extra={"labels": labels.hexdigest()} if recipe.label_files else {})


def _synthetic_root(root: Path, c: Mapping, **params) -> Path:
    """The synthetic corpus at ``root``: reused if there, generated only where that was asked for.

    Generated when ``root`` is the config's default place, an empty folder the user made for it, or
    anywhere with ``generate=true``; a missing path typed by hand is refused and nothing is created.
    """
    if root.is_dir() and not any(root.iterdir()):  # an empty folder the user pointed to: fill it
        if _bool_option(c, "generate", "auto") is False:
            raise CorpusError(f"data.corpus.root={root} is an empty folder and data.corpus.generate=false")
        root.rmdir()  # generate_synthetic_corpus builds beside it and renames into place
        try:
            return generate_synthetic_corpus(root, **params)
        finally:
            if not root.exists():  # generation failed: give the user their empty folder back
                root.mkdir()
    if not root.exists() and not may_create(root, c, "generate", "auto"):
        default = c.get("default_root")
        raise CorpusError(
            f"data.corpus.root={root} does not exist; expected a synthetic corpus made by wav2emo there. "
            "Nothing was created: a corpus is generated on its own only at its default place"
            + (f" ({default})" if default else "")
            + " or into an empty folder you made; set data.corpus.generate=true to create it at this path"
        )
    return generate_synthetic_corpus(root, **params)


def _ravdess_folder(root: Path, *, download: bool) -> Path:
    """The extracted RAVDESS folder for ``root`` (a folder or a zip), downloading it if allowed.

    Download scheme: the zip goes beside ``root`` (``<root parent>/Audio_Speech_Actors_01-24.zip``)
    and is extracted to ``root`` itself, so the config's path is where the audio ends up.
    """
    is_zip = root.suffix.lower() == ".zip"
    if root.is_dir():
        return root
    if root.is_file():
        if not is_zip:
            raise CorpusError(f"{root}: expected a RAVDESS folder or {RAVDESS_ZIP_NAME}, found another file")
        return extract_zip(root)
    if not download:
        raise CorpusError(
            f"{root}: RAVDESS not found. Download {RAVDESS_ZIP_NAME} from {RAVDESS_RECORD_URL} and set "
            f"data.corpus.root to the zip or its extracted folder, or set data.corpus.download=true to "
            "fetch it automatically into this path (about 200 MB; download=auto fetches only into the "
            "default place under paths.data_dir)"
        )
    if is_zip:
        zip_path = download_ravdess(root.parent, url=RAVDESS_URL)
        if zip_path != root:
            zip_path.replace(root)
        return extract_zip(root)
    zip_path = download_ravdess(root.parent, url=RAVDESS_URL)
    return extract_zip(zip_path, extract_dir=root)


def file_list_key(root: str | Path, extra: Mapping | None = None) -> str:
    """Hash of the audio files under ``root`` (relative path, size, mtime) and of ``extra`` options."""
    root = Path(root).resolve()
    h = hashlib.sha256()
    h.update(
        json.dumps({"root": str(root), "v": MANIFEST_CACHE_VERSION, **(extra or {})}, sort_keys=True).encode()
    )
    for path in find_audio_files(root):
        st = path.stat()
        h.update(f"{path.relative_to(root).as_posix()}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _prepared(
    root: Path,
    corpus: str,
    require_complete: bool,
    cache_dir: str | Path | None,
    options: Mapping,
    *,
    prepare=None,
    kwargs: Mapping | None = None,
    key_extra: Mapping | None = None,
) -> Manifest:
    kwargs = dict(kwargs or {"corpus_name": corpus, "require_complete": require_complete, **options})
    prepare = prepare or prepare_ravdess  # looked up at call time (tests replace it)
    if cache_dir is None:
        manifest = prepare(root, **kwargs)
        manifest.report.log()
        return manifest
    listed, extra = root, dict(key_extra or {})
    if root.is_file() and root.suffix.lower() == ".csv":  # data=csv: the table and the files beside it
        listed, extra["csv"] = root.parent, hashlib.sha256(root.read_bytes()).hexdigest()
    key = file_list_key(listed, {"corpus": corpus, **{k: v for k, v in kwargs.items() if k != "corpus_name"},
                                 **extra})
    path = Path(cache_dir) / "manifests" / f"{corpus}-{key}.csv"
    report_path = path.with_name(f"{path.stem}.report.json")
    if path.is_file() and report_path.is_file():
        try:
            report = CorpusReport.from_json(report_path.read_text())
            manifest = Manifest.from_csv(path, name=corpus, class_names=report.class_names or None)
        except (ValueError, TypeError, OSError) as e:
            raise CorpusError(
                f"{path}: the cached manifest (or {report_path.name}) cannot be used ({e}); it is wav2emo's "
                "own cache of the corpus check, so remove both files to prepare the corpus again"
            ) from e
        manifest.report = report
        report.log(report_path)
        return manifest
    manifest = prepare(root, **kwargs)
    manifest.report.class_names = list(manifest.class_names)
    # private names first: parallel fold jobs may prepare the same corpus at the same time; the report
    # goes in before the manifest, whose presence marks the pair complete
    tag = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"
    tmp_report = report_path.with_name(f".{report_path.name}.{tag}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_report.write_text(manifest.report.to_json())
    os.replace(tmp_report, report_path)
    tmp = path.with_name(f".{path.stem}.{tag}.csv")
    manifest.to_csv(tmp)
    os.replace(tmp, path)
    manifest.report.log(report_path)
    return manifest


def num_folds(folds_cfg: Mapping, data_cfg: Mapping, cache_dir: str | Path | None = None) -> int:
    """The number of folds ``fold=all`` runs: from the configs where they say it (see
    :func:`wav2emo.data.folds.fold_count`), else from the corpus's manifest (loso over a corpus of your
    own, sessions of a subset), which is then prepared (and cached) once."""
    from .folds import build_folds, fold_count

    n = fold_count(folds_cfg, data_cfg)
    if n is None:
        n = len(build_folds(folds_cfg, load_corpus(data_cfg, cache_dir=cache_dir), clip_splits=True))
    return n
