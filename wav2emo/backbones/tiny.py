"""Tiny, randomly initialised backbones of every family: each code path of extraction and fine-tuning in
seconds, offline.

``build_tiny`` writes one to a folder (``features=tiny`` extracts with the wav2vec2 one); ``tiny_config``
gives the toy config of a family (``<family>`` or ``<family>-stable`` for the large/XLSR layout), built by the
family's own ``tiny_config`` (real front end, toy width and depth).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

import wav2emo.backbones.families as builtin
from wav2emo.backbones.family import Backbone
from wav2emo.backbones.load_report import quiet_transformers
from wav2emo.backbones.source import BackboneError

log = logging.getLogger(__name__)

TINY_MARKER = "wav2emo-tiny.json"
# The marker's text is kept as it was when this lived in wav2emo.features.backbone: existing tiny folders stay valid.
_BUILDER = "wav2emo.features.backbone"
TINY_FAMILIES: dict[str, type[Backbone]] = {
    "wav2vec2": builtin.Wav2Vec2Backbone,
    "hubert": builtin.HubertBackbone,
    "wavlm": builtin.WavLMBackbone,
    "data2vec-audio": builtin.Data2VecAudioBackbone,
    "whisper": builtin.WhisperEncoderBackbone,
}


def tiny_config(family: str, **overrides: Any):
    """A toy config of ``family``: wav2vec2, hubert, wavlm, data2vec-audio, whisper, or wav2vec2-stable,
    hubert-stable, wavlm-stable (the large/XLSR layout)."""
    stable = family.endswith("-stable")
    base = family.removesuffix("-stable")
    if base not in TINY_FAMILIES or (stable and base in ("data2vec-audio", "whisper")):
        names = sorted(TINY_FAMILIES) + [f"{b}-stable" for b in ("hubert", "wav2vec2", "wavlm")]
        raise ValueError(f"tiny_config: unknown family {family!r}; expected one of {names}")
    return TINY_FAMILIES[base].tiny_config(stable=stable, **overrides)


def tiny_wav2vec2_config(**overrides: Any):
    """wav2vec2's real front end (group norm in the first conv like base) with a toy width and depth."""
    return tiny_config("wav2vec2", **overrides)


def _tiny_is_valid(folder: Path, seed: int, family: str) -> bool:
    marker = folder / TINY_MARKER
    if not marker.is_file():
        raise BackboneError(
            f"{folder}: exists but holds no {TINY_MARKER}, so it is not a tiny backbone made by wav2emo; "
            "choose another folder (nothing is overwritten)"
        )
    found = json.loads(marker.read_text())
    found_family = found.get("family", "wav2vec2")
    if found_family != family:
        raise BackboneError(f"{folder}: holds the tiny {found_family} backbone, not a {family} one; choose another folder")
    if found.get("seed") != seed:
        raise BackboneError(
            f"{folder}: holds the tiny backbone of seed {found.get('seed')}, not {seed}; choose another folder"
        )
    return (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()


def _save_tiny(tmp: Path, family: str, seed: int) -> None:
    from transformers import AutoModel, Wav2Vec2FeatureExtractor, WhisperFeatureExtractor

    config = tiny_config(family)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModel.from_config(config)
    with quiet_transformers():
        model.save_pretrained(tmp)
    if family.startswith("whisper"):
        WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(tmp)
    else:
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
        ).save_pretrained(tmp)
    marker = {"builder": _BUILDER, "seed": seed, **({} if family == "wav2vec2" else {"family": family})}
    (tmp / TINY_MARKER).write_text(json.dumps(marker) + "\n")


def build_tiny(folder: str | Path, seed: int = 0, family: str = "wav2vec2") -> Path:
    """Write a tiny, randomly initialised model of ``family`` (deterministic from ``seed``) to ``folder``.

    Idempotent: an existing tiny model of the same family and seed is returned as it is; anything else
    already at ``folder`` is refused.  Written into a temporary sibling and renamed, so a reader never sees
    half a model.
    """
    folder = Path(folder).expanduser()
    if folder.exists():
        if _tiny_is_valid(folder, seed, family):
            return folder
        raise BackboneError(f"{folder}: an incomplete tiny backbone; delete the folder and run again")
    tiny_config(family)  # an unknown family fails before anything is written
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        _save_tiny(tmp, family, seed)
        try:
            tmp.rename(folder)
        except OSError:
            if folder.exists() and _tiny_is_valid(folder, seed, family):  # another process finished first
                return folder
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built the tiny random %s (seed %d) at %s", family, seed, folder)
    return folder


def build_tiny_wav2vec2(folder: str | Path, seed: int = 0) -> Path:
    """The tiny wav2vec2 of ``features=tiny`` (:func:`build_tiny` with family wav2vec2)."""
    return build_tiny(folder, seed, "wav2vec2")
