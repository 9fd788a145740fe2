"""Prepared manifests kept under ``<cache_dir>/manifests/``, keyed by the file list and the check's options.

The key is the list of audio files (relative path, size, modification time), the corpus, the options the
recipe was given and, for recipes whose labels come from other files, a hash of those: any changed, added or
removed file gives a new key.  The corpus check's report is kept beside each manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path

from .checks import CorpusReport
from .errors import CorpusError
from .files import find_audio_files
from .manifest import Manifest

# 2: the key holds the check options; a report file sits beside each manifest
# 3: clips carry code/speaker/session; the report holds the class names
# 4: recipes handle known release defects and set aside unparsable files (require_complete=false)
MANIFEST_CACHE_VERSION = 4


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



def cached_manifest(
    root: Path,
    corpus: str,
    require_complete: bool,
    cache_dir: str | Path | None,
    options: Mapping,
    *,
    prepare: Callable[..., Manifest],
    kwargs: Mapping | None = None,
    key_extra: Mapping | None = None,
) -> Manifest:
    """The manifest ``prepare(root, **kwargs)`` gives, from the cache when it holds it (see the module
    docstring); without ``cache_dir`` it is prepared every time."""
    kwargs = dict(kwargs or {"corpus_name": corpus, "require_complete": require_complete, **options})
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
