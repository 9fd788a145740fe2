"""What a corpus holds, before any extraction: clips, speakers, classes, the speaker x emotion table, durations,
sample rates, channels, the release defects handled and the files set aside (``python -m wav2emo.corpus``).

:func:`survey` is a plain dict (``--json``); :func:`survey_lines` the text a person reads.  Speakers who
carry one or two emotions are named with a warning: per-speaker normalisation then erases the emotion itself,
and a dev set of two such speakers scores on one or two classes (see ``folds.dev`` in conf/folds).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import Any

from .manifest import Manifest

NARROW = 2  # a speaker with this many emotions or fewer is flagged


def survey(manifest: Manifest, folds: Any = None) -> dict[str, Any]:
    """The corpus's facts as a JSON-ready dict (``folds``: its usual folds, built, to name their protocol)."""
    classes = list(manifest.class_names)
    table: dict[str, dict[str, int]] = {}
    names = {c.actor: (c.speaker or str(c.actor)) for c in manifest}
    for c in manifest:
        row = table.setdefault(names[c.actor], dict.fromkeys(classes, 0))
        if c.labelled:
            row[classes[c.label]] += 1
    narrow = {s: [e for e, n in row.items() if n] for s, row in table.items()
              if sum(1 for n in row.values() if n) <= NARROW}
    durations = [c.duration for c in manifest]
    report = manifest.report
    out: dict[str, Any] = {
        "corpus": manifest.name,
        "clips": len(manifest),
        "speakers": len(table),
        "classes": classes,
        "class_counts": manifest.class_counts(),
        "genders": dict(Counter(manifest.genders().values())),
        "speaker_emotion_table": table,
        "narrow_speakers": narrow,
        "durations_s": {"min": min(durations), "mean": sum(durations) / len(durations), "max": max(durations),
                        "total": sum(durations)} if durations else {},
        "sample_rates": dict(sorted(Counter(c.sample_rate for c in manifest).items())),
        "channels": dict(sorted(Counter(c.channels for c in manifest).items())),
        "defects_handled": list(getattr(report, "defects", []) or []),
        "set_aside": list(getattr(report, "set_aside", []) or []),
        "skipped": list(getattr(report, "skipped", []) or []),
        "warnings": list(getattr(report, "warnings", []) or []),
        "notes": list(getattr(report, "notes", []) or []),
    }
    if folds is not None:
        out["usual_folds"] = {"folds": folds.num_folds, "protocol": folds.protocol}
    return out


def _table_lines(table: Mapping[str, Mapping[str, int]], classes: list[str]) -> list[str]:
    width = max([len("speaker"), *(len(s) for s in table)])
    cols = [c[:8] for c in classes]
    lines = [f"  {'speaker':<{width}}  " + "  ".join(f"{c:>8}" for c in cols)]
    for speaker, row in table.items():
        lines.append(f"  {speaker:<{width}}  " + "  ".join(f"{row[c]:>8}" for c in classes))
    return lines


def survey_lines(s: Mapping[str, Any]) -> list[str]:
    """The survey as text."""
    lines = [f"corpus {s['corpus']}: {s['clips']} clips, {s['speakers']} speakers "
             f"({', '.join(f'{n} {g}' for g, n in s['genders'].items())}), {len(s['classes'])} classes"]
    lines.append("classes: " + ", ".join(f"{c} {n}" for c, n in s["class_counts"].items()))
    d = s["durations_s"]
    if d:
        lines.append(f"durations: {d['min']:.2f} .. {d['max']:.2f} s, mean {d['mean']:.2f} s, "
                     f"{d['total'] / 3600:.2f} h in all")
    lines.append("sample rates: " + ", ".join(f"{r} Hz x {n}" for r, n in s["sample_rates"].items())
                 + "; channels: " + ", ".join(f"{c} x {n}" for c, n in s["channels"].items()))
    if "usual_folds" in s:
        lines.append(f"usual folds (folds=default): {s['usual_folds']['folds']}: {s['usual_folds']['protocol']}")
    lines.append("speaker x emotion (clips):")
    lines += _table_lines(s["speaker_emotion_table"], s["classes"])
    if s["narrow_speakers"]:
        lines.append(f"WARNING: {len(s['narrow_speakers'])} of {s['speakers']} speakers carry {NARROW} emotions or "
                     "fewer: per-speaker normalisation there erases the emotion, and a dev set of two such speakers "
                     "scores one or two classes (use folds.dev=covering or the grouped inner CV): "
                     + "; ".join(f"{k} ({', '.join(v) or 'none'})" for k, v in list(s["narrow_speakers"].items())[:20]))
    for d in s["defects_handled"]:
        lines.append(f"known defect handled: {d['file']}: {d['problem']} -> {d['action']}")
    for a in s["set_aside"]:
        lines.append(f"set aside: {a['problem']}: {a['what']}")
    for k in s["skipped"]:
        lines.append(f"skipped (on_silent=skip): {k['path']}: {k['reason']}")
    lines += [f"note: {n}" for n in s["notes"]]
    return lines
