"""The emotions two corpora share, for testing a model of one corpus on another (cross-corpus evaluation).

Every corpus names its classes in the canonical vocabulary (:mod:`wav2emo.data.labels`), so by default the
shared classes are simply the names both label sets hold (RAVDESS and EmoDB share neutral, happy, sad,
angry, fearful, disgust).  An explicit ``mapping`` renames classes of either set before that intersection:
``{calm: neutral}`` scores RAVDESS's calm as neutral, ``{boredom: null}`` leaves boredom out on purpose.

What is not shared is never hidden: test clips of unshared emotions are counted per class in the report
(not scored), and the model's unshared output classes are left out of its argmax (:func:`restricted_argmax`),
which the report also says.  Fewer than two shared emotions is an error, raised before any extraction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .labels import LabelError, canonical_emotion, ordered_classes

MIN_SHARED = 2


@dataclass(frozen=True)
class SharedLabels:
    """Both label sets, the classes scored (canonical order) and where each class of either set goes."""

    model_classes: tuple[str, ...]
    test_classes: tuple[str, ...]
    shared: tuple[str, ...]
    model_to_shared: dict[str, str | None]
    test_to_shared: dict[str, str | None]
    mapping: dict[str, str | None]

    @property
    def unscored_model_classes(self) -> list[str]:
        """Model outputs left out of the argmax (no test clip can be of them)."""
        return [c for c, s in self.model_to_shared.items() if s is None]

    @property
    def unscored_test_classes(self) -> list[str]:
        """Test classes whose clips are counted but not scored (the model has no output for them)."""
        return [c for c, s in self.test_to_shared.items() if s is None]

    def test_index(self, test_class: str) -> int | None:
        """Index into ``shared`` of a test clip's class, or None when it is not scored."""
        target = self.test_to_shared.get(test_class)
        return None if target is None else self.shared.index(target)

    def describe(self) -> dict[str, Any]:
        """What a report says about the label sets (JSON-able)."""
        return {
            "model_classes": list(self.model_classes),
            "test_classes": list(self.test_classes),
            "shared_classes": list(self.shared),
            "mapping": dict(self.mapping) or "computed (identical canonical names)",
            "model_to_shared": dict(self.model_to_shared),
            "test_to_shared": dict(self.test_to_shared),
            "unscored_model_classes": self.unscored_model_classes,
            "unscored_test_classes": self.unscored_test_classes,
            "argmax": ("restricted to the shared classes: the model's probabilities of the classes mapped onto one "
                       "shared class are summed, its other outputs are left out"
                       + (f" ({', '.join(self.unscored_model_classes)})" if self.unscored_model_classes else "")),
        }


def _clean_mapping(mapping: Mapping[str, Any] | None) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, value in dict(mapping or {}).items():
        src = canonical_emotion(str(key))
        if value is None or (isinstance(value, str) and value.strip().lower() in ("null", "none", "")):
            out[src] = None
        else:
            out[src] = canonical_emotion(str(value))
    return out


def shared_labels(
    model_classes: Sequence[str],
    test_classes: Sequence[str],
    mapping: Mapping[str, Any] | None = None,
    *,
    model_corpus: str = "training corpus",
    test_corpus: str = "test corpus",
) -> SharedLabels:
    """The shared classes of a model's label set and a test corpus's label set, after ``mapping``.

    ``mapping`` (class -> class or null) applies to both sets; its keys must be classes of one of them.
    Raises :class:`~wav2emo.data.labels.LabelError` naming both label sets when fewer than two emotions are
    shared, or when the mapping names a class neither set has.
    """
    model_classes, test_classes = tuple(map(str, model_classes)), tuple(map(str, test_classes))
    clean = _clean_mapping(mapping)
    unknown = sorted(set(clean) - set(model_classes) - set(test_classes))
    if unknown:
        raise LabelError(f"cross-corpus mapping: {unknown} are in neither label set ({model_corpus}: "
                         f"{list(model_classes)}; {test_corpus}: {list(test_classes)}); expected keys from them")

    def target(c: str) -> str | None:
        return clean[c] if c in clean else c

    shared_set = {target(c) for c in model_classes} & {target(c) for c in test_classes}
    shared_set.discard(None)
    shared = ordered_classes(shared_set)  # type: ignore[arg-type]
    if len(shared) < MIN_SHARED:
        raise LabelError(
            f"cross-corpus: {model_corpus} {list(model_classes)} and {test_corpus} {list(test_classes)} share "
            f"{len(shared)} emotion(s) {list(shared)}"
            + (f" after the mapping {clean}" if clean else "")
            + f"; expected at least {MIN_SHARED} (map synonyms with eval's label_map, e.g. label_map.calm=neutral)"
        )
    return SharedLabels(
        model_classes=model_classes,
        test_classes=test_classes,
        shared=shared,
        model_to_shared={c: (target(c) if target(c) in shared else None) for c in model_classes},
        test_to_shared={c: (target(c) if target(c) in shared else None) for c in test_classes},
        mapping=clean,
    )


def restricted_argmax(scores: np.ndarray, labels: SharedLabels, *, probabilities: bool = True) -> np.ndarray:
    """Index into ``labels.shared`` of each row's best shared class.

    ``scores`` has one column per model class (``labels.model_classes`` order).  With ``probabilities`` the
    columns mapped onto one shared class are summed (a merged class keeps all its probability mass); with raw
    scores (an SVM's decision values) the largest is taken.  Unshared model classes take no part.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] != len(labels.model_classes):
        raise ValueError(f"scores of shape {scores.shape}; expected (clips, {len(labels.model_classes)}) for the "
                         f"model classes {list(labels.model_classes)}")
    columns = np.full((len(scores), len(labels.shared)), -np.inf)
    if probabilities:
        columns[:] = 0.0
    for j, c in enumerate(labels.model_classes):
        s = labels.model_to_shared[c]
        if s is None:
            continue
        k = labels.shared.index(s)
        columns[:, k] = columns[:, k] + scores[:, j] if probabilities else np.maximum(columns[:, k], scores[:, j])
    return columns.argmax(axis=1).astype(np.int64)
