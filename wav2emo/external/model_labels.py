"""Mapping a published classifier's label names onto a corpus's canonical emotions.

A checkpoint names its classes its own way (``ang``/``hap``/``neu``/``sad``, ``LABEL_3``, ``Anger``).  Each
model label maps to the corpus emotion its name means (:func:`wav2emo.data.labels.canonical_emotion`:
canonical names and known synonyms), or to what ``label_map`` says (``{model label: emotion}``, ``null``
to leave a label out).  A model label that names no emotion of the corpus is *unmapped*: its probability
never counts for any class, and how often the model's own top label was one of them is reported.

Corpus emotions no model label maps to cannot be predicted.  ``unmapped_emotions=exclude`` (the usual way
to evaluate a 4-class model on an 8-class corpus) scores only the clips of mapped emotions and counts the
others per emotion in every report; ``score`` scores every clip over all the corpus's classes (those
emotions then have recall 0).  Clips are never dropped silently either way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wav2emo.data.labels import LabelError, canonical_emotion
from wav2emo.errors import ConfigError

SCORING = ("exclude", "score")


def _key(name: Any) -> str:
    return str(name).strip().lower().replace("-", "_").replace(" ", "_")


@dataclass(frozen=True)
class LabelMapping:
    """Model label ``i`` -> scored class ``to_class[i]`` (None: unmapped); corpus class -> scored class."""

    model_labels: tuple[str, ...]          # the model's id2label, in id order
    targets: tuple[str | None, ...]        # the corpus emotion each model label maps to (None: unmapped)
    reasons: dict[str, str]                # unmapped model label -> why
    corpus_classes: tuple[str, ...]        # the corpus's class names (Clip.label indexes these)
    class_names: tuple[str, ...]           # the scored classes (report order = corpus order)
    scoring: str

    @property
    def to_class(self) -> list[int | None]:
        index = {c: i for i, c in enumerate(self.class_names)}
        return [None if t is None else index[t] for t in self.targets]

    @property
    def unmapped_model_labels(self) -> list[str]:
        return [m for m, t in zip(self.model_labels, self.targets, strict=True) if t is None]

    @property
    def unmapped_emotions(self) -> list[str]:
        """Corpus emotions no model label maps to (the model cannot predict them)."""
        mapped = {t for t in self.targets if t is not None}
        return [c for c in self.corpus_classes if c not in mapped]

    def scored_label(self, corpus_label: int) -> int | None:
        """A clip's class among ``class_names``, or None when its emotion is not scored (``exclude``)."""
        name = self.corpus_classes[int(corpus_label)]
        return self.class_names.index(name) if name in self.class_names else None

    def class_probabilities(self, logits: np.ndarray) -> np.ndarray:
        """``(N, scored classes)`` probabilities: the softmax over the model's labels, each class the sum of its
        model labels, renormalised over the mapped labels (an unmapped label's probability counts for none)."""
        z = np.asarray(logits, dtype=np.float64)
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        out = np.zeros((len(p), len(self.class_names)))
        for i, c in enumerate(self.to_class):
            if c is not None:
                out[:, c] += p[:, i]
        total = out.sum(1, keepdims=True)
        return out / np.where(total > 0, total, 1.0)

    def describe(self) -> dict[str, Any]:
        """The mapping as a report records it."""
        return {
            "model_labels": {m: t for m, t in zip(self.model_labels, self.targets, strict=True)},
            "unmapped_model_labels": {m: self.reasons[m] for m in self.unmapped_model_labels},
            "unmapped_emotions": self.unmapped_emotions,
            "scored_classes": list(self.class_names),
            "unmapped_emotions_scoring": self.scoring,
        }


def build_label_mapping(
    id2label: Mapping[int, str], corpus_classes: Sequence[str], label_map: Mapping[str, Any] | None = None,
    scoring: str = "exclude",
) -> LabelMapping:
    """The mapping of a model's ``id2label`` onto ``corpus_classes`` (see the module docstring).

    ``label_map`` keys must be model labels (a typo is a :class:`ConfigError` listing them); its values are
    emotion names (canonical or synonyms) or None.  A model whose labels map to none of the corpus's emotions
    is refused, naming its labels and how to map them.
    """
    if scoring not in SCORING:
        raise ConfigError(f"unmapped_emotions={scoring!r}: expected one of {SCORING}")
    ids = sorted(int(i) for i in id2label)
    if ids != list(range(len(ids))) or not ids:
        raise ConfigError(f"the model's id2label has ids {ids}; expected 0..n-1 (its config.json is damaged)")
    labels = tuple(str(id2label[i]) for i in ids)
    explicit = {_key(k): v for k, v in (label_map or {}).items()}
    unknown = sorted(set(explicit) - {_key(m) for m in labels})
    if unknown:
        raise ConfigError(f"label_map keys {unknown} are not labels of this model; its labels are {list(labels)}")
    corpus = tuple(str(c) for c in corpus_classes)
    targets: list[str | None] = []
    reasons: dict[str, str] = {}
    for name in labels:
        key = _key(name)
        try:
            if key in explicit:
                value = explicit[key]
                if value is None:
                    targets.append(None)
                    reasons[name] = "left out by label_map (null)"
                    continue
                target = canonical_emotion(str(value))
            else:
                target = canonical_emotion(name)
        except LabelError as e:
            if key in explicit:
                raise ConfigError(f"label_map.{name}={explicit[key]!r}: {e}") from None
            targets.append(None)
            reasons[name] = "not an emotion name wav2emo knows (map it with label_map)"
            continue
        if target not in corpus:
            targets.append(None)
            reasons[name] = f"the corpus has no {target!r} clips (its classes: {list(corpus)})"
            continue
        targets.append(target)
    mapped = {t for t in targets if t is not None}
    if not mapped:
        raise ConfigError(
            f"none of the model's labels {list(labels)} names an emotion of the corpus {list(corpus)}; map them "
            f"with label_map, e.g. label_map='{{{labels[0]}: angry}}' (null leaves a label out)"
        )
    class_names = corpus if scoring == "score" else tuple(c for c in corpus if c in mapped)
    return LabelMapping(labels, tuple(targets), reasons, corpus, class_names, scoring)
