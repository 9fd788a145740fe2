"""One emotion vocabulary for every corpus, so labels of different corpora mean the same thing.

Each recipe maps its own codes (EmoDB's German initials ``W``/``L``/..., CREMA-D's ``ANG``, IEMOCAP's
``exc``) onto these canonical names and keeps the code on the clip (``Clip.code``) for reports.  A
corpus's class list (``Manifest.class_names``) is the subset it uses, always in canonical order, so the
same emotions get the same order in every corpus (RAVDESS's eight keep their code order 01..08).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from wav2emo.errors import UserError

# The RAVDESS eight first (their code order), then the emotions other corpora add.
CANONICAL_EMOTIONS: tuple[str, ...] = (
    "neutral",
    "calm",
    "happy",
    "sad",
    "angry",
    "fearful",
    "disgust",
    "surprised",
    "boredom",
    "excited",
    "frustrated",
    "contempt",
    "other",
)

# Spellings found in corpus documentation, folder names and CSVs -> canonical name.
SYNONYMS: dict[str, str] = {
    "neu": "neutral",
    "neutrale": "neutral",
    "calm": "calm",
    "hap": "happy",
    "happiness": "happy",
    "joy": "happy",
    "gioia": "happy",
    "sadness": "sad",
    "tristezza": "sad",
    "ang": "angry",
    "anger": "angry",
    "rabbia": "angry",
    "fear": "fearful",
    "fea": "fearful",
    "afraid": "fearful",
    "paura": "fearful",
    "dis": "disgust",
    "disgusted": "disgust",
    "disgusto": "disgust",
    "sur": "surprised",
    "surprise": "surprised",
    "ps": "surprised",
    "pleasant_surprise": "surprised",
    "pleasant_surprised": "surprised",
    "sorpresa": "surprised",
    "bored": "boredom",
    "boring": "boredom",
    "exc": "excited",
    "fru": "frustrated",
    "frustration": "frustrated",
    "oth": "other",
}


class LabelError(UserError, ValueError):
    """An emotion name or mapping that cannot be used; the message names the value."""


def canonical_emotion(name: str, mapping: Mapping[str, str] | None = None) -> str:
    """The canonical name of ``name`` (a canonical name, a known synonym, or a key of ``mapping``).

    Case and surrounding blanks are ignored; ``-`` and spaces count as ``_``.  Unknown names raise
    :class:`LabelError` listing the vocabulary: a misspelt emotion must never become a new class.
    """
    if not isinstance(name, str) or not name.strip():
        raise LabelError(f"emotion {name!r} is empty; expected one of {list(CANONICAL_EMOTIONS)}")
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    if mapping:
        lowered = {str(k).strip().lower().replace("-", "_").replace(" ", "_"): v for k, v in mapping.items()}
        if key in lowered:
            return canonical_emotion(str(lowered[key]))
    if key in CANONICAL_EMOTIONS:
        return key
    if key in SYNONYMS:
        return SYNONYMS[key]
    raise LabelError(
        f"emotion {name!r} is not in the vocabulary; expected one of {list(CANONICAL_EMOTIONS)} "
        f"(or a synonym such as {sorted(SYNONYMS)[:8]}...), or map it with data.corpus.emotion_map"
    )


def ordered_classes(emotions: Iterable[str]) -> tuple[str, ...]:
    """The distinct canonical ``emotions`` in canonical order (a corpus's ``class_names``)."""
    found = set(emotions)
    unknown = sorted(found - set(CANONICAL_EMOTIONS))
    if unknown:
        raise LabelError(f"emotions {unknown} are not canonical; expected names from {list(CANONICAL_EMOTIONS)}")
    return tuple(e for e in CANONICAL_EMOTIONS if e in found)
