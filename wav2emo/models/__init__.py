"""Networks over the batch dict: each takes ``batch`` and returns logits (B, num_classes)."""

from wav2emo.models.blocks import ConvBlock
from wav2emo.models.egemaps_mlp import EgemapsMLP
from wav2emo.models.fe_vgg import FeVGG, FeVGGEgemaps, FeVGGEncoder
from wav2emo.models.layer_weighted import LayerWeighted
from wav2emo.models.standardizer import Standardizer

__all__ = [
    "ConvBlock",
    "EgemapsMLP",
    "FeVGG",
    "FeVGGEgemaps",
    "FeVGGEncoder",
    "LayerWeighted",
    "Standardizer",
]
