"""Whether a model config names a scikit-learn baseline: answered without importing scikit-learn or pandas.

``python -m wav2emo.train`` asks this of every run before choosing its runner; a neural run with cached
features must not pay for the baselines' imports (about 1 s: pandas, scikit-learn, scipy.stats; issue 25).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omegaconf import OmegaConf


def is_baseline_model(model: Any) -> bool:
    """Whether a model config is a scikit-learn baseline (an ``estimator`` and a ``grid``), not a neural model:
    how ``python -m wav2emo.train model=sklearn_svm`` knows to run the baselines."""
    return (OmegaConf.is_dict(model) or isinstance(model, Mapping)) and "estimator" in model and "grid" in model
