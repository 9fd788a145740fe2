"""Self-supervised speech backbones: loading one frozen, naming it exactly, and a tiny random one for offline use.

A backbone is given as a Hugging Face hub id (``facebook/wav2vec2-base`` at a ``revision``) or a local
folder (anything ``save_pretrained`` wrote).  Its *identity* goes into the feature-cache key: the
resolved commit hash for a hub id (so ``main`` moving on upstream gives a new cache), the sha256 of
config.json and the weight files for a folder (so retraining a local model gives a new cache, while
copying it elsewhere does not).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wav2emo.errors import UserError

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "facebook/wav2vec2-base"
TINY_MARKER = "wav2emo-tiny.json"
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
    build_tiny: bool = False,
    tiny_seed: int = 0,
) -> BackboneSource:
    """Decide whether ``backbone`` is a folder or a hub id; with ``build_tiny`` create the tiny model there first."""
    ref = os.fspath(backbone)
    path = Path(ref).expanduser()
    if build_tiny:
        return BackboneSource(ref, None, build_tiny_wav2vec2(path, seed=tiny_seed).resolve())
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


def _offline_help(source: BackboneSource, error: Exception) -> BackboneError:
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
_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, remembered per (path, size, mtime) so repeated get_features calls hash once."""
    st = path.stat()
    memo_key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
        _HASH_MEMO[memo_key] = h.hexdigest()
    return _HASH_MEMO[memo_key]


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
        raise _offline_help(source, e) from e
    commit = config_path.parent.name
    if config_path.parent.parent.name != "snapshots" or not _COMMIT.match(commit):
        raise BackboneError(f"{config_path}: cannot read the commit hash of {source.describe()} from this path")
    return commit


def _hub_weights_sha256(source: BackboneSource, commit: str) -> str | None:
    """The sha256 of the hub weight file, free: LFS blobs in the HF cache are named by it."""
    from huggingface_hub import try_to_load_from_cache

    for name in ("model.safetensors", "pytorch_model.bin"):
        found = try_to_load_from_cache(source.ref, name, revision=commit)
        if isinstance(found, str):
            blob = Path(os.path.realpath(found)).name
            return blob if re.fullmatch(r"[0-9a-f]{64}", blob) else file_sha256(Path(found))
    return None


# Loading ------------------------------------------------------------------------------------------------
@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars inside our own progress bar."""
    import transformers.utils.logging as tlog

    enabled = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            tlog.enable_progress_bar()


@dataclass
class Backbone:
    """A loaded, frozen backbone with what extraction needs to know about it."""

    model: torch.nn.Module
    source: BackboneSource
    identity: dict[str, Any]
    do_normalize: bool
    sampling_rate: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.model.config


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
            raise _offline_help(source, e) from e
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise BackboneError(f"{path}: unreadable ({e}); expected the feature extractor's JSON settings") from e
    return {"do_normalize": bool(raw.get("do_normalize", False)), "sampling_rate": int(raw.get("sampling_rate", 16000))}


def load_backbone(
    source: BackboneSource, *, device: str | torch.device = "cpu", normalize: bool | None = None
) -> Backbone:
    """Load ``source`` with AutoModel, frozen (no gradients) and in eval mode, as float32 on ``device``.

    ``normalize=None`` follows the preprocessor's ``do_normalize`` (zero mean, unit variance per clip);
    a backbone without preprocessor_config.json then needs ``normalize`` set explicitly, because
    guessing wrong silently changes every feature.
    """
    from transformers import AutoModel

    identity = backbone_identity(source)
    # Read the preprocessor of exactly the commit whose weights are loaded.
    settings = preprocessor_settings(source, commit=identity.get("commit"))
    if normalize is None:
        if settings is None:
            raise BackboneError(
                f"{source.describe()}: no preprocessor_config.json, so whether the model expects normalised "
                "audio is unknown; set `normalize: true` or `normalize: false` in the feature spec"
            )
        normalize = settings["do_normalize"]
    sampling_rate = settings["sampling_rate"] if settings else 16000
    try:
        with _quiet_transformers():
            if source.folder is not None:
                # trust_remote_code=False, explicitly: a backbone folder or hub repo never runs its own Python.
                model = AutoModel.from_pretrained(
                    str(source.folder), dtype=torch.float32, local_files_only=True, trust_remote_code=False
                )
            else:
                model = AutoModel.from_pretrained(
                    source.ref, revision=identity["commit"], dtype=torch.float32, trust_remote_code=False
                )
    except BackboneError:
        raise
    except OSError as e:
        if source.folder is not None:
            raise BackboneError(f"{source.folder}: cannot load the model ({e})") from e
        raise _offline_help(source, e) from e
    model.requires_grad_(False)
    model.eval()
    model.to(device)
    info: dict[str, Any] = {
        "ref": source.ref,
        "revision": source.revision,
        "folder": None if source.folder is None else str(source.folder),
        "model_class": type(model).__name__,
        "model_type": getattr(model.config, "model_type", None),
        "num_parameters": int(sum(p.numel() for p in model.parameters())),
        **identity,
    }
    if source.folder is None:
        info["weights_sha256"] = _hub_weights_sha256(source, identity["commit"])
    return Backbone(model, source, identity, bool(normalize), int(sampling_rate), info)


# The tiny random wav2vec2 --------------------------------------------------------------------------------
def tiny_wav2vec2_config(**overrides: Any):
    """wav2vec2's real front end (320x downsampling: 50 frames/s, 400-sample receptive field, group norm
    in the first conv like base) with a toy width and depth, so tests exercise every code path in seconds."""
    from transformers import Wav2Vec2Config

    kw: dict[str, Any] = dict(
        conv_dim=(32,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        feat_extract_norm="group",
        conv_bias=False,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=False,
        vocab_size=8,
    )
    kw.update(overrides)
    return Wav2Vec2Config(**kw)


def _tiny_is_valid(folder: Path, seed: int) -> bool:
    marker = folder / TINY_MARKER
    if not marker.is_file():
        raise BackboneError(
            f"{folder}: exists but holds no {TINY_MARKER}, so it is not a tiny backbone made by wav2emo; "
            "choose another folder (nothing is overwritten)"
        )
    found = json.loads(marker.read_text())
    if found.get("seed") != seed:
        raise BackboneError(
            f"{folder}: holds the tiny backbone of seed {found.get('seed')}, not {seed}; choose another folder"
        )
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def build_tiny_wav2vec2(folder: str | Path, seed: int = 0) -> Path:
    """Write a tiny, randomly initialised Wav2Vec2Model (deterministic from ``seed``) to ``folder``.

    Idempotent: an existing tiny model of the same seed is returned as it is; anything else already at
    ``folder`` is refused.  Written into a temporary sibling and renamed, so a reader never sees half a model.
    """
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder = Path(folder).expanduser()
    if folder.exists():
        if _tiny_is_valid(folder, seed):
            return folder
        raise BackboneError(f"{folder}: an incomplete tiny backbone; delete the folder and run again")
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Wav2Vec2Model(tiny_wav2vec2_config())
        with _quiet_transformers():
            model.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
        ).save_pretrained(tmp)
        (tmp / TINY_MARKER).write_text(json.dumps({"builder": "wav2emo.features.backbone", "seed": seed}) + "\n")
        try:
            tmp.rename(folder)
        except OSError:
            if folder.exists() and _tiny_is_valid(folder, seed):  # another process finished first
                return folder
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the tiny random wav2vec2 (seed %d) at %s", seed, folder)
    return folder
