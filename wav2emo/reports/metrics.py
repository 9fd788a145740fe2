"""The one definition of the test metrics every report uses (cross-validation, baselines, eval, predict).

WA is micro accuracy (correct clips / clips), UA the macro mean of per-class recall, F1 the macro mean of
per-class F1. The macro means follow torchmetrics (what the LightningModule logs while training), so a
number in a report and the same number in the training log agree: a class that is in neither the labels
nor the predictions (no true positive, false positive or false negative) is left out of the macro mean
rather than counted as a zero, and a ratio with a zero denominator is 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wav2emo.errors import UserError


class MetricsInputError(UserError, ValueError):
    """Labels or predictions that cannot be scored as given (lengths differ, index out of range)."""


def _as_index_array(values: Any, what: str, num_classes: int) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise MetricsInputError(f"{what}: expected a 1-d sequence of class indices, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise MetricsInputError(f"{what}: expected integer class indices, got values such as {arr[:3].tolist()}")
        arr = arr.astype(np.int64)
    arr = arr.astype(np.int64, copy=False)
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise MetricsInputError(f"{what}: class index {int(bad[0])} outside 0..{num_classes - 1} "
                                f"({num_classes} classes)")
    return arr


def confusion_matrix(labels: Any, preds: Any, num_classes: int) -> np.ndarray:
    """Counts, rows = true class, columns = predicted class."""
    y = _as_index_array(labels, "labels", num_classes)
    p = _as_index_array(preds, "predictions", num_classes)
    if len(y) != len(p):
        raise MetricsInputError(f"{len(y)} labels but {len(p)} predictions: expected one prediction per label")
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (y, p), 1)
    return cm


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(num.shape, dtype=float), where=den > 0)


def metrics_from_confusion(cm: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """WA, UA, macro F1, per-class precision/recall/F1/support of a confusion matrix (rows = true)."""
    cm = np.asarray(cm, dtype=np.int64)
    n = len(class_names)
    if cm.shape != (n, n):
        raise MetricsInputError(f"confusion matrix of shape {cm.shape} for {n} class names: expected ({n}, {n})")
    tp = np.diag(cm).astype(float)
    support = cm.sum(1)
    predicted = cm.sum(0)
    fp, fn = predicted - tp, support - tp
    precision = _ratio(tp, predicted.astype(float))
    recall = _ratio(tp, support.astype(float))
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    present = (tp + fp + fn) > 0  # torchmetrics' macro mean skips classes with nothing to score
    total = int(cm.sum())

    def macro(v: np.ndarray) -> float:
        return float(v[present].mean()) if present.any() else float("nan")

    return {
        "clips": total,
        "wa": float(tp.sum() / total) if total else float("nan"),
        "ua": macro(recall),
        "f1": macro(f1),
        "per_class": [
            {"class": str(c), "precision": float(a), "recall": float(b), "f1": float(d), "support": int(s)}
            for c, a, b, d, s in zip(class_names, precision, recall, f1, support, strict=True)
        ],
        "confusion": cm.tolist(),
    }


def classification_metrics(labels: Any, preds: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """The test metrics of one set of predictions.

    Returns ``clips``, ``wa``, ``ua``, ``f1`` (floats; NaN for no clips), ``per_class`` (one dict per class:
    ``class``, ``precision``, ``recall``, ``f1``, ``support``) and ``confusion`` (list of rows, rows = true).
    Labels and predictions are class indices into ``class_names``; anything else is refused by name.
    """
    cm = confusion_matrix(labels, preds, len(class_names))
    return metrics_from_confusion(cm, class_names)
