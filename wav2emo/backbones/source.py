"""Where a backbone comes from and what names its weights exactly (the identity that keys caches and checkpoints).

A backbone is given as a Hugging Face hub id (``facebook/wav2vec2-base`` at a ``revision``) or a local
folder (anything ``save_pretrained`` wrote).  Its *identity* goes into the feature-cache key and into
fine-tuned checkpoints: the resolved commit hash for a hub id (so ``main`` moving on upstream gives a new
cache), the sha256 of config.json and the weight files for a folder (so retraining a local model gives a
new cache, while copying it elsewhere does not).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wav2emo.errors import UserError
from wav2emo.files import remembered_digest

DEFAULT_BACKBONE = "facebook/wav2vec2-base"
_WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class BackboneError(UserError, RuntimeError):
    """A backbone that cannot be found, loaded or used; the message says what to do."""


# Where the backbone comes from ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BackboneSource:
    """A hub id at a revision, or a local folder."""

    ref: str
    revision: str | None = None
    folder: Path | None = None

    @property
    def is_local(self) -> bool:
        return self.folder is not None

    def describe(self) -> str:
        return str(self.folder) if self.folder is not None else f"{self.ref}@{self.revision}"


def resolve_source(
    backbone: str | os.PathLike = DEFAULT_BACKBONE,
    *,
    revision: str | None = "main",
) -> BackboneSource:
    """Decide whether ``backbone`` is a folder or a hub id (tiny test models: :func:`wav2emo.backbones.loading.source_of`)."""
    ref = os.fspath(backbone)
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BackboneError(f"{path}: a backbone folder needs config.json (as written by save_pretrained)")
        return BackboneSource(ref, None, path.resolve())
    if ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or not _HUB_ID.match(ref):
        raise BackboneError(
            f"backbone {ref!r}: no such folder, and it is not a hub id like 'facebook/wav2vec2-base'; "
            "point `backbone` at a folder holding config.json and the weights, or set build_tiny: true"
        )
    return BackboneSource(ref, revision or "main", None)


def offline_help(source: BackboneSource, error: Exception) -> BackboneError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
        "TRANSFORMERS_OFFLINE", ""
    ) not in ("", "0")
    return BackboneError(
        f"cannot load backbone {source.ref!r} at revision {source.revision!r}: it is not in the local Hugging "
        f"Face cache and the hub {'is switched off (HF_HUB_OFFLINE=1)' if offline else 'did not provide it'} "
        f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}). "
        "Either run once with internet access so it is downloaded and cached (check the id and revision), "
        "or point `backbone` at a local folder holding config.json and the weights (e.g. written by "
        "save_pretrained); for an offline demo use features=tiny."
    )


# Identity -----------------------------------------------------------------------------------------------
def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed once per version of it (:func:`wav2emo.files.remembered_digest`)."""
    return remembered_digest(path, "sha256")


def _weight_files(folder: Path) -> list[Path]:
    files = sorted({p for pattern in _WEIGHT_PATTERNS for p in folder.glob(pattern) if p.is_file()})
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise BackboneError(f"{folder}: no weight files (*.safetensors or *.bin); expected a save_pretrained folder")
    return files


def backbone_identity(source: BackboneSource) -> dict[str, Any]:
    """What identifies the weights, for the cache key: the commit (hub) or content hashes (folder)."""
    if source.folder is not None:
        weights = hashlib.sha256()
        for p in _weight_files(source.folder):
            weights.update(f"{p.name}:{file_sha256(p)}\n".encode())
        return {
            "source": "folder",
            "config_sha256": file_sha256(source.folder / "config.json"),
            "weights_sha256": weights.hexdigest(),
        }
    return {"source": "hub", "id": source.ref, "commit": resolve_commit(source)}


def resolve_commit(source: BackboneSource) -> str:
    """The commit a hub revision points at (from the hub, or from the local cache when offline)."""
    from huggingface_hub import hf_hub_download

    try:
        config_path = Path(hf_hub_download(source.ref, "config.json", revision=source.revision))
    except Exception as e:  # offline & uncached, unknown repo/revision, network errors
        raise offline_help(source, e) from e
    commit = config_path.parent.name
    if config_path.parent.parent.name != "snapshots" or not _COMMIT.match(commit):
        raise BackboneError(f"{config_path}: cannot read the commit hash of {source.describe()} from this path")
    return commit


def hub_weights_sha256(source: BackboneSource, commit: str) -> str | None:
    """The sha256 of the hub weight file, free: LFS blobs in the HF cache are named by it."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(source.ref, name, revision=commit)
        if isinstance(found, str):
            blob = Path(os.path.realpath(found)).name
            return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else file_sha256(Path(found))
    return None


def preprocessor_settings(source: BackboneSource, commit: str | None = None) -> dict[str, Any] | None:
    """``do_normalize`` and ``sampling_rate`` from the backbone's preprocessor_config.json (None if it has none)."""
    if source.folder is not None:
        path = source.folder / "preprocessor_config.json"
        if not path.is_file():
            return None
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source.ref, "preprocessor_config.json", revision=commit or source.revision))
        except Exception as e:
            if type(e).__name__ in ("EntryNotFoundError", "RemoteEntryNotFoundError"):
                return None
            raise offline_help(source, e) from e
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BackboneError(f"{path}: unreadable ({e}); expected the feature extractor's JSON settings") from e
    return {"do_normalize": bool(raw.get("do_normalize", False)), "sampling_rate": int(raw.get("sampling_rate", 16000)),
            "fields": raw}


def config_json(source: BackboneSource, commit: str | None = None) -> dict[str, Any]:
    """The backbone's config.json as plain JSON (its ``model_type`` names the family), without transformers."""
    if source.folder is not None:
        path = source.folder / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(source.ref, "config.json", revision=commit or source.revision))
        except Exception as e:
            raise offline_help(source, e) from e
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BackboneError(f"{path}: unreadable ({e}); expected the model's JSON config") from e
    if not isinstance(raw, dict):
        raise BackboneError(f"{path}: holds {type(raw).__name__}; expected a JSON object with a model_type")
    return raw


