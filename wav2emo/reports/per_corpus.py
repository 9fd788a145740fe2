"""Metrics per corpus, for models trained and tested on several corpora at once (``data=multi``).

The label set is the union of the corpora's classes, so a corpus usually lacks some of them (EmoDB has no
calm).  A corpus's UA and macro F1 are therefore means over *its own* classes (those with test clips of it):
a prediction of a class the corpus does not have is an error of that clip (it lowers the recall of the
clip's class and WA), never an extra zero-recall class in the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from wav2emo.reports.formatting import fmt, fmt_interval
from wav2emo.reports.intervals import BootstrapSettings, speaker_intervals
from wav2emo.reports.metrics import classification_metrics

CORPUS_COLUMN = "corpus"


def corpus_metrics(labels: Any, preds: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """WA, and UA / macro F1 over the classes present in ``labels`` (see the module docstring)."""
    m = classification_metrics(labels, preds, class_names)
    own = [r for r in m["per_class"] if r["support"] > 0]
    return {
        "clips": m["clips"],
        "wa": m["wa"],
        "ua": float(np.mean([r["recall"] for r in own])) if own else float("nan"),
        "f1": float(np.mean([r["f1"] for r in own])) if own else float("nan"),
        "classes": [r["class"] for r in own],
        "per_class": own,
    }


def per_corpus_metrics(corpora: Sequence[str], labels: Any, preds: Any, class_names: Sequence[str]
                       ) -> dict[str, dict[str, Any]]:
    """``corpus -> corpus_metrics`` of the clips of each corpus (in order of first appearance)."""
    corpora = np.asarray(list(corpora), dtype=object)
    labels, preds = np.asarray(labels), np.asarray(preds)
    out = {}
    for c in dict.fromkeys(corpora.tolist()):
        rows = corpora == c
        out[str(c)] = corpus_metrics(labels[rows], preds[rows], class_names)
    return out


def per_corpus_intervals(corpora: Sequence[str], speakers: Any, labels: Any, preds: Any, class_names: Sequence[str],
                         settings: BootstrapSettings | None = None) -> dict[str, dict[str, Any]]:
    """``corpus -> speaker-bootstrap intervals`` over that corpus's speakers and its own classes."""
    corpora = np.asarray(list(corpora), dtype=object)
    speakers, labels, preds = np.asarray(speakers), np.asarray(labels), np.asarray(preds)
    return {str(c): speaker_intervals(speakers[corpora == c], labels[corpora == c], preds[corpora == c], class_names,
                                      settings, own_classes=True)
            for c in dict.fromkeys(corpora.tolist())}


def render_per_corpus(per_corpus: dict[str, dict[str, Any]], title: str,
                      intervals: dict[str, dict[str, Any]] | None = None) -> list[str]:
    """Markdown lines of a per-corpus table (with each corpus's intervals over its speakers when given)."""
    lines = [f"\n## {title}\n",
             "UA and macro F1 over each corpus's own classes (the union label set has classes a corpus lacks)."
             + (" Brackets: interval over the corpus's test speakers." if intervals else "") + "\n",
             "| corpus | clips | speakers | WA | UA | macro F1 | classes |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for c, m in per_corpus.items():
        iv = (intervals or {}).get(c)
        if iv:
            cells = [fmt_interval(iv[k]) for k in ("wa", "ua", "f1")]
            n = f"{iv['speakers']}" + (" (unreliable)" if not iv["reliable"] else "")
        else:
            cells, n = [fmt(m["wa"]), fmt(m["ua"]), fmt(m["f1"])], "n/a"
        lines.append(f"| {c} | {m['clips']} | {n} | " + " | ".join(cells) + f" | {', '.join(m['classes'])} |")
    return lines
