"""``load_corpus(cfg)``: the one entry the training code calls to get a corpus as a manifest.

It turns the ``data.corpus`` config (conf/data/*.yaml) into a checked :class:`Manifest`: it generates
the synthetic corpus or fetches and extracts RAVDESS when asked to, and caches the prepared manifest
so that five fold jobs do not re-hash 1440 files each.  The cache key is the file list itself
(relative paths, sizes, modification times), so any changed, added or removed file gives a new key.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

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
from .synthetic import NUM_ACTORS, generate_synthetic_corpus

CORPORA = ("ravdess", "synthetic")
MANIFEST_CACHE_VERSION = 1


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


def load_corpus(cfg: Mapping, cache_dir: str | Path | None = None) -> Manifest:
    """The manifest of the corpus ``cfg`` names (keys: name, root, download, seed, actors, clips_per_actor).

    ``cache_dir`` (usually ``paths.cache_dir``) keeps prepared manifests under ``manifests/``; without
    it every call re-reads headers and re-hashes the audio.
    """
    c = _corpus_section(cfg)
    name = c.get("name")
    if name not in CORPORA:
        raise CorpusError(f"data.corpus.name={name!r}; expected one of {list(CORPORA)}")
    if not c.get("root"):
        raise CorpusError(f"data.corpus.root is not set for corpus {name!r}; expected a folder path")
    root = Path(str(c["root"])).expanduser()
    actors = _actor_list(c.get("actors"))

    if name == "synthetic":
        n_actors = actors if actors is not None else list(range(1, NUM_ACTORS + 1))
        per_actor = int(c.get("clips_per_actor") or 60)
        root = generate_synthetic_corpus(
            root, seed=int(c.get("seed") or 0), actors=n_actors, clips_per_actor=per_actor
        )
        complete = len(n_actors) == NUM_ACTORS and per_actor == 60
        return _prepared(root, "synthetic", complete, cache_dir)

    folder = _ravdess_folder(root, download=bool(c.get("download", False)))
    manifest = _prepared(folder, "ravdess", bool(c.get("require_complete", True)), cache_dir)
    if actors is not None:
        unknown = sorted(set(actors) - set(manifest.actors))
        if unknown:
            raise CorpusError(f"data.corpus.actors: actors {unknown} are not in {folder}")
        manifest = manifest.filter(actors)
    return manifest


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
            "fetch it automatically (about 200 MB)"
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


def _prepared(root: Path, corpus: str, require_complete: bool, cache_dir: str | Path | None) -> Manifest:
    if cache_dir is None:
        return prepare_ravdess(root, corpus_name=corpus, require_complete=require_complete)
    key = file_list_key(root, {"corpus": corpus, "require_complete": require_complete})
    path = Path(cache_dir) / "manifests" / f"{corpus}-{key}.csv"
    if path.is_file():
        return Manifest.from_csv(path, name=corpus)
    manifest = prepare_ravdess(root, corpus_name=corpus, require_complete=require_complete)
    # a private name first: parallel fold jobs may prepare the same corpus at the same time
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.csv")
    manifest.to_csv(tmp)
    os.replace(tmp, path)
    return manifest
