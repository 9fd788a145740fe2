"""Loading a published ``AutoModelForAudioClassification`` (hub id or local folder) with its feature extractor.

``trust_remote_code`` is never set: a checkpoint's own Python is never run.  A hub id that is not in the
local cache while the hub is off (``HF_HUB_OFFLINE=1``), an unknown id, or a model that is not an audio
classifier is a one-line :class:`ClassifierLoadError` saying what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wav2emo.errors import UserError


class ClassifierLoadError(UserError, RuntimeError):
    """A classifier that cannot be found or used; the message says what to do."""


@dataclass
class HFClassifier:
    """A loaded audio classifier with what evaluating it needs."""

    model: torch.nn.Module
    feature_extractor: Any
    sampling_rate: int
    id2label: dict[int, str]
    info: dict[str, Any] = field(default_factory=dict)


def _hub_off() -> bool:
    return any(os.environ.get(v, "") not in ("", "0") for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _where(ref: str) -> tuple[str, bool]:
    """(what from_pretrained gets, whether it is a local folder); a path-like ref that is no folder is refused."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ClassifierLoadError(f"hf_model={ref}: the folder has no config.json; expected a folder written by "
                                      f"save_pretrained (model and feature extractor)")
        return str(path.resolve()), True
    if ref.startswith(("/", ".", "~")) or ref.count("/") > 1:
        raise ClassifierLoadError(f"hf_model={ref}: no such folder, and not a hub id like 'owner/name'")
    return ref, False


def _load_help(ref: str, revision: str | None, error: Exception) -> ClassifierLoadError:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    if _hub_off():
        return ClassifierLoadError(
            f"hf_model={ref} (revision {revision}): not in the local Hugging Face cache, and the hub is switched off "
            f"(HF_HUB_OFFLINE=1) ({type(error).__name__}: {first}). Download it once with internet access "
            f"(`HF_HUB_OFFLINE=0 hf download {ref}`, or run this command with HF_HUB_OFFLINE=0), or save it with "
            f"save_pretrained (model and feature extractor) and pass hf_model=/path/to/that/folder"
        )
    return ClassifierLoadError(
        f"hf_model={ref} (revision {revision}): cannot load it ({type(error).__name__}: {first}); check the id and "
        f"revision on huggingface.co, or pass a folder written by save_pretrained"
    )


def load_hf_classifier(ref: str, revision: str | None = "main", device: str | torch.device = "cpu") -> HFClassifier:
    """Load ``ref`` (hub id at ``revision``, or a save_pretrained folder) in eval mode, float32, on ``device``."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    from wav2emo.backbones.load_report import quiet_transformers

    where, local = _where(str(ref))
    common: dict[str, Any] = {"local_files_only": True} if local else {"revision": revision or "main"}
    try:
        with quiet_transformers():
            model = AutoModelForAudioClassification.from_pretrained(where, dtype=torch.float32, **common,
                                                                    trust_remote_code=False)
    except ValueError as e:  # a config class with no audio-classification model
        raise ClassifierLoadError(f"hf_model={ref}: not an audio classification model "
                                  f"(AutoModelForAudioClassification: {str(e).splitlines()[0]})") from None
    except OSError as e:  # not cached while offline, unknown id or revision, network errors
        if local:
            raise ClassifierLoadError(f"hf_model={ref}: cannot load the model from the folder ({e})") from None
        raise _load_help(str(ref), revision, e) from None
    try:
        extractor = AutoFeatureExtractor.from_pretrained(where, **common, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise ClassifierLoadError(
            f"hf_model={ref}: no usable feature extractor (preprocessor_config.json: {str(e).splitlines()[0]}); "
            f"it says the sample rate and input normalisation the model expects: save it beside the model with "
            f"feature_extractor.save_pretrained"
        ) from None
    rate = getattr(extractor, "sampling_rate", None)
    if not isinstance(rate, int) or rate <= 0:
        raise ClassifierLoadError(f"hf_model={ref}: its feature extractor has no sampling_rate; expected e.g. 16000")
    model.eval().requires_grad_(False).to(device)
    id2label = {int(i): str(n) for i, n in model.config.id2label.items()}
    info = {"ref": str(ref), "revision": None if local else (revision or "main"), "folder": where if local else None,
            "model_class": type(model).__name__, "model_type": getattr(model.config, "model_type", None),
            "sampling_rate": rate, **_identity(str(ref), where, local, revision)}
    return HFClassifier(model, extractor, rate, id2label, info)


def _identity(ref: str, where: str, local: bool, revision: str | None) -> dict[str, Any]:
    """What names the weights: content hashes of a folder, the commit of a hub revision (from the cache)."""
    from wav2emo.backbones.source import BackboneError, BackboneSource, backbone_identity

    source = BackboneSource(ref, None, Path(where)) if local else BackboneSource(ref, revision or "main", None)
    try:
        return backbone_identity(source)
    except BackboneError as e:  # e.g. weights in a format the hasher does not know: say so, keep going
        return {"source": "folder" if local else "hub", "identity_error": str(e)}
