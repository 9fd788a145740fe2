"""Self-supervised speech backbones, shared by extraction (``features/``) and fine-tuning (``models/``).

One job per module: :mod:`.source` (hub id or folder, and the identity naming its weights),
:mod:`.loading` (``AutoModel``, frozen or trainable, train-mode switches), :mod:`.invariance` (the
batch-invariance patch), :mod:`.encoder` (running transformer layers i..j on a hidden state),
:mod:`.inputs` (per-clip wave normalisation and frame counts on a padded batch), :mod:`.tiny` (tiny random
backbones for offline tests).
"""

from wav2emo.backbones.encoder import (
    encoder_layers,
    final_layer_norm,
    is_stable_layer_norm,
    num_layers,
    run_layers,
    uses_position_bias,
)
from wav2emo.backbones.invariance import (
    BatchInvariance,
    MaskedGroupNorm,
    conv_output_length,
    conv_receptive_field,
)
from wav2emo.backbones.loading import TRAIN_SWITCH_DEFAULTS, Backbone, load_backbone, train_switches
from wav2emo.backbones.source import (
    DEFAULT_BACKBONE,
    BackboneError,
    BackboneSource,
    backbone_identity,
    preprocessor_settings,
    resolve_source,
)
from wav2emo.backbones.tiny import TINY_MARKER, build_tiny_wav2vec2, tiny_config, tiny_wav2vec2_config

__all__ = [
    "DEFAULT_BACKBONE",
    "TINY_MARKER",
    "TRAIN_SWITCH_DEFAULTS",
    "Backbone",
    "BackboneError",
    "BackboneSource",
    "BatchInvariance",
    "MaskedGroupNorm",
    "backbone_identity",
    "build_tiny_wav2vec2",
    "conv_output_length",
    "conv_receptive_field",
    "encoder_layers",
    "final_layer_norm",
    "is_stable_layer_norm",
    "load_backbone",
    "num_layers",
    "preprocessor_settings",
    "resolve_source",
    "run_layers",
    "tiny_config",
    "tiny_wav2vec2_config",
    "train_switches",
    "uses_position_bias",
]
