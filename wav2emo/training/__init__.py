"""Training: the LightningModule wrapper and the metrics it logs."""

from wav2emo.training.metrics import build_metrics, build_per_class_metrics, per_class_table
from wav2emo.training.module import EmotionClassifier

__all__ = ["EmotionClassifier", "build_metrics", "build_per_class_metrics", "per_class_table"]
