"""The built-in backbone families, one module each; importing this package registers them all.

A family module defines a :class:`wav2emo.backbones.family.Backbone` subclass and decorates it with
:func:`wav2emo.backbones.family.register_family`.  :mod:`.conv_front_end` holds what the wav2vec2-style
families share (a CNN on the raw wave, masked group norm, layer-range encoder).
"""

from wav2emo.backbones.families.data2vec_audio import Data2VecAudioBackbone
from wav2emo.backbones.families.hubert import HubertBackbone
from wav2emo.backbones.families.wav2vec2 import Wav2Vec2Backbone
from wav2emo.backbones.families.wavlm import WavLMBackbone
from wav2emo.backbones.families.whisper import WhisperEncoderBackbone

__all__ = ["Data2VecAudioBackbone", "HubertBackbone", "Wav2Vec2Backbone", "WavLMBackbone", "WhisperEncoderBackbone"]
