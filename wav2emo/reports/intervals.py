"""Confidence intervals over test speakers: the speaker bootstrap every report gives beside its metrics.

One speaker's clips are not independent (same voice, microphone and acting style), so the unit of resampling
is the speaker, never the clip: a resample draws as many speakers as the test part has, with replacement, each
with all its clips, and the metric is recomputed on the pooled predictions of the drawn speakers.  Pooling is
exact and cheap through per-speaker confusion matrices: a resample's confusion matrix is the sum of its
speakers' matrices, so the metrics of thousands of resamples are a few array operations
(:func:`scores_of_confusions`, the same definitions as :func:`wav2emo.reports.metrics.metrics_from_confusion`).
The percentiles (or BCa) come from :func:`scipy.stats.bootstrap`.

Repeats of one configuration (seeds) or several fold models scored on the same clips (cross-corpus cells) are
pooled the same way: every repeat's predictions of a speaker's clips belong to that speaker.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from wav2emo.errors import UserError

MIN_RELIABLE_SPEAKERS = 5
METRICS = ("ua", "wa", "f1")
METHODS = ("percentile", "BCa", "basic")


class IntervalError(UserError, ValueError):
    """Predictions that cannot be bootstrapped over speakers as given."""


@dataclass(frozen=True)
class BootstrapSettings:
    """How intervals are drawn: resamples, confidence level, seed of the generator, scipy's CI method."""

    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0
    method: str = "percentile"
    permutations: int = 9999  # random speaker-swap permutations of the paired test (exact when 2^speakers is fewer)

    def __post_init__(self) -> None:
        if int(self.resamples) < 100:
            raise IntervalError(f"bootstrap resamples={self.resamples}: expected at least 100")
        if not 0.5 < float(self.confidence) < 1.0:
            raise IntervalError(f"bootstrap confidence={self.confidence}: expected a level between 0.5 and 1, e.g. 0.95")
        if self.method not in METHODS:
            raise IntervalError(f"bootstrap method={self.method!r}: expected one of {', '.join(METHODS)}")
        if int(self.permutations) < 100:
            raise IntervalError(f"permutations={self.permutations}: expected at least 100")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> BootstrapSettings:
        """From a config's ``report`` section (``bootstrap_resamples``, ``bootstrap_seed``, ``confidence``,
        ``bootstrap_method``, ``permutations``); missing keys keep their defaults."""
        cfg = dict(cfg or {})
        names = {"bootstrap_resamples": "resamples", "bootstrap_seed": "seed", "confidence": "confidence",
                 "bootstrap_method": "method", "permutations": "permutations"}
        unknown = sorted(set(cfg) - set(names))
        if unknown:
            raise IntervalError(f"report settings: unknown key(s) {unknown}; expected {sorted(names)}")
        kw = {names[k]: v for k, v in cfg.items() if v is not None}
        return cls(**kw)

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def speaker_confusions(speakers: Any, labels: Any, preds: Any, num_classes: int) -> tuple[list, np.ndarray]:
    """``(speaker ids, confusion matrices [speakers, C, C])``: each speaker's counts (rows = true class)."""
    speakers = np.asarray(speakers)
    labels = np.asarray(labels, dtype=np.int64)
    preds = np.asarray(preds, dtype=np.int64)
    if not (len(speakers) == len(labels) == len(preds)):
        raise IntervalError(f"{len(speakers)} speaker ids, {len(labels)} labels and {len(preds)} predictions: "
                            "expected one of each per clip")
    for what, v in (("labels", labels), ("predictions", preds)):
        bad = v[(v < 0) | (v >= num_classes)]
        if bad.size:
            raise IntervalError(f"{what}: class index {int(bad[0])} outside 0..{num_classes - 1}")
    ids, which = np.unique(speakers, return_inverse=True)
    cms = np.zeros((len(ids), num_classes, num_classes), dtype=np.int64)
    np.add.at(cms, (which, labels, preds), 1)
    return ids.tolist(), cms


def scores_of_confusions(cms: np.ndarray, own_classes: bool = False) -> dict[str, np.ndarray]:
    """WA, UA, macro F1 and per-class recall of a stack of confusion matrices ``[..., C, C]``.

    The macro means skip a class with nothing to score (no true positive, false positive or false negative),
    as :func:`~wav2emo.reports.metrics.metrics_from_confusion` does; ``own_classes`` takes them over the classes
    with test clips only (the per-corpus metrics of ``data=multi``). A class without clips has recall NaN.
    """
    cms = np.asarray(cms, dtype=float)
    tp = np.diagonal(cms, axis1=-2, axis2=-1)
    support = cms.sum(-1)
    predicted = cms.sum(-2)
    fp, fn = predicted - tp, support - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = np.where(support > 0, tp / np.where(support > 0, support, 1), np.nan)
        denom = 2 * tp + fp + fn
        f1 = np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), 0.0)
        present = support > 0 if own_classes else denom > 0
        n_present = present.sum(-1)
        ua = np.where(n_present > 0, np.where(present, np.nan_to_num(recall), 0).sum(-1) / np.maximum(n_present, 1),
                      np.nan)
        macro_f1 = np.where(n_present > 0, np.where(present, f1, 0).sum(-1) / np.maximum(n_present, 1), np.nan)
        total = support.sum(-1)
        wa = np.where(total > 0, tp.sum(-1) / np.maximum(total, 1), np.nan)
    return {"ua": ua, "wa": wa, "f1": macro_f1, "recall": recall}


def _stacked(cms: np.ndarray, own_classes: bool) -> np.ndarray:
    """[3 + C, ...]: UA, WA, F1, then per-class recall, of confusion stacks [..., C, C]."""
    s = scores_of_confusions(cms, own_classes)
    return np.concatenate([np.stack([s[m] for m in METRICS]), np.moveaxis(s["recall"], -1, 0)])


def _interval(value: float, low: float, high: float) -> dict[str, Any]:
    ok = all(np.isfinite([value, low, high]))
    return {"estimate": float(value) if np.isfinite(value) else None,
            "low": float(low) if ok else None, "high": float(high) if ok else None}


def _bootstrap(statistic, n_units: int, settings: BootstrapSettings):
    """scipy's bootstrap over unit indices 0..n-1 (the statistic pools the drawn units' confusions)."""
    import warnings

    from scipy import stats  # here, not at the top: a training run's start-up does not need scipy.stats

    with warnings.catch_warnings():  # a metric constant over resamples (e.g. perfect predictions) is not an error
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        return stats.bootstrap((np.arange(n_units),), statistic, vectorized=True, paired=False,
                               n_resamples=int(settings.resamples), confidence_level=float(settings.confidence),
                               method=settings.method, rng=np.random.default_rng(int(settings.seed)), batch=500)


def reliability_note(n_speakers: int) -> str | None:
    if n_speakers < MIN_RELIABLE_SPEAKERS:
        return (f"only {n_speakers} test speaker(s): fewer than {MIN_RELIABLE_SPEAKERS}, so the interval over "
                "speakers is unreliable (too few speakers to resample); read it as a rough range")
    return None


def speaker_intervals(speakers: Any, labels: Any, preds: Any, class_names: Sequence[str],
                      settings: BootstrapSettings | None = None, *, own_classes: bool = False) -> dict[str, Any]:
    """Speaker-bootstrap intervals of UA, WA, macro F1 and each class's recall on the pooled predictions.

    Returns ``method`` (a sentence), ``unit`` ("speaker"), ``speakers``, ``clips``, ``settings``, ``reliable``,
    ``note`` (why not, or None), and ``ua``/``wa``/``f1`` and ``per_class_recall[class]`` as
    ``{"estimate", "low", "high"}``. ``speakers`` must name every clip's speaker; fewer than one is refused.
    """
    settings = settings or BootstrapSettings()
    names = list(class_names)
    ids, cms = speaker_confusions(speakers, labels, preds, len(names))
    if not ids:
        raise IntervalError("no test clips: nothing to bootstrap (a fold without test speakers?)")
    point = _stacked(cms.sum(0), own_classes)
    out: dict[str, Any] = {
        "method": f"{settings.method} bootstrap over test speakers (each resample draws {len(ids)} speakers with "
                  f"replacement, with all their clips; metrics recomputed on the pooled predictions); "
                  f"{settings.resamples} resamples, seed {settings.seed}, {settings.confidence:.0%} level",
        "unit": "speaker", "speakers": len(ids), "clips": int(cms.sum()), "settings": settings.describe(),
        "reliable": len(ids) >= MIN_RELIABLE_SPEAKERS, "note": reliability_note(len(ids)),
    }
    if len(ids) == 1:  # one speaker: every resample is the same clips, the interval is that point
        low = high = point
    else:
        res = _bootstrap(lambda idx, axis=-1: _stacked(cms[np.asarray(idx, dtype=np.int64)].sum(-3), own_classes),
                         len(ids), settings)
        low, high = res.confidence_interval.low, res.confidence_interval.high
    for i, m in enumerate(METRICS):
        out[m] = _interval(point[i], low[i], high[i])
    support = cms.sum(0).sum(1)
    out["per_class_recall"] = {
        c: _interval(point[3 + j], low[3 + j], high[3 + j]) for j, c in enumerate(names) if support[j] > 0
    }
    return out


def utterance_intervals(labels: Any, preds: Any, class_names: Sequence[str],
                        settings: BootstrapSettings | None = None) -> dict[str, Any]:
    """The same bootstrap with every clip its own unit (what ignoring speakers gives; for comparison only)."""
    n = len(np.asarray(labels))
    return speaker_intervals(np.arange(n), labels, preds, class_names, settings)


def seed_spread(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std, min and max of one metric over repeats (seeds)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    return {"mean": float(v.mean()) if len(v) else None, "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()) if len(v) else None, "max": float(v.max()) if len(v) else None,
            "repeats": len(v), "values": v.tolist()}
