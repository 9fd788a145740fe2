"""Cross-corpus reports: one training corpus tested on another, and the matrix of every pair.

``python -m wav2emo.crosscorpus.matrix RUN [RUN ...] [--out DIR]`` takes runs trained on different corpora
(run directories with ``fold_<k>`` folders, or sweep directories, each configuration one run) and writes
``cross_corpus_matrix.{json,md,png}``: UA with the rows the training corpus and the columns the test corpus.

* **Diagonal**: the run's own speaker folds (its cross-validation: mean ± std of test UA over folds).
* **Off-diagonal**: every fold model of the row's run tested on *all* clips of the column's corpus
  (``python -m wav2emo.eval ckpt_path=<run> data=<corpus>``, run here unless its report is already there),
  scored on the two corpora's shared emotions only: mean ± std of UA over the fold models.

The diagonal is over each corpus's full label set, the off-diagonal over the shared emotions, so a cell
compares with its diagonal only roughly (fewer classes make UA's chance level higher); each cell says which
classes it scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wav2emo.crosscorpus.pair_report import PAIR_REPORT
from wav2emo.reports.fold_results import jsonable
from wav2emo.reports.formatting import fmt_interval

log = logging.getLogger(__name__)

MATRIX = "cross_corpus_matrix"


# --- the matrix ----------------------------------------------------------------------------------------------


def _runs_of(path: Path) -> list[tuple[str, dict[int, Path]]]:
    """(name, fold dirs) of each run under ``path``: a run directory, or each configuration of a sweep."""
    from wav2emo.reports.aggregate import find_fold_results
    from wav2emo.reports.sweep import group_jobs

    confs = group_jobs(path)
    if confs:
        return [(c.name, c.fold_dirs) for c in confs if c.fold_dirs]
    dirs = find_fold_results(path)
    return [(path.name, dirs)] if dirs else []


def _run_config(dirs: dict[int, Path]) -> dict[str, Any]:
    for d in dirs.values():
        p = d / "config.yaml"
        if p.is_file():
            return yaml.safe_load(p.read_text()) or {}
    raise FileNotFoundError(f"no config.yaml in the fold directories {sorted(map(str, dirs.values()))}")


def _run_dir(dirs: dict[int, Path]) -> Path:
    parents = {d.parent for d in dirs.values()}
    return parents.pop() if len(parents) == 1 else next(iter(dirs.values())).parent


def cross_corpus_matrix(runs: Sequence[str | Path], out: str | Path, *, label_map: dict[str, Any] | None = None,
                        cache_dir: str | None = None, force: bool = False) -> dict[str, Any]:
    """The UA matrix of ``runs`` (one per training corpus), written to ``out`` (see the module docstring)."""
    runs_found = [run for path in runs for run in _runs_of(Path(path))]
    return matrix_of(runs_found, out, label_map=label_map, cache_dir=cache_dir, force=force,
                     what=f"runs {list(map(str, runs))}")


def matrix_of(runs: Sequence[tuple[str, dict[int, Path]]], out: str | Path, *, label_map: dict[str, Any] | None = None,
              cache_dir: str | None = None, force: bool = False, what: str = "runs") -> dict[str, Any]:
    """The matrix of ``runs`` given as (name, fold directories), one per training corpus."""
    from omegaconf import OmegaConf

    from wav2emo.crosscorpus.evaluate import corpus_label, cross_evaluate
    from wav2emo.errors import ConfigError
    from wav2emo.reports.aggregate import aggregate_fold_dirs

    out = Path(out)
    found: dict[str, dict[str, Any]] = {}
    for name, dirs in runs:
        cfg = _run_config(dirs)
        corpus = corpus_label(cfg["data"]["corpus"])
        if corpus in found:
            raise ConfigError(f"two runs trained on {corpus}: {found[corpus]['path']} ({found[corpus]['name']}) and "
                              f"{_run_dir(dirs)} ({name}); the matrix takes one run per training corpus")
        found[corpus] = {"dirs": dirs, "config": cfg, "path": _run_dir(dirs), "name": name}
    if len(found) < 2:
        raise ConfigError(f"{what} cover {len(found)} training corpus(es) {list(found)}; a cross-corpus matrix "
                          "needs runs on at least two corpora")
    corpora = list(found)
    cells = []
    for a in corpora:
        for b in corpora:
            if a == b:
                rep = aggregate_fold_dirs(out / "in_corpus" / a, found[a]["dirs"], write=False)
                ua = rep["summary"].get("ua", {})
                cells.append({"train": a, "test": b, "kind": "in-corpus (speaker folds)", "ua": ua.get("mean"),
                              "std": ua.get("std"), "n": len(rep["folds"]), "classes": rep.get("class_names"),
                              "ua_interval": (rep.get("intervals") or {}).get("ua"),
                              "report": str(found[a]["path"])})
                continue
            pair_dir = out / "pairs" / f"{a}__to__{b}"
            path = pair_dir / f"{PAIR_REPORT}.json"
            if path.is_file() and not force:
                pair = json.loads(path.read_text())
            else:
                cfg = OmegaConf.create({
                    "ckpt_path": str(found[a]["path"]),
                    "data": {"corpus": found[b]["config"]["data"]["corpus"]},
                    "paths": {"cache_dir": cache_dir or found[a]["config"]["paths"]["cache_dir"],
                              "output_dir": str(pair_dir)},
                    "label_map": label_map or {}, "accelerator": "auto", "precision": "32-true", "num_workers": 0,
                })
                pair = cross_evaluate(cfg, out=pair_dir)
            ua = pair["summary"]["ua"]
            cells.append({"train": a, "test": b, "kind": "cross-corpus (all clips, shared emotions)",
                          "ua": ua["mean"], "std": ua["std"], "n": len(pair["models"]),
                          "classes": pair["class_names"], "ua_interval": (pair.get("intervals") or {}).get("ua"),
                          "report": str(pair_dir)})
    matrix = {"corpora": corpora, "runs": {c: str(v["path"]) for c, v in found.items()},
              "ua": [[next(x["ua"] for x in cells if x["train"] == a and x["test"] == b) for b in corpora]
                     for a in corpora],
              "cells": cells}
    write_matrix(out, matrix)
    return matrix


CORPUS_KEYS = ("data", "folds")  # overrides that may differ between the rows of one matrix


def sweep_matrices(sweep_dir: str | Path, *, label_map: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """A matrix per group of a sweep's configurations that differ only in the corpus (``data``, ``data.*``) and its
    folds, written to ``<sweep>/cross_corpus`` (or ``<sweep>/cross_corpus/<group>`` for several groups)."""
    from wav2emo.reports.sweep import _safe, group_jobs

    sweep_dir = Path(sweep_dir)
    groups: dict[tuple, list] = {}
    for c in group_jobs(sweep_dir):
        key = tuple(sorted((k, v) for k, v in c.overrides.items() if k.split(".")[0] not in CORPUS_KEYS))
        if c.fold_dirs:
            groups.setdefault(key, []).append((c.name, c.fold_dirs))
    out = {}
    for key, runs in groups.items():
        name = _safe(",".join(f"{k}={v}" for k, v in key)) or "default"
        where = sweep_dir / "cross_corpus" / (name if len(groups) > 1 else "")
        out[name] = matrix_of(runs, where, label_map=label_map, what=f"sweep {sweep_dir} ({name})")
    return out


def render_matrix(matrix: dict[str, Any]) -> str:
    from wav2emo.reports.formatting import fmt

    corpora = matrix["corpora"]
    cell = {(c["train"], c["test"]): c for c in matrix["cells"]}
    lines = ["# Cross-corpus matrix of UA (macro recall)\n",
             "Rows: training corpus; columns: test corpus. Diagonal: the run's own speaker folds (mean ± std over "
             "folds, the corpus's full label set). Off-diagonal: every fold model tested on all clips of the other "
             "corpus, scored on the shared emotions only (mean ± std over fold models); fewer classes raise UA's "
             "chance level, so compare a cell with its diagonal with care.\n",
             "| train \\ test | " + " | ".join(corpora) + " |", "| --- " * (len(corpora) + 1) + "|"]
    for a in corpora:
        row = [f"{fmt(cell[a, b]['ua'], 3)} ± {fmt(cell[a, b]['std'], 3)}" + (" *" if a == b else "") for b in corpora]
        lines.append(f"| **{a}** | " + " | ".join(row) + " |")
    lines += ["\n\\* in-corpus (speaker folds)\n",
              "| train | test | scored classes | models/folds | pooled UA [interval over test speakers] | report |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in matrix["cells"]:
        lines.append(f"| {c['train']} | {c['test']} | {', '.join(c['classes'] or [])} | {c['n']} | "
                     f"{fmt_interval(c.get('ua_interval'))} | `{c['report']}` |")
    return "\n".join(lines)


def plot_matrix(matrix: dict[str, Any], path: Path) -> Path:
    from wav2emo.reports.plots import plt

    corpora = matrix["corpora"]
    ua = np.array([[np.nan if v is None else v for v in row] for row in matrix["ua"]], dtype=float)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(corpora), 1.2 + 1.1 * len(corpora)))
    im = ax.imshow(ua, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(corpora)), corpora, rotation=30, ha="right")
    ax.set_yticks(range(len(corpora)), corpora)
    for i in range(len(corpora)):
        for j in range(len(corpora)):
            if np.isfinite(ua[i, j]):
                ax.text(j, i, f"{ua[i, j]:.3f}" + ("*" if i == j else ""), ha="center", va="center",
                        color="white" if ua[i, j] < 0.6 else "black", fontsize=9)
    ax.set_xlabel("test corpus")
    ax.set_ylabel("training corpus")
    ax.set_title("UA (* = in-corpus speaker folds)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_matrix(out: Path, matrix: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{MATRIX}.json").write_text(json.dumps(jsonable(matrix), indent=2) + "\n")
    (out / f"{MATRIX}.md").write_text(render_matrix(matrix) + "\n")
    plot_matrix(matrix, out / f"{MATRIX}.png")
    print("\n" + render_matrix(matrix) + f"\n\nMatrix files: {out}/{MATRIX}.{{json,md,png}}\n", flush=True)


def _parse_map(items: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"wav2emo.crosscorpus.matrix: error: --label-map {item!r}; expected CLASS=CLASS or CLASS=null")
        out[key] = None if value in ("null", "none", "") else value
    return out


def main(argv: Sequence[str] | None = None) -> int:
    from wav2emo.cli import user_errors

    p = argparse.ArgumentParser(prog="python -m wav2emo.crosscorpus.matrix", description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="run or sweep directories, one training corpus each")
    p.add_argument("--out", default="cross_corpus", help="folder of the matrix and the pair reports")
    p.add_argument("--label-map", nargs="*", default=[], help="class renames for every pair, e.g. calm=neutral")
    p.add_argument("--cache-dir", default=None, help="feature cache (default: each run's own paths.cache_dir)")
    p.add_argument("--force", action="store_true", help="evaluate pairs again even where their report exists")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    with user_errors("wav2emo.crosscorpus.matrix"):
        cross_corpus_matrix(args.runs, args.out, label_map=_parse_map(args.label_map), cache_dir=args.cache_dir,
                            force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
