"""Loading a backbone: its family from config.json's ``model_type``, frozen for extraction or trainable for
fine-tuning, with the train-mode switches set explicitly (:mod:`wav2emo.backbones.switches`).

``import wav2emo.backbones.families`` here registers the built-in families; a plugin family registers
itself when its module is imported (before loading).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

import wav2emo.backbones.families  # noqa: F401 - registers the built-in families
from wav2emo.backbones.family import Backbone
from wav2emo.backbones.load_report import quiet_transformers
from wav2emo.backbones.registry import family_for
from wav2emo.backbones.source import (
    BackboneError,
    BackboneSource,
    backbone_identity,
    config_json,
    hub_weights_sha256,
    offline_help,
    preprocessor_settings,
    resolve_source,
)
from wav2emo.backbones.switches import train_switches
from wav2emo.backbones.tiny import build_tiny


def source_of(
    backbone: str | os.PathLike, *, revision: str | None = "main", build_tiny_model: bool = False,
    tiny_seed: int = 0, tiny_family: str = "wav2vec2",
) -> BackboneSource:
    """A feature spec's backbone as a source; with ``build_tiny_model`` the tiny random model is built there first."""
    if build_tiny_model:
        return BackboneSource(os.fspath(backbone), None, build_tiny(Path(backbone).expanduser(), seed=tiny_seed,
                                                                   family=tiny_family).resolve())
    return resolve_source(backbone, revision=revision)


def family_of(source: BackboneSource, commit: str | None = None) -> type[Backbone]:
    """The registered family of ``source`` (from its config.json; nothing is loaded)."""
    return family_for(config_json(source, commit).get("model_type"), source.describe())


def load_backbone(
    source: BackboneSource,
    *,
    device: str | torch.device = "cpu",
    normalize: bool | None = None,
    trainable: bool = False,
    switches: Mapping[str, Any] | None = None,
    precision: str = "fp32",
) -> Backbone:
    """Load ``source`` as float32 on ``device``, as an instance of its family's :class:`Backbone`.

    ``trainable=False`` (extraction): eval mode and no gradients anywhere.  ``trainable=True``
    (fine-tuning): gradients kept; the caller decides which parts train and sets train/eval mode.
    ``switches`` are the train-mode regularisers (:func:`train_switches`), off unless given.
    ``normalize=None`` follows the preprocessor's ``do_normalize`` (zero mean, unit variance per clip);
    a backbone without preprocessor_config.json then needs ``normalize`` set explicitly, because
    guessing wrong silently changes every feature.  ``precision`` is what :meth:`Backbone.extract_batch` runs in.
    """
    identity = backbone_identity(source)
    commit = identity.get("commit")
    family = family_of(source, commit)
    # Read the preprocessor of exactly the commit whose weights are loaded.
    settings = preprocessor_settings(source, commit=commit)
    if settings is None and family.needs_preprocessor:
        raise BackboneError(
            f"{source.describe()}: no preprocessor_config.json, but the {family.family} family's front end is defined "
            "by it (its feature extractor's settings); copy it from the checkpoint's hub repo into the folder"
        )
    if normalize is None:
        if settings is None:
            raise BackboneError(
                f"{source.describe()}: no preprocessor_config.json, so whether the model expects normalised "
                "audio is unknown; set `normalize: true` or `normalize: false` in the feature spec"
            )
        normalize = settings["do_normalize"]
    sampling_rate = settings["sampling_rate"] if settings else 16000
    resolved = train_switches(switches)
    where = str(source.folder) if source.folder is not None else source.ref
    common: dict[str, Any] = {"local_files_only": True} if source.folder is not None else {"revision": commit}
    try:
        with quiet_transformers():
            config = family.load_config(where, **common)
            family.configure(config, resolved, source.describe())
            model = family.load_model(where, config, **common)
    except BackboneError:
        raise
    except OSError as e:
        if source.folder is not None:
            raise BackboneError(f"{source.folder}: cannot load the model ({e})") from e
        raise offline_help(source, e) from e
    if not trainable:
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
        info["weights_sha256"] = hub_weights_sha256(source, identity["commit"])
    return family(model, source, identity, bool(normalize), int(sampling_rate), info,
                  (settings or {}).get("fields"), device=device, precision=precision)


def wrap_model(
    model: torch.nn.Module, *, normalize: bool = False, device: str | torch.device = "cpu", precision: str = "fp32",
    preprocessor: Mapping[str, Any] | None = None, identity: Mapping[str, Any] | None = None,
) -> Backbone:
    """An in-memory model (tests, benchmarks: built from a config, never saved) as its family's Backbone."""
    family = family_for(getattr(model.config, "model_type", None), type(model).__name__)
    source = BackboneSource(f"in-memory {type(model).__name__}")
    return family(model.to(device), source, identity or {"source": "memory"}, normalize, 16000,
                  {"model_class": type(model).__name__}, preprocessor, device=device, precision=precision)
