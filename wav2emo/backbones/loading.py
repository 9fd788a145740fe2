"""Loading a backbone with ``AutoModel``: frozen for extraction, or trainable for fine-tuning.

Hugging Face's pretraining configs switch on regularisers that act in train mode only: ``layerdrop``
(0.1 in wav2vec2-base), ``mask_time_prob`` (0.05) with ``apply_spec_augment``.  A fine-tuning run that
inherits them silently does something its config does not say, so every load sets them explicitly
(off by default, see :data:`TRAIN_SWITCH_DEFAULTS`); the caller turns them on from our own config.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from wav2emo.backbones.source import (
    BackboneError,
    BackboneSource,
    backbone_identity,
    hub_weights_sha256,
    offline_help,
    preprocessor_settings,
)

# Train-mode regularisers of the HF audio backbones, all off unless our config turns them on.
TRAIN_SWITCH_DEFAULTS: dict[str, Any] = {
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
    "mask_feature_prob": 0.0,
    "apply_spec_augment": False,
}


def train_switches(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults with ``overrides`` applied, validated (unknown names and out-of-range values refused)."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(TRAIN_SWITCH_DEFAULTS))
    if unknown:
        raise BackboneError(f"backbone train switches {unknown}: unknown; expected some of {sorted(TRAIN_SWITCH_DEFAULTS)}")
    out = {**TRAIN_SWITCH_DEFAULTS, **overrides}
    for name in ("layerdrop", "mask_time_prob", "mask_feature_prob"):
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
            raise BackboneError(f"backbone switch {name}={value!r}: expected a probability in [0, 1)")
        out[name] = float(value)
    if not isinstance(out["apply_spec_augment"], bool):
        raise BackboneError(f"backbone switch apply_spec_augment={out['apply_spec_augment']!r}: expected true or false")
    return out


@contextmanager
def quiet_transformers() -> Iterator[None]:
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
    """A loaded backbone with what extraction and fine-tuning need to know about it."""

    model: torch.nn.Module
    source: BackboneSource
    identity: dict[str, Any]
    do_normalize: bool
    sampling_rate: int
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        return self.model.config


def _from_pretrained(source: BackboneSource, identity: Mapping[str, Any], switches: Mapping[str, Any]):
    from transformers import AutoConfig, AutoModel

    where = str(source.folder) if source.folder is not None else source.ref
    common: dict[str, Any] = {}
    if source.folder is not None:
        common["local_files_only"] = True
    else:
        common["revision"] = identity["commit"]
    with quiet_transformers():
        # trust_remote_code=False, explicitly: a backbone folder or hub repo never runs its own Python.
        config = AutoConfig.from_pretrained(where, **common, trust_remote_code=False)
        missing = [name for name in switches if not hasattr(config, name)]
        if missing:
            raise BackboneError(
                f"{source.describe()}: its config ({type(config).__name__}) has no {missing}; expected an audio "
                "backbone with wav2vec2's train-mode switches (wav2vec2, HuBERT, WavLM, data2vec-audio)"
            )
        for name, value in switches.items():
            setattr(config, name, value)
        return AutoModel.from_pretrained(where, config=config, dtype=torch.float32, **common, trust_remote_code=False)


def load_backbone(
    source: BackboneSource,
    *,
    device: str | torch.device = "cpu",
    normalize: bool | None = None,
    trainable: bool = False,
    switches: Mapping[str, Any] | None = None,
) -> Backbone:
    """Load ``source`` with AutoModel as float32 on ``device``.

    ``trainable=False`` (extraction): eval mode and no gradients anywhere.  ``trainable=True``
    (fine-tuning): gradients kept; the caller decides which parts train and sets train/eval mode.
    ``switches`` are the train-mode regularisers (:func:`train_switches`), off unless given.
    ``normalize=None`` follows the preprocessor's ``do_normalize`` (zero mean, unit variance per clip);
    a backbone without preprocessor_config.json then needs ``normalize`` set explicitly, because
    guessing wrong silently changes every feature.
    """
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
    resolved = train_switches(switches)
    try:
        model = _from_pretrained(source, identity, resolved)
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
    return Backbone(model, source, identity, bool(normalize), int(sampling_rate), info)
