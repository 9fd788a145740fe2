"""How numbers look in every report's Markdown: a metric, a metric with its interval, a signed difference."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 4) -> str:
    """A metric for a table; a missing one (None, NaN) shows as ``n/a`` instead of breaking the report."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def fmt_interval(iv: Mapping[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    """``0.612 [0.551, 0.668]`` (``signed``: ``+0.031 [-0.012, +0.074]``); ``n/a`` when there is none."""
    if not iv or iv.get("estimate") is None:
        return "n/a"
    spec = f"+.{digits}f" if signed else f".{digits}f"
    if iv.get("low") is None or iv.get("high") is None:
        return f"{iv['estimate']:{spec}} [n/a]"
    return f"{iv['estimate']:{spec}} [{iv['low']:{spec}}, {iv['high']:{spec}}]"


def fmt_p(p: float | None) -> str:
    """A p-value as a reader expects it: ``p = 0.16``, ``p = 0.049``, ``p = 0.003``, ``p < 0.001``.

    Below 0.1 three decimals, so a value just under (or over) 0.05 never reads as ``p = 0.05``.
    """
    if p is None or (isinstance(p, float) and np.isnan(p)):
        return "p = n/a"
    if p < 0.001:
        return "p < 0.001"
    return f"p = {p:.3f}" if p < 0.1 else f"p = {p:.2f}"


def interval_lines(intervals: Mapping[str, Any] | None, title: str) -> list[str]:
    """Markdown lines of a speaker-bootstrap section (``## 95 % <title>``): UA/WA/F1 and per-class recall."""
    if not intervals:
        return []
    if intervals.get("unavailable"):
        return [f"\n## Confidence {title}\n", f"Not computed: {intervals['unavailable']}"]
    level = f"{100 * float(intervals.get('settings', {}).get('confidence', 0.95)):g} %"
    lines = [f"\n## {level} {title}\n",
             f"UA {fmt_interval(intervals['ua'])} · WA {fmt_interval(intervals['wa'])} · "
             f"macro F1 {fmt_interval(intervals['f1'])}\n",
             f"Method: {intervals['method']}; {intervals['speakers']} speakers, {intervals['clips']} predictions."]
    if intervals.get("note"):
        lines.append(f"\n**Unreliable: {intervals['note']}.**")
    if intervals.get("per_class_recall"):
        lines += ["\n| class | recall [interval] |", "| --- | --- |"]
        lines += [f"| {c} | {fmt_interval(v)} |" for c, v in intervals["per_class_recall"].items()]
    return lines
