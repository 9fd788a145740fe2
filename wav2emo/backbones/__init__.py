"""Self-supervised speech backbones, shared by extraction (``features/``) and fine-tuning (``models/``).

The contract is :class:`~wav2emo.backbones.family.Backbone`: one subclass per family (one module each under
:mod:`.families`, registered with :func:`~wav2emo.backbones.registry.register_family`); an instance is the ONE object that extraction,
fine-tuning, evaluation and prediction run.  Floors, bottom up (each imports only those below it):
:mod:`.source` (hub id or folder, identity, config and preprocessor JSON), :mod:`.switches` (train-mode
regularisers), :mod:`.running` (device, precision, padding), :mod:`.invariance` and :mod:`.encoder`
(wav2vec2-style masked group norm and layer ranges), :mod:`.family` (the contract), :mod:`.registry` (model_type -> family),
:mod:`.families` (the built-in families), :mod:`.tiny` (tiny random models of every family),
:mod:`.loading` (``load_backbone``: the family from config.json's model_type).

May import only the package root's errors and registry: extraction and fine-tuning import it, never the reverse.
"""

from wav2emo.backbones.encoder import (
    encoder_layers,
    final_layer_norm,
    is_stable_layer_norm,
    num_layers,
    run_layers,
    uses_position_bias,
)
from wav2emo.backbones.family import Backbone
from wav2emo.backbones.invariance import (
    BatchInvariance,
    MaskedGroupNorm,
    conv_output_length,
    conv_receptive_field,
)
from wav2emo.backbones.loading import family_of, load_backbone, source_of, wrap_model
from wav2emo.backbones.registry import family_for, register_family, registered_families
from wav2emo.backbones.running import (
    ExtractionError,
    effective_precision,
    normalize_wave,
    normalize_waves,
    resolve_device,
)
from wav2emo.backbones.source import (
    DEFAULT_BACKBONE,
    BackboneError,
    BackboneSource,
    backbone_identity,
    config_json,
    preprocessor_settings,
    resolve_source,
)
from wav2emo.backbones.switches import TRAIN_SWITCH_DEFAULTS, train_switches
from wav2emo.backbones.tiny import (
    TINY_MARKER,
    build_tiny,
    build_tiny_wav2vec2,
    tiny_config,
    tiny_wav2vec2_config,
)

__all__ = [
    "DEFAULT_BACKBONE",
    "TINY_MARKER",
    "TRAIN_SWITCH_DEFAULTS",
    "Backbone",
    "BackboneError",
    "BackboneSource",
    "BatchInvariance",
    "ExtractionError",
    "MaskedGroupNorm",
    "backbone_identity",
    "build_tiny",
    "build_tiny_wav2vec2",
    "config_json",
    "conv_output_length",
    "conv_receptive_field",
    "effective_precision",
    "encoder_layers",
    "family_for",
    "family_of",
    "final_layer_norm",
    "is_stable_layer_norm",
    "load_backbone",
    "wrap_model",
    "normalize_wave",
    "normalize_waves",
    "num_layers",
    "preprocessor_settings",
    "register_family",
    "registered_families",
    "resolve_device",
    "resolve_source",
    "run_layers",
    "source_of",
    "tiny_config",
    "tiny_wav2vec2_config",
    "train_switches",
    "uses_position_bias",
]
