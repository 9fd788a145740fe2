"""Cross-corpus reports: one training corpus tested on another, and the matrix of every pair.

``python -m wav2emo.crosscorpus.matrix RUN [RUN ...] [--out DIR]`` takes runs trained on different corpora
(run directories with ``fold_<k>`` folders, or sweep directories, each configuration one run) and writes
``cross_corpus_matrix.{json,md,png}``: UA with the rows the training corpus and the columns the test corpus.

* **Diagonal**: the run's own speaker folds (its cross-validation: mean ± std of test UA over folds).
* **Off-diagonal**: every fold model of the row's run tested on *all* clips of the column's corpus
  (``python -m wav2emo.eval ckpt_path=<run> data=<corpus>``, run here unless its report is already there),
  scored on the two corpora's shared emotions only: mean ± std of UA over the fold models.
* **Seeds**: a run swept over seeds (``seed=0,1,2``) gives cells over all its seeds (every seed's fold models
  tested, :mod:`wav2emo.crosscorpus.seed_reports`): the mean over seeds (each fold's UA averaged over the seeds,
  mean ± std over folds), the number of seeds and the spread over seeds of :mod:`wav2emo.reports.seeds`.

The diagonal is over each corpus's full label set, the off-diagonal over the shared emotions, so a cell
compares with its diagonal only roughly (fewer classes make UA's chance level higher); each cell says which
classes it scored.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wav2emo.crosscorpus.pair_report import PAIR_REPORT
from wav2emo.crosscorpus.seed_reports import KIND as SEEDS_KIND
from wav2emo.crosscorpus.trained_models import Repeats
from wav2emo.reports.fold_results import jsonable
from wav2emo.reports.formatting import fmt_interval

log = logging.getLogger(__name__)

MATRIX = "cross_corpus_matrix"


# --- the matrix ----------------------------------------------------------------------------------------------


def _runs_of(path: Path) -> list[tuple[str, Repeats]]:
    """(name, seed -> fold dirs) of each run under ``path``: a run directory, or each configuration of a sweep."""
    from wav2emo.reports.aggregate import find_fold_results
    from wav2emo.reports.sweep import group_jobs

    confs = group_jobs(path)
    if confs:
        return [(c.name, c.repeats) for c in confs if c.fold_dirs]
    dirs = find_fold_results(path)
    return [(path.name, {"": dirs})] if dirs else []


def _run_config(repeats: Repeats) -> dict[str, Any]:
    dirs = [d for seed_dirs in repeats.values() for d in seed_dirs.values()]
    for d in dirs:
        p = d / "config.yaml"
        if p.is_file():
            return yaml.safe_load(p.read_text()) or {}
    raise FileNotFoundError(f"no config.yaml in the fold directories {sorted(map(str, dirs))}")


def _run_dir(repeats: Repeats) -> Path:
    """The run's folder: its fold directories' parent, or the common folder of a sweep's jobs."""
    parents = {d.parent for seed_dirs in repeats.values() for d in seed_dirs.values()}
    return parents.pop() if len(parents) == 1 else Path(os.path.commonpath(sorted(map(str, parents))))


def cross_corpus_matrix(runs: Sequence[str | Path], out: str | Path, *, label_map: dict[str, Any] | None = None,
                        cache_dir: str | None = None, force: bool = False) -> dict[str, Any]:
    """The UA matrix of ``runs`` (one per training corpus), written to ``out`` (see the module docstring)."""
    runs_found = [run for path in runs for run in _runs_of(Path(path))]
    return matrix_of(runs_found, out, label_map=label_map, cache_dir=cache_dir, force=force,
                     what=f"runs {list(map(str, runs))}")


def matrix_of(runs: Sequence[tuple[str, Repeats]], out: str | Path, *, label_map: dict[str, Any] | None = None,
              cache_dir: str | None = None, force: bool = False, what: str = "runs") -> dict[str, Any]:
    """The matrix of ``runs`` given as (name, seed -> fold directories), one per training corpus."""
    from omegaconf import OmegaConf

    from wav2emo.crosscorpus.evaluate import corpus_label, cross_evaluate
    from wav2emo.crosscorpus.trained_models import check_same_folds
    from wav2emo.errors import ConfigError

    out = Path(out)
    found: dict[str, dict[str, Any]] = {}
    for name, repeats in runs:
        cfg = _run_config(repeats)
        corpus = corpus_label(cfg["data"]["corpus"])
        if corpus in found:
            raise ConfigError(f"two runs trained on {corpus}: {found[corpus]['path']} ({found[corpus]['name']}) and "
                              f"{_run_dir(repeats)} ({name}); the matrix takes one run per training corpus")
        check_same_folds(f"run {_run_dir(repeats)} ({name})", repeats)
        found[corpus] = {"repeats": repeats, "config": cfg, "path": _run_dir(repeats), "name": name}
    if len(found) < 2:
        raise ConfigError(f"{what} cover {len(found)} training corpus(es) {list(found)}; a cross-corpus matrix "
                          "needs runs on at least two corpora")
    corpora = list(found)
    cells = []
    for a in corpora:
        for b in corpora:
            if a == b:
                cells.append(_in_corpus_cell(out / "in_corpus" / a, found[a], a))
                continue
            pair_dir = out / "pairs" / f"{a}__to__{b}"
            pair = _reusable(pair_dir / f"{PAIR_REPORT}.json", found[a]["repeats"], force)
            if pair is None:
                cfg = OmegaConf.create({
                    "ckpt_path": str(found[a]["path"]),
                    "data": {"corpus": found[b]["config"]["data"]["corpus"]},
                    "paths": {"cache_dir": cache_dir or found[a]["config"]["paths"]["cache_dir"],
                              "output_dir": str(pair_dir)},
                    "label_map": label_map or {}, "accelerator": "auto", "precision": "32-true", "num_workers": 0,
                })
                pair = cross_evaluate(cfg, out=pair_dir, repeats=found[a]["repeats"])
            ua = pair["summary"]["ua"]
            cells.append({"train": a, "test": b, "kind": "cross-corpus (all clips, shared emotions)",
                          "ua": ua["mean"], "std": ua["std"],
                          "n": len(pair["folds"]) if pair.get("kind") == SEEDS_KIND else len(pair["models"]),
                          "classes": pair["class_names"], "ua_interval": (pair.get("intervals") or {}).get("ua"),
                          "report": str(pair_dir), **_seeds_of(pair)})
    matrix = {"corpora": corpora, "runs": {c: str(v["path"]) for c, v in found.items()},
              "ua": [[next(x["ua"] for x in cells if x["train"] == a and x["test"] == b) for b in corpora]
                     for a in corpora],
              "cells": cells}
    write_matrix(out, matrix)
    return matrix


def _in_corpus_cell(where: Path, run: Mapping[str, Any], corpus: str) -> dict[str, Any]:
    """The diagonal cell: the run's own cross-validation (over its seeds as a training sweep reports them)."""
    from wav2emo.reports.aggregate import aggregate_fold_dirs
    from wav2emo.reports.seeds import SEED_DIR, seeds_report

    repeats = run["repeats"]
    if len(repeats) == 1:
        rep = aggregate_fold_dirs(where, next(iter(repeats.values())), write=False)
        classes = rep.get("class_names")
    else:
        per_seed = {s: aggregate_fold_dirs(where / SEED_DIR.format(s), dirs, write=False) for s, dirs in repeats.items()}
        rep = seeds_report(where, run["name"], per_seed, repeats, write=False)
        classes = next(iter(per_seed.values())).get("class_names")
    ua = rep["summary"].get("ua", {})
    return {"train": corpus, "test": corpus, "kind": "in-corpus (speaker folds)", "ua": ua.get("mean"),
            "std": ua.get("std"), "n": len(rep["folds"]), "classes": classes,
            "ua_interval": (rep.get("intervals") or {}).get("ua"), "report": str(run["path"]), **_seeds_of(rep)}


def _seeds_of(report: Mapping[str, Any]) -> dict[str, Any]:
    """A report over several seeds: how many, and reports/seeds.py's spread of UA over them; else nothing."""
    if len(report.get("seeds") or []) < 2:
        return {}
    return {"seeds": len(report["seeds"]), "seed_spread": (report.get("seed_spread") or {}).get("ua")}


def _reusable(path: Path, repeats: Repeats, force: bool) -> dict[str, Any] | None:
    """The pair report already at ``path`` when it was made from these seeds and folds; None to evaluate."""
    if force or not path.is_file():
        return None
    from wav2emo.errors import ConfigError

    pair = json.loads(path.read_text())
    had = (pair.get("seeds") if pair.get("kind") == SEEDS_KIND else None,
           sorted({int(m["fold"]) for m in pair["models"]}))
    now = (list(repeats) if len(repeats) > 1 else None, sorted(next(iter(repeats.values()))))
    if had != now:
        raise ConfigError(f"{path}: made from seeds {had[0] or '(one)'} and folds {had[1]}, but the run now has seeds "
                          f"{now[0] or '(one)'} and folds {now[1]}; pass --force to evaluate the pair again")
    return pair


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
            groups.setdefault(key, []).append((c.name, c.repeats))
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
        row = [f"{fmt(cell[a, b]['ua'], 3)} ± {fmt(cell[a, b]['std'], 3)}"
               + (f" ({cell[a, b]['seeds']} seeds)" if cell[a, b].get("seeds") else "") + (" *" if a == b else "")
               for b in corpora]
        lines.append(f"| **{a}** | " + " | ".join(row) + " |")
    seeded = [c for c in matrix["cells"] if c.get("seeds")]
    if seeded:
        lines += ["\nA cell of several seeds: the mean over seeds (each fold's UA averaged over the seeds; ± std over "
                  "folds); spread over seeds of each seed's pooled UA (mean, std, min-max):\n"]
        lines += [f"- {c['train']} -> {c['test']}: {c['seeds']} seeds, " + (
            f"{fmt(sp['mean'], 3)} ± {fmt(sp['std'], 3)} [{fmt(sp['min'], 3)}, {fmt(sp['max'], 3)}]"
            if (sp := c.get("seed_spread")) else "no spread (no usable predictions)") for c in seeded]
    lines += ["\n\\* in-corpus (speaker folds)\n",
              "| train | test | scored classes | models/folds | pooled UA [interval over test speakers] | report |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in matrix["cells"]:
        n = f"{c['n']} × {c['seeds']} seeds" if c.get("seeds") else c["n"]
        lines.append(f"| {c['train']} | {c['test']} | {', '.join(c['classes'] or [])} | {n} | "
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
