"""The layer analysis report: per-layer UA of a single-layer head over the folds, the layer-weighted head's UA
and its learned layer weights beside it (layers.json, layers.md, layers.png).  Written by
:mod:`wav2emo.layers`."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def layer_report(
    layer_uas: Mapping[int, Sequence[float]], names: Mapping[int, str], weighted_uas: Sequence[float],
    weights: Sequence[Sequence[float]], folds: Sequence[int], setting: Mapping[str, Any],
) -> dict[str, Any]:
    """The numbers: per stored hidden state the single-layer head's test UA per fold (mean, std), the
    layer-weighted head's UA, and its normalised layer weights (mean over folds, aligned with the layers)."""
    w = np.asarray(weights, dtype=float)
    rows = []
    for j, (layer, uas) in enumerate(sorted(layer_uas.items())):
        rows.append({"layer": int(layer), "name": names.get(layer, str(layer)), "ua_mean": float(np.mean(uas)),
                     "ua_std": float(np.std(uas)), "ua_per_fold": [float(u) for u in uas],
                     "weight_mean": float(w[:, j].mean()) if w.size else None})
    best = max(rows, key=lambda r: r["ua_mean"]) if rows else None
    return {"setting": dict(setting), "folds": list(folds), "layers": rows,
            "layer_weighted": {"ua_mean": float(np.mean(weighted_uas)), "ua_std": float(np.std(weighted_uas)),
                               "ua_per_fold": [float(u) for u in weighted_uas]},
            "best_layer": None if best is None else {"layer": best["layer"], "ua_mean": best["ua_mean"]}}


def render_markdown(report: Mapping[str, Any]) -> str:
    s = report["setting"]
    lw = report["layer_weighted"]
    lines = [f"# Layer analysis: {s.get('backbone')} on {s.get('data')}", "",
             f"Single-layer head `{s.get('head')}` on each hidden state, and `layer_weighted` on all of them; test UA "
             f"over folds {report['folds']} (mean +- std). Layer weights: the layer-weighted head's learned "
             "|w|/sum|w|, mean over folds.", "",
             "| hidden state | name | UA mean | UA std | layer weight |", "| ---: | --- | ---: | ---: | ---: |"]
    for r in report["layers"]:
        weight = "" if r["weight_mean"] is None else f"{r['weight_mean']:.3f}"
        lines.append(f"| {r['layer']} | {r['name']} | {r['ua_mean']:.4f} | {r['ua_std']:.4f} | {weight} |")
    lines += ["", f"layer_weighted (all states): UA {lw['ua_mean']:.4f} +- {lw['ua_std']:.4f}"]
    if report["best_layer"]:
        lines.append(f"best single layer: {report['best_layer']['layer']} (UA {report['best_layer']['ua_mean']:.4f})")
    return "\n".join(lines) + "\n"


def plot_layers(report: Mapping[str, Any], path: Path) -> Path:
    """Per-layer UA (mean +- std) with the layer-weighted head's UA as a line, learned weights as bars beside."""
    from wav2emo.reports.plots import plt

    rows = report["layers"]
    x = [r["layer"] for r in rows]
    fig, (ax, axw) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax.errorbar(x, [r["ua_mean"] for r in rows], yerr=[r["ua_std"] for r in rows], marker="o", capsize=3,
                label=f"single layer ({report['setting'].get('head')})")
    ax.axhline(report["layer_weighted"]["ua_mean"], color="C1", linestyle="--", label="layer_weighted (all)")
    ax.set_xlabel("hidden state (0 = encoder input)")
    ax.set_ylabel("test UA (mean over folds)")
    ax.set_title(str(report["setting"].get("backbone")))
    ax.legend(loc="best")
    axw.bar(x, [r["weight_mean"] or 0.0 for r in rows], color="C1")
    axw.set_xlabel("hidden state")
    axw.set_ylabel("learned layer weight")
    axw.set_title("layer_weighted's weights")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_layer_report(report: Mapping[str, Any], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "layers.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "layers.md").write_text(render_markdown(report))
    return [out / "layers.json", out / "layers.md", plot_layers(report, out / "layers.png")]
