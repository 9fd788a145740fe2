"""Training-time augmentation: batched waveform transforms and feature masks, driven by one torch.Generator.

Build with :func:`build_augment` from ``conf/augment/<name>.yaml``; call the resulting :class:`Augmenter` on
training batches only.

May import: data (audio files), features (the cache the cached copies' features go to), and the package
root's errors and registry. Never imports models, feeding, training, runs or reports.
"""

from wav2emo.augment.compose import Augmenter, Compose, FeatureCompose
from wav2emo.augment.config import build_augment
from wav2emo.augment.gain import Gain
from wav2emo.augment.noise import AddNoise, NoiseBank
from wav2emo.augment.pitch import PitchShift
from wav2emo.augment.specaugment import SpecAugment
from wav2emo.augment.speed import Speed

__all__ = ["AddNoise", "Augmenter", "Compose", "FeatureCompose", "Gain", "NoiseBank", "PitchShift",
           "SpecAugment", "Speed", "build_augment"]
