"""Writing predictions as they come: CSV rows (one per window and one per file) and an optional JSON document.

CSV columns: ``file, segment, start, end, label, prob_<class>..., error``.  ``segment`` is ``window`` for a
window's row and ``file`` for the file's row (the mean of its windows' probabilities, from 0 to its end); a file
that failed has one ``file`` row with empty ``label`` and probabilities and its reason in ``error``.  Both
writers stream: nothing grows with the number of files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from wav2emo.data.audio import TARGET_SAMPLE_RATE
from wav2emo.inference.results import FileResult

SR = TARGET_SAMPLE_RATE


def _seconds(samples: int) -> float:
    return round(samples / SR, 4)


def _probs(probs: np.ndarray | None, class_names: Sequence[str]) -> dict[str, float | None]:
    return {c: (None if probs is None else float(probs[i])) for i, c in enumerate(class_names)}


def _label(probs: np.ndarray | None, class_names: Sequence[str]) -> str | None:
    return None if probs is None else class_names[int(np.argmax(probs))]


class CsvWriter:
    """Rows of :class:`FileResult` s to an open text stream, header first."""

    def __init__(self, stream: IO[str], class_names: Sequence[str], *, window_rows: bool = True) -> None:
        self.class_names, self.window_rows = list(class_names), window_rows
        self.columns = ["file", "segment", "start", "end", "label", *(f"prob_{c}" for c in class_names), "error"]
        self.writer = csv.writer(stream, lineterminator="\n")
        self.writer.writerow(self.columns)
        self.stream = stream

    def _row(self, result: FileResult, segment: str, start: int, end: int, probs: np.ndarray | None) -> list[Any]:
        cells = ["" if p is None else repr(p) for p in _probs(probs, self.class_names).values()]
        label = _label(probs, self.class_names) or ""
        return [str(result.path), segment, _seconds(start), _seconds(end), label, *cells, result.error or ""]

    def write(self, result: FileResult) -> None:
        if self.window_rows and result.error is None:
            for w, p in zip(result.windows, result.probs, strict=True):
                self.writer.writerow(self._row(result, "window", w.start, w.end, p))
        self.writer.writerow(self._row(result, "file", 0, result.num_samples, result.mean))
        self.stream.flush()


def file_object(result: FileResult, class_names: Sequence[str], *, window_rows: bool = True) -> dict[str, Any]:
    """One file as a JSON-able object: its label and probabilities (mean over windows), windows, error."""
    mean = result.mean
    out: dict[str, Any] = {
        "file": str(result.path),
        "duration_s": _seconds(result.num_samples) if result.num_samples else None,
        "label": _label(mean, class_names),
        "probabilities": None if mean is None else _probs(mean, class_names),
        "error": result.error,
    }
    if window_rows:
        out["windows"] = [] if result.error is not None else [
            {"start": _seconds(w.start), "end": _seconds(w.end), "label": _label(p, class_names),
             "probabilities": _probs(p, class_names)}
            for w, p in zip(result.windows, result.probs, strict=True)
        ]
    return out


class JsonWriter:
    """A JSON document ``{"classes": [...], "files": [...]}`` written one file object at a time."""

    def __init__(self, stream: IO[str], class_names: Sequence[str], meta: dict[str, Any], *,
                 window_rows: bool = True) -> None:
        self.stream, self.class_names, self.window_rows = stream, list(class_names), window_rows
        head = json.dumps({"classes": self.class_names, **meta}, indent=2)
        self.stream.write(head[:-2] + ',\n  "files": [')  # the object stays open for the files
        self.first = True

    def write(self, result: FileResult) -> None:
        obj = file_object(result, self.class_names, window_rows=self.window_rows)
        text = json.dumps(obj, allow_nan=False)
        self.stream.write(("\n    " if self.first else ",\n    ") + text)
        self.first = False

    def close(self) -> None:
        self.stream.write("\n  ]\n}\n")
        self.stream.flush()

