"""Paired statistics of two configurations scored on the same clips, with the speaker as the unit.

* the difference A - B of UA, WA and macro F1 on the pooled predictions, with a paired speaker-bootstrap
  interval (a resample draws speakers; both configurations are scored on the same drawn speakers);
* a paired permutation test over speakers (:func:`scipy.stats.permutation_test`, ``permutation_type="samples"``):
  under the null hypothesis the two configurations are exchangeable, so each speaker's predictions of A and B
  may be swapped as a block; the p-value is the share of swaps whose |difference| is at least the observed one
  (exact when 2^speakers is no more than the permutations asked for);
* McNemar's exact test on the pooled clip-level correctness (:func:`scipy.stats.binomtest` on the discordant
  clips), a second opinion that ignores speakers (only for one repeat per configuration);
* Holm's step-down adjustment of a family of p-values.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import stats

from wav2emo.reports.intervals import METRICS, BootstrapSettings, _interval, scores_of_confusions


def _scores(cms: np.ndarray, own_classes: bool) -> np.ndarray:
    s = scores_of_confusions(cms, own_classes)
    return np.stack([s[m] for m in METRICS])


def paired_difference(cms_a: np.ndarray, cms_b: np.ndarray, settings: BootstrapSettings | None = None, *,
                      own_classes: bool = False) -> dict[str, Any]:
    """A - B for UA, WA, F1: ``{metric: {"estimate", "low", "high", "p"}}`` plus the test's description.

    ``cms_a`` and ``cms_b`` are per-speaker confusion stacks ``[speakers, C, C]`` over the same speakers, in the
    same order (:func:`wav2emo.reports.intervals.speaker_confusions` of the same clips).
    """
    settings = settings or BootstrapSettings()
    cms_a, cms_b = np.asarray(cms_a), np.asarray(cms_b)
    if cms_a.shape != cms_b.shape:
        raise ValueError(f"per-speaker confusions of shapes {cms_a.shape} and {cms_b.shape}: expected the same "
                         "speakers and classes")
    n = len(cms_a)
    point = _scores(cms_a.sum(0), own_classes) - _scores(cms_b.sum(0), own_classes)
    both = np.concatenate([cms_a, cms_b])  # index i < n: A's speaker i; n + i: B's speaker i

    def diff(x, y, axis=-1):
        x, y = np.asarray(x, dtype=np.int64), np.asarray(y, dtype=np.int64)
        return _scores(both[x].sum(-3), own_classes) - _scores(both[y].sum(-3), own_classes)

    out: dict[str, Any] = {
        "speakers": n,
        "interval_method": f"paired {settings.method} bootstrap over speakers ({settings.resamples} resamples, "
                           f"seed {settings.seed}, {settings.confidence:.0%} level)",
        "test": "paired permutation test over speakers (each speaker's predictions of the two configurations "
                f"swapped as a block; {'exact, ' if 2 ** n <= settings.permutations else ''}"
                f"{min(2 ** n, settings.permutations)} permutations, two-sided)",
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        warnings.simplefilter("ignore", category=stats.DegenerateDataWarning)
        if n > 1:
            boot = stats.bootstrap((np.arange(n),), lambda i, axis=-1: diff(i, np.asarray(i) + n), vectorized=True,
                                   n_resamples=int(settings.resamples), confidence_level=float(settings.confidence),
                                   method=settings.method, rng=np.random.default_rng(int(settings.seed)), batch=500)
            low, high = boot.confidence_interval.low, boot.confidence_interval.high
        else:
            low = high = point
        for i, m in enumerate(METRICS):
            if not np.any(cms_a != cms_b) or n < 2:  # identical predictions, or one speaker: both swaps of the
                p = 1.0                                # single block give the same |difference|
            else:
                res = stats.permutation_test(
                    (np.arange(n), np.arange(n) + n), lambda x, y, axis=-1, i=i: diff(x, y)[i],
                    permutation_type="samples", vectorized=True, n_resamples=int(settings.permutations),
                    alternative="two-sided", rng=np.random.default_rng(int(settings.seed)), batch=500)
                p = float(min(1.0, res.pvalue))
            out[m] = {**_interval(point[i], low[i], high[i]), "p": p}
    return out


def mcnemar(correct_a: Sequence[bool], correct_b: Sequence[bool]) -> dict[str, Any]:
    """McNemar's exact test: clips only A gets right vs clips only B gets right (binomial, p = 1/2)."""
    a, b = np.asarray(correct_a, dtype=bool), np.asarray(correct_b, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = 1.0 if only_a + only_b == 0 else float(stats.binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"only_a_correct": only_a, "only_b_correct": only_b, "p": p,
            "test": "McNemar exact (binomial on discordant clips; ignores speakers)"}


def holm(pvalues: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (family-wise error), in the input order; None stays None."""
    idx = [i for i, p in enumerate(pvalues) if p is not None]
    order = sorted(idx, key=lambda i: pvalues[i])
    m = len(order)
    adjusted: list[float | None] = [None] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * float(pvalues[i])))
        adjusted[i] = running
    return adjusted
