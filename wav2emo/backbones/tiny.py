"""Tiny, randomly initialised backbones: every code path of extraction and fine-tuning in seconds, offline.

``build_tiny_wav2vec2`` writes the tiny wav2vec2 that ``features=tiny`` extracts with; ``tiny_config``
gives toy configs of the other families (HuBERT, WavLM, data2vec-audio, the stable-layer-norm wav2vec2)
for tests that check the layer-by-layer encoder against Hugging Face's own forward pass.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from wav2emo.backbones.loading import quiet_transformers
from wav2emo.backbones.source import BackboneError

log = logging.getLogger(__name__)

TINY_MARKER = "wav2emo-tiny.json"
# The marker's text is kept as it was when this lived in wav2emo.features.backbone: existing tiny folders stay valid.
_BUILDER = "wav2emo.features.backbone"

# wav2vec2's real front end (320x downsampling: 50 frames/s, 400-sample receptive field) with toy width and depth.
_FRONT_END: dict[str, Any] = dict(
    conv_dim=(32,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=False,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=64,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    vocab_size=8,
)


def tiny_wav2vec2_config(**overrides: Any):
    """wav2vec2's real front end (group norm in the first conv like base) with a toy width and depth."""
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**{**_FRONT_END, "feat_extract_norm": "group", "do_stable_layer_norm": False, **overrides})


def tiny_config(family: str, **overrides: Any):
    """A toy config of ``family``: wav2vec2, wav2vec2-stable (the large/XLSR layout), hubert, hubert-stable,
    wavlm, wavlm-stable, data2vec-audio."""
    import transformers as tf

    stable = family.endswith("-stable")
    base = family.removesuffix("-stable")
    classes = {"wav2vec2": tf.Wav2Vec2Config, "hubert": tf.HubertConfig, "wavlm": tf.WavLMConfig,
               "data2vec-audio": tf.Data2VecAudioConfig}
    if base not in classes or (stable and base == "data2vec-audio"):
        raise ValueError(f"tiny_config: unknown family {family!r}; expected one of "
                         f"{sorted(classes) + [f'{b}-stable' for b in classes if b != 'data2vec-audio']}")
    kw: dict[str, Any] = dict(_FRONT_END)
    if base == "data2vec-audio":
        kw.update(feat_extract_norm="layer", conv_pos_kernel_size=5, num_conv_pos_embeddings=5)
    else:
        kw.update(feat_extract_norm="layer" if stable else "group", do_stable_layer_norm=stable)
    if base == "wavlm":
        kw.update(num_buckets=16, max_bucket_distance=40)
    kw.update(overrides)
    return classes[base](**kw)


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
    folder = Path(folder).expanduser()
    if folder.exists():
        if _tiny_is_valid(folder, seed):
            return folder
        raise BackboneError(f"{folder}: an incomplete tiny backbone; delete the folder and run again")
    # Imported only to build: a run whose tiny model exists never loads transformers' model code (start-up).
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Wav2Vec2Model(tiny_wav2vec2_config())
        with quiet_transformers():
            model.save_pretrained(tmp)
        Wav2Vec2FeatureExtractor(
            feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True, return_attention_mask=False
        ).save_pretrained(tmp)
        (tmp / TINY_MARKER).write_text(json.dumps({"builder": _BUILDER, "seed": seed}) + "\n")
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
