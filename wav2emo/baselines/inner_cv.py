"""Hyper-parameters of the scikit-learn baselines chosen by an inner cross-validation grouped by speaker.

Where a fold's dev speakers cannot cover its classes (natural corpora: speakers carrying one or two emotions),
UA on them chooses on a dev set of one or two classes.  Instead, scikit-learn's ``GridSearchCV`` with
``GroupKFold`` over the training speakers (dev speakers included: no speaker is held out for anything else)
scores every candidate by UA (``balanced_accuracy``: macro recall) on held-out training speakers; the chosen
candidate is then refit on all training speakers.  ``model.selection``: ``dev`` (UA on the dev part),
``inner_cv``, or ``auto`` (inner CV where the dev part is empty or lacks a training class and there are at
least two training speakers; dev otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.model_selection import GridSearchCV, GroupKFold
from sklearn.pipeline import Pipeline

from wav2emo.errors import ConfigError

SELECTIONS = ("auto", "dev", "inner_cv")
MAX_INNER_FOLDS = 5


def selection_method(wanted: str, y_train: np.ndarray, groups: np.ndarray, y_dev: np.ndarray) -> tuple[str, str]:
    """``(method, why)``: how this fold chooses its hyper-parameters (see the module docstring)."""
    if wanted not in SELECTIONS:
        raise ConfigError(f"model.selection={wanted!r}; expected one of {list(SELECTIONS)}")
    n_groups = len(set(groups.tolist()))
    missing = sorted(set(y_train.tolist()) - set(y_dev.tolist()))
    if wanted == "inner_cv":
        if n_groups < 2:
            raise ConfigError(f"model.selection=inner_cv needs at least 2 training speakers to group by; this fold "
                              f"has {n_groups} (use selection=dev)")
        return "inner_cv", "model.selection=inner_cv"
    if wanted == "dev":
        return "dev", "model.selection=dev"
    if n_groups >= 2 and (len(y_dev) == 0 or missing):
        why = "no dev clips" if len(y_dev) == 0 else (f"the dev part lacks {len(missing)} training "
                                                  f"class{'es' if len(missing) > 1 else ''} (label {missing})")
        return "inner_cv", f"auto: {why}"
    return "dev", "auto: the dev part covers every training class" if len(y_dev) else "auto: one training speaker"


def inner_cv_scores(pipe: Pipeline, candidates: Sequence[Mapping[str, Any]], x: np.ndarray, y: np.ndarray,
                    groups: np.ndarray) -> tuple[int, list[float], int]:
    """``(best index, mean UA per candidate, inner folds)``; the first best in grid order wins a tie."""
    n_splits = min(MAX_INNER_FOLDS, len(set(groups.tolist())))
    grid = [{f"estimator__{k}": [v] for k, v in c.items()} for c in candidates]
    search = GridSearchCV(pipe, grid, scoring="balanced_accuracy", cv=GroupKFold(n_splits=n_splits), refit=False,
                          error_score="raise")
    search.fit(x, y, groups=groups)
    scores = [float(s) for s in search.cv_results_["mean_test_score"]]
    return int(np.argmax(scores)), scores, n_splits
