"""Emotion-recognition metrics with the averages named explicitly.

torchmetrics' MulticlassAccuracy defaults to ``average="macro"``; published SER numbers mix weighted
accuracy (WA, micro: correct clips / clips) and unweighted accuracy (UA, macro: mean per-class recall),
so both are built here by name.

These are for training-time logging only. Reports, the baselines, eval and predict score predictions with
:func:`wav2emo.reports.metrics.classification_metrics` (re-exported here), which gives the same numbers
(tests/test_reports.py checks it on random predictions, classes absent from the labels included).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from wav2emo.reports.metrics import classification_metrics

__all__ = ["build_metrics", "build_per_class_metrics", "classification_metrics", "per_class_table"]


def build_metrics(num_classes: int, prefix: str = "") -> MetricCollection:
    """``{prefix}wa`` (micro accuracy), ``{prefix}ua`` (macro recall), ``{prefix}f1`` (macro F1).

    A prefix without a trailing slash gets one: ``"val"`` gives ``val/wa``.
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return MetricCollection(
        {
            "wa": MulticlassAccuracy(num_classes=num_classes, average="micro"),
            "ua": MulticlassAccuracy(num_classes=num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes=num_classes, average="macro"),
        },
        prefix=prefix,
    )


def build_per_class_metrics(num_classes: int) -> MetricCollection:
    """Per-class ``precision``/``recall``/``f1`` (average=None) and ``confusion`` (rows = true class)."""
    return MetricCollection(
        {
            "precision": MulticlassPrecision(num_classes=num_classes, average=None),
            "recall": MulticlassRecall(num_classes=num_classes, average=None),
            "f1": MulticlassF1Score(num_classes=num_classes, average=None),
            "confusion": MulticlassConfusionMatrix(num_classes=num_classes),
        }
    )


def per_class_table(
    precision: Sequence[float] | torch.Tensor,
    recall: Sequence[float] | torch.Tensor,
    f1: Sequence[float] | torch.Tensor,
    support: Sequence[int] | torch.Tensor,
    class_names: Sequence[str],
) -> list[dict]:
    """One row per class: ``{"class", "precision", "recall", "f1", "support"}`` with plain Python values."""
    cols = {
        name: [float(v) for v in (col.tolist() if torch.is_tensor(col) else col)]
        for name, col in (("precision", precision), ("recall", recall), ("f1", f1))
    }
    sup = [int(v) for v in (support.tolist() if torch.is_tensor(support) else support)]
    n = len(class_names)
    for name, col in (*cols.items(), ("support", sup)):
        if len(col) != n:
            raise ValueError(f"per_class_table: {name} has {len(col)} values, expected {n} (one per class)")
    return [
        {
            "class": str(class_names[i]),
            "precision": cols["precision"][i],
            "recall": cols["recall"][i],
            "f1": cols["f1"][i],
            "support": sup[i],
        }
        for i in range(n)
    ]
