"""Is a difference between configurations real? Intervals per configuration and paired tests per pair.

For every configuration: UA, WA and macro F1 on its pooled test predictions with a speaker-bootstrap interval
(:mod:`wav2emo.reports.intervals`) and, for repeats (``seed=0,1,2``), the spread over seeds. For every pair
scored on the same clips (same label set, same clips in the same folds, same labels): the difference with its
paired speaker-bootstrap interval, a paired permutation test over speakers, McNemar's test as a second opinion
(:mod:`wav2emo.reports.paired`), Holm's adjustment when more than two configurations are compared, and a
one-line verdict. A pair on different clips, folds, corpora or label sets is refused with what differs.
Written as the statistics section of ``comparison.{json,md,png}``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from wav2emo.reports.fold_results import FOLD_RESULT, FoldResultError, read_fold_result, read_predictions
from wav2emo.reports.formatting import fmt_interval, fmt_p
from wav2emo.reports.intervals import (
    METRICS,
    BootstrapSettings,
    scores_of_confusions,
    seed_spread,
    speaker_confusions,
    speaker_intervals,
)
from wav2emo.reports.paired import holm, mcnemar, paired_difference
from wav2emo.reports.speakers import SPEAKER_COLUMN, check_test_speakers, with_speakers

log = logging.getLogger(__name__)

KEY = ["fold", "clip_id"]  # one scored prediction; a clip may be scored by several fold models (cross-corpus)


@dataclass
class RunPredictions:
    """One configuration's test predictions: every repeat (seed) and fold, with each clip's speaker."""

    name: str
    class_names: list[str]
    frame: pd.DataFrame  # repeat, fold, clip_id, actor, label, pred

    @property
    def repeats(self) -> list[str]:
        return list(dict.fromkeys(self.frame["repeat"].tolist()))


def load_run(name: str, repeats: Mapping[str, Mapping[int, Path]], result_file: str = FOLD_RESULT) -> RunPredictions:
    """Read every fold's predictions of every repeat; refuse folds without test clips or speakers, repeats on
    different clips and folds of different label sets, naming the file. ``result_file``: the JSON beside each
    ``predictions.csv`` (a cross-corpus evaluation writes ``eval_result.json``)."""
    frames, class_names, first_keys = [], None, None
    for rep, dirs in repeats.items():
        rep_frames = []
        for fold, d in sorted(dirs.items()):
            result = read_fold_result(d, filename=result_file)
            if "test" not in result:
                continue
            if class_names is None:
                class_names = list(result["class_names"])
            elif list(result["class_names"]) != class_names:
                raise FoldResultError(f"{d}: class_names {result['class_names']} differ from {class_names} of the "
                                      f"other folds of {name}")
            preds = read_predictions(d)
            check_test_speakers(preds, Path(d) / "predictions.csv")
            preds = with_speakers(preds, result, Path(d) / "predictions.csv")
            rep_frames.append(preds.assign(fold=int(fold), repeat=str(rep))[["repeat", *KEY, SPEAKER_COLUMN,
                                                                             "label", "pred"]])
        if not rep_frames:
            continue
        df = pd.concat(rep_frames, ignore_index=True)
        keys = set(map(tuple, df[KEY].to_numpy().tolist()))
        if first_keys is None:
            first_keys = keys
        elif keys != first_keys:
            raise FoldResultError(f"{name}: repeat {rep} scored {len(keys)} clips, the first repeat {len(first_keys)}; "
                                  "repeats of one configuration must test the same clips in the same folds")
        frames.append(df)
    if not frames:
        raise FoldResultError(f"{name}: no tested fold with predictions")
    return RunPredictions(name=name, class_names=class_names, frame=pd.concat(frames, ignore_index=True))


def what_differs(a: RunPredictions, b: RunPredictions) -> str | None:
    """Why ``a`` and ``b`` cannot be compared clip for clip (one line), or None when they can."""
    if a.class_names != b.class_names:
        return f"label sets differ: {a.name} scores {a.class_names}, {b.name} scores {b.class_names}"
    fa, fb = (r.frame[r.frame["repeat"] == r.repeats[0]] for r in (a, b))
    clips_a, clips_b = set(fa["clip_id"]), set(fb["clip_id"])
    if not clips_a & clips_b:
        return f"no clip in common ({len(clips_a)} vs {len(clips_b)} clips): different corpora or test sets"
    if clips_a != clips_b:
        only_a, only_b = sorted(clips_a - clips_b), sorted(clips_b - clips_a)
        return (f"clip sets differ: {len(only_a)} clip(s) only in {a.name}{' (e.g. ' + only_a[0] + ')' if only_a else ''}"
                f", {len(only_b)} only in {b.name}{' (e.g. ' + only_b[0] + ')' if only_b else ''}")
    ka, kb = set(map(tuple, fa[KEY].to_numpy().tolist())), set(map(tuple, fb[KEY].to_numpy().tolist()))
    if ka != kb:
        fold_a = dict(zip(fa["clip_id"], fa["fold"], strict=False))
        fold_b = dict(zip(fb["clip_id"], fb["fold"], strict=False))
        moved = sorted(c for c in clips_a if fold_a[c] != fold_b.get(c))
        example = f" (e.g. {moved[0]}: fold {fold_a[moved[0]]} vs {fold_b[moved[0]]})" if moved else ""
        return f"folds differ: {len(moved) or len(ka ^ kb)} clip(s) tested in other folds{example}"
    la = fa.drop_duplicates("clip_id").set_index("clip_id")["label"]
    lb = fb.drop_duplicates("clip_id").set_index("clip_id")["label"].reindex(la.index)
    if (la != lb).any():
        return f"labels differ for {int((la != lb).sum())} clip(s) (e.g. {la.index[(la != lb).to_numpy()][0]})"
    sa = fa.drop_duplicates("clip_id").set_index("clip_id")[SPEAKER_COLUMN]
    sb = fb.drop_duplicates("clip_id").set_index("clip_id")[SPEAKER_COLUMN].reindex(sa.index)
    if (sa.astype(str) != sb.astype(str)).any():
        return "speaker ids differ for the same clips"
    return None


def _confusions(run: RunPredictions, speakers: list) -> np.ndarray:
    ids, cms = speaker_confusions(run.frame[SPEAKER_COLUMN].astype(str), run.frame["label"], run.frame["pred"],
                                  len(run.class_names))
    pos = {s: i for i, s in enumerate(ids)}
    return cms[[pos[s] for s in speakers]]


def _pooled(run: RunPredictions, frame: pd.DataFrame | None = None) -> dict[str, float]:
    frame = run.frame if frame is None else frame
    _, cms = speaker_confusions(frame[SPEAKER_COLUMN].astype(str), frame["label"], frame["pred"], len(run.class_names))
    s = scores_of_confusions(cms.sum(0))
    return {m: float(s[m]) for m in METRICS}


def configuration_stats(run: RunPredictions, settings: BootstrapSettings) -> dict[str, Any]:
    """Pooled metrics with their speaker intervals (all repeats pooled) and the spread over repeats."""
    f = run.frame
    out: dict[str, Any] = {"name": run.name, "repeats": run.repeats, "clips": int(f["clip_id"].nunique()),
                           "intervals": speaker_intervals(f[SPEAKER_COLUMN].astype(str), f["label"], f["pred"],
                                                          run.class_names, settings)}
    if len(run.repeats) > 1:
        per = [_pooled(run, f[f["repeat"] == r]) for r in run.repeats]
        out["seed_spread"] = {m: seed_spread([p[m] for p in per]) for m in METRICS}
    return out


def compare_pair(a: RunPredictions, b: RunPredictions, settings: BootstrapSettings) -> dict[str, Any]:
    """A - B with intervals and p-values; A and B must have passed :func:`what_differs`."""
    speakers = sorted(set(a.frame[SPEAKER_COLUMN].astype(str)))
    out: dict[str, Any] = {"a": a.name, "b": b.name,
                           **paired_difference(_confusions(a, speakers), _confusions(b, speakers), settings)}
    if len(a.repeats) == 1 and len(b.repeats) == 1:
        m = a.frame.merge(b.frame, on=KEY, suffixes=("_a", "_b"))
        out["mcnemar"] = mcnemar(m["pred_a"] == m["label_a"], m["pred_b"] == m["label_b"])
    return out


def compare_runs(runs: Sequence[RunPredictions], settings: BootstrapSettings | None = None,
                 alpha: float | None = None) -> dict[str, Any]:
    """Every configuration's intervals and every comparable pair's paired statistics, Holm-adjusted."""
    settings = settings or BootstrapSettings()
    alpha = 1 - settings.confidence if alpha is None else alpha
    configs = [configuration_stats(r, settings) for r in runs]
    ua = {c["name"]: c["intervals"]["ua"]["estimate"] or 0.0 for c in configs}
    pairs, refused = [], []
    for i, x in enumerate(runs):
        for y in runs[i + 1:]:
            a, b = (x, y) if ua[x.name] >= ua[y.name] else (y, x)  # the better-looking one first: differences >= 0
            reason = what_differs(a, b)
            if reason:
                refused.append({"a": a.name, "b": b.name, "reason": reason})
                continue
            pairs.append(compare_pair(a, b, settings))
    adjust = len(runs) > 2
    for m in METRICS:
        adjusted = holm([p[m]["p"] for p in pairs]) if adjust else [p[m]["p"] for p in pairs]
        for p, q in zip(pairs, adjusted, strict=True):
            if adjust:
                p[m]["p_holm"] = q
            p[m]["p_used"] = q
    for p in pairs:
        p["verdict"] = verdict(p, alpha, adjusted=adjust)
    return {"settings": settings.describe(), "alpha": alpha, "holm": adjust,
            "how_to_read": HOW_TO_READ, "configurations": configs, "pairs": pairs, "refused": refused}


def configuration_statistics(confs: Sequence[Any], settings: BootstrapSettings) -> dict[str, Any]:
    """Intervals and paired tests of configurations (``name``, ``repeats``: seed -> fold -> directory) whose
    predictions can be read; the others are listed with why not."""
    runs, unusable = [], []
    for c in confs:
        try:
            runs.append(load_run(c.name, c.repeats))
        except FoldResultError as e:
            unusable.append({"name": c.name, "reason": str(e)})
    stats = compare_runs(runs, settings)
    stats["unusable"] = unusable
    return stats


HOW_TO_READ = (
    "Intervals are over test speakers: each bootstrap resample draws speakers with replacement, with all their "
    "clips, and recomputes the metric on the pooled predictions, so they show how much a figure could move with "
    "other speakers of the same kind. A difference is A - B on the same clips; its interval comes from the same "
    "resamples for both configurations (paired), and its p-value from a paired permutation test over speakers "
    "(each speaker's predictions of A and B swapped as a block). With more than two configurations the p-values "
    "are Holm-adjusted over all pairs. 'no significant difference' means the data cannot tell the two apart at "
    "this level, not that they are equal. The intervals of differences are not adjusted for the number of pairs: "
    "with several pairs the verdict follows the Holm-adjusted p-value, and with few speakers (EmoDB's 10) a "
    "percentile interval tends to be narrower than its level promises, so read an interval that barely excludes "
    "0 with a large p as inconclusive. With 5 speakers the exact permutation test cannot go below p = 0.0625. "
    "Seeds are repeats of "
    "one configuration: their predictions are pooled per speaker, and the spread over seeds is given beside the "
    "interval over speakers.")


def verdict(pair: Mapping[str, Any], alpha: float, adjusted: bool) -> str:
    """``a - b: +0.031 UA [-0.012, +0.074], p = 0.16: no significant difference``."""
    d = pair["ua"]
    p = d["p_used"]
    label = "Holm-adjusted " if adjusted else ""
    if p is not None and p < alpha:
        what = f"{pair['a']} is better (significant at {alpha:g})"
    else:
        what = "no significant difference"
    return f"{pair['a']} - {pair['b']}: {fmt_interval(d, signed=True)} UA, {label}{fmt_p(p)}: {what}"


def render_statistics(stats: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the statistics section of ``comparison.md``."""
    lines = ["\n## Intervals over speakers (pooled test predictions)\n",
             "| configuration | repeats | speakers | clips | UA | WA | macro F1 | UA over seeds (mean ± std) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in stats["configurations"]:
        iv, sp = c["intervals"], c.get("seed_spread")
        seeds = f"{sp['ua']['mean']:.3f} ± {sp['ua']['std']:.3f} ({sp['ua']['repeats']} seeds)" if sp else "one run"
        flag = " (unreliable: < 5 speakers)" if not iv["reliable"] else ""
        lines.append(f"| {c['name']} | {len(c['repeats'])} | {iv['speakers']}{flag} | {c['clips']} | "
                     f"{fmt_interval(iv['ua'])} | {fmt_interval(iv['wa'])} | {fmt_interval(iv['f1'])} | {seeds} |")
    if stats["configurations"]:
        lines.append(f"\nMethod: {stats['configurations'][0]['intervals']['method']}.")
    if stats["pairs"]:
        pcol = "p (Holm)" if stats["holm"] else "p"
        lines += ["\n## Paired differences (A - B on the same clips)\n",
                  f"| A - B | ΔUA | {pcol} | ΔWA | {pcol} | Δ macro F1 | {pcol} | McNemar p (clips) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in stats["pairs"]:
            mc = fmt_p(p["mcnemar"]["p"]).removeprefix("p = ") if "mcnemar" in p else "n/a (repeats)"
            cells = " | ".join(f"{fmt_interval(p[m], signed=True)} | {fmt_p(p[m]['p_used']).removeprefix('p = ')}"
                               for m in METRICS)
            lines.append(f"| {p['a']} - {p['b']} | {cells} | {mc} |")
        lines += [f"\nTest: {stats['pairs'][0]['test']}; interval: {stats['pairs'][0]['interval_method']}"
                  + ("; p-values Holm-adjusted over all pairs." if stats["holm"] else "."),
                  "\n### Verdicts\n", *[f"- {p['verdict']}" for p in stats["pairs"]]]
    for r in stats["refused"]:
        lines.append(f"\n**Not compared: {r['a']} vs {r['b']}: {r['reason']}.**")
    lines += ["\n### How to read this\n", stats["how_to_read"]]
    return lines


def plot_intervals(stats: Mapping[str, Any], path: Path) -> Path:
    """Each configuration's UA with its speaker-bootstrap interval (and the seeds' values as small dots)."""
    from wav2emo.reports.plots import save_ua_rows, ua_rows_figure

    confs = stats["configurations"]
    y = np.arange(len(confs))
    est = np.array([c["intervals"]["ua"]["estimate"] or np.nan for c in confs], dtype=float)
    low = np.array([c["intervals"]["ua"]["low"] or np.nan for c in confs], dtype=float)
    high = np.array([c["intervals"]["ua"]["high"] or np.nan for c in confs], dtype=float)
    fig, ax = ua_rows_figure(len(confs))
    ax.errorbar(est, y, xerr=np.nan_to_num(np.vstack([est - low, high - est])), fmt="o", color="tab:blue",
                capsize=4, label=f"UA, {stats['settings']['confidence']:.0%} interval over speakers")
    labelled = False
    for i, c in enumerate(confs):
        if c.get("seed_spread"):
            vals = c["seed_spread"]["ua"]["values"]
            ax.plot(vals, [i + 0.15] * len(vals), ".", color="tab:orange", label=None if labelled else "UA of each seed")
            labelled = True
    return save_ua_rows(fig, ax, [c["name"] for c in confs], "UA (macro recall) on pooled test predictions", path)
