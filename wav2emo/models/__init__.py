"""Networks over the batch dict: each takes ``batch`` and returns logits (B, num_classes).

May import: backbones, features (the layout of cached hidden states) and the package root's errors. Never
imports feeding, training, runs or reports.
"""

from wav2emo.models.attentive import Attentive, AttentiveStatsPool
from wav2emo.models.blocks import ConvBlock
from wav2emo.models.egemaps_mlp import EgemapsMLP
from wav2emo.models.fe_vgg import FeVGG, FeVGGEgemaps, FeVGGEncoder
from wav2emo.models.layer_weighted import LayerWeighted
from wav2emo.models.lstm import LSTMHead
from wav2emo.models.mean_linear import MeanLinear
from wav2emo.models.pooling import LayerMix
from wav2emo.models.standardizer import Standardizer

__all__ = [
    "Attentive",
    "AttentiveStatsPool",
    "ConvBlock",
    "EgemapsMLP",
    "FeVGG",
    "FeVGGEgemaps",
    "FeVGGEncoder",
    "LSTMHead",
    "LayerMix",
    "LayerWeighted",
    "MeanLinear",
    "Standardizer",
]
