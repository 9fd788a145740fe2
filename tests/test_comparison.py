"""Comparisons between configurations (issue 21): the reports carry speaker intervals, sweeps and
``python -m wav2emo.report DIR DIR --out`` write paired statistics, seeds are repeats, bad input is refused."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from wav2emo.report import main
from wav2emo.reports.comparison import compare_runs, load_run, what_differs
from wav2emo.reports.fold_results import FOLD_RESULT, FoldResultError, write_fold_result, write_predictions
from wav2emo.reports.intervals import BootstrapSettings
from wav2emo.reports.metrics import classification_metrics

NAMES = ["neutral", "happy", "sad", "angry"]
FOLDS = {0: [1, 2, 3, 4], 1: [5, 6, 7, 8], 2: [9, 10, 11, 12]}
FAST = BootstrapSettings(resamples=200, permutations=500)


def truth():
    """Every speaker: 5 clips of each class. Returns one frame of clip_id, actor, fold, label."""
    rows = [{"clip_id": f"a{a:02d}-{c}-{i}", "actor": a, "fold": f, "label": c}
            for f, actors in FOLDS.items() for a in actors for c in range(4) for i in range(5)]
    return pd.DataFrame(rows)


def predictions(acc, seed):
    g = np.random.default_rng(seed)
    t = truth()
    right = g.random(len(t)) < acc
    t["pred"] = np.where(right, t["label"], (t["label"] + g.integers(1, 4, len(t))) % 4)
    return t


def write_run(root, preds, *, names=NAMES, report_cfg=None):
    """Fold directories as training writes them (fold_result.json, predictions.csv with the actor column)."""
    for f, df in preds.groupby("fold"):
        d = root / f"fold_{f}"
        m = classification_metrics(df["label"], df["pred"], names)
        write_predictions(d, df.drop(columns=["fold"]))
        write_fold_result(d, {"fold": int(f), "model": "m", "split": {"test_actors": FOLDS.get(int(f), [])},
                              "class_names": names, "test_clips": len(df), "test": {k: m[k] for k in ("wa", "ua", "f1")},
                              "best_dev": {"monitor": "val/ua", "best_score": 0.5}})
        (d / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "m"}, "report": report_cfg or {
            "bootstrap_resamples": 200, "permutations": 500}}))


def make_sweep(root, accs, seeds=(None,)):
    """A Hydra multirun: one job per (configuration, seed, fold) with its overrides."""
    num = 0
    for i, (name, acc) in enumerate(accs.items()):
        for s in seeds:
            preds = predictions(acc, 10 * i + (s or 0))
            for f in FOLDS:
                job = root / str(num)
                num += 1
                overrides = [f"model={name}", f"fold={f}"] + ([f"seed={s}"] if s is not None else [])
                (job / ".hydra").mkdir(parents=True)
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
                write_run(job, preds[preds["fold"] == f])


def test_cv_report_gives_speaker_intervals_in_json_and_markdown(tmp_path):
    from wav2emo.reports.aggregate import aggregate_folds

    write_run(tmp_path, predictions(0.6, 0))
    report = aggregate_folds(tmp_path)
    iv = report["intervals"]
    assert iv["speakers"] == 12 and iv["clips"] == 240 and iv["settings"]["resamples"] == 200  # from config.yaml
    assert iv["ua"]["estimate"] == pytest.approx(report["pooled"]["ua"])
    assert iv["ua"]["low"] < iv["ua"]["estimate"] < iv["ua"]["high"]
    md = (tmp_path / "cv_report.md").read_text()
    assert "## 95 % intervals over test speakers" in md and f"UA {iv['ua']['estimate']:.3f} [" in md
    assert "bootstrap over test speakers" in md and "| sad |" in md


def test_a_report_without_speaker_ids_says_why_it_has_no_interval(tmp_path):
    from wav2emo.reports.aggregate import aggregate_folds

    write_run(tmp_path, predictions(0.6, 0))
    for f in FOLDS:
        p = tmp_path / f"fold_{f}" / "predictions.csv"
        pd.read_csv(p).drop(columns=["actor"]).to_csv(p, index=False)
    report = aggregate_folds(tmp_path)
    assert "no 'actor' column and 4 test speakers" in report["intervals"]["unavailable"]
    assert "Not computed: " in (tmp_path / "cv_report.md").read_text()


def test_sweep_comparison_has_paired_tests_holm_and_verdicts(tmp_path):
    from wav2emo.reports.sweep import aggregate_sweep

    make_sweep(tmp_path, {"good": 0.8, "same_a": 0.45, "same_b": 0.45})
    out = aggregate_sweep(tmp_path)
    stats = out["comparison"]["statistics"]
    assert len(stats["configurations"]) == 3 and len(stats["pairs"]) == 3 and stats["holm"]
    by = {(p["a"], p["b"]): p for p in stats["pairs"]}
    good = by[("model=good", "model=same_a")]
    assert good["ua"]["estimate"] > 0.2 and good["ua"]["p_holm"] < 0.05 and "is better" in good["verdict"]
    assert good["ua"]["p_holm"] >= good["ua"]["p"]  # the adjustment never lowers a p-value
    assert "mcnemar" in good and good["mcnemar"]["only_a_correct"] > good["mcnemar"]["only_b_correct"]
    md = (tmp_path / "comparison.md").read_text()
    assert "## Paired differences" in md and "p (Holm)" in md and "### How to read this" in md
    assert "model=good - model=same_a: +" in md and "UA, Holm-adjusted p" in md
    assert (tmp_path / "comparison.png").stat().st_size > 0
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["statistics"]["pairs"][0]["verdict"]


def test_seeds_are_repeats_of_one_configuration(tmp_path):
    from wav2emo.reports.sweep import aggregate_sweep, group_jobs

    make_sweep(tmp_path, {"x": 0.6, "y": 0.5}, seeds=(0, 1, 2))
    confs = group_jobs(tmp_path)
    assert sorted(c.name for c in confs) == ["model=x", "model=y"]
    assert all(list(c.repeats) == ["0", "1", "2"] and all(sorted(d) == [0, 1, 2] for d in c.repeats.values())
               for c in confs)
    out = aggregate_sweep(tmp_path)
    rep = out["reports"]["model=x"]
    assert rep["kind"] == "seeds" and rep["seeds"] == ["0", "1", "2"]
    assert rep["intervals"]["clips"] == 3 * 240 and rep["seed_spread"]["ua"]["repeats"] == 3
    assert (tmp_path / "reports" / "model=x" / "seed=1" / "cv_report.md").is_file()
    assert "Spread over seeds" in (tmp_path / "reports" / "model=x" / "cv_report.md").read_text()
    stats = out["comparison"]["statistics"]
    assert [len(c["repeats"]) for c in stats["configurations"]] == [3, 3]
    pair = stats["pairs"][0]
    assert "mcnemar" not in pair and not stats["holm"]  # two configurations: no adjustment
    assert "3 seeds" in (tmp_path / "comparison.md").read_text()


def test_report_cli_compares_several_directories_without_touching_them(tmp_path, capsys):
    a, b = tmp_path / "logreg", tmp_path / "svm"
    write_run(a, predictions(0.7, 1))
    write_run(b, predictions(0.5, 2))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob(FOLD_RESULT)}
    assert main([str(a), str(b), "--out", str(tmp_path / "cmp"), "--resamples", "300"]) == 0
    assert "comparison:" in capsys.readouterr().out
    stats = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["statistics"]
    assert [c["name"] for c in stats["configurations"]] == ["logreg", "svm"]
    assert stats["settings"]["resamples"] == 300 and stats["pairs"][0]["a"] == "logreg"
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob(FOLD_RESULT)} == before


# --- bad input ---------------------------------------------------------------------------------------


def test_runs_on_different_clips_folds_or_labels_are_refused_with_what_differs(tmp_path):
    base = predictions(0.6, 0)
    write_run(tmp_path / "a", base)
    fewer = base[base["actor"] != 12]
    write_run(tmp_path / "b", fewer)
    moved = base.assign(fold=base["fold"].replace({0: 1, 1: 0}))
    write_run(tmp_path / "c", moved)
    relabelled = base.assign(label=np.where(base["clip_id"] == "a01-0-0", 1, base["label"]))
    write_run(tmp_path / "d", relabelled)
    other_names = ["neutral", "happy", "sad", "fearful"]
    write_run(tmp_path / "e", base, names=other_names)
    runs = {k: load_run(k, {"": {f: tmp_path / k / f"fold_{f}" for f in FOLDS}}) for k in "acde"}
    runs["b"] = load_run("b", {"": {f: tmp_path / "b" / f"fold_{f}" for f in FOLDS}})
    assert what_differs(runs["a"], runs["a"]) is None
    assert what_differs(runs["a"], runs["b"]).startswith("clip sets differ: 20 clip(s) only in a")
    assert what_differs(runs["a"], runs["c"]).startswith("folds differ: 160 clip(s) tested in other folds")
    assert what_differs(runs["a"], runs["d"]) == "labels differ for 1 clip(s) (e.g. a01-0-0)"
    assert what_differs(runs["a"], runs["e"]).startswith("label sets differ")
    stats = compare_runs([runs["a"], runs["b"]], FAST)
    assert stats["pairs"] == [] and "clip sets differ" in stats["refused"][0]["reason"]


def test_report_cli_with_one_configuration_writes_no_comparison(tmp_path, capsys):
    write_run(tmp_path, predictions(0.6, 0))
    assert main([str(tmp_path)]) == 0
    assert "holds one configuration: no comparison written" in capsys.readouterr().out
    assert not list(tmp_path.glob("comparison.*"))


def test_report_cli_with_several_directories_and_no_out_refuses_and_writes_nothing(tmp_path, capsys):
    write_run(tmp_path / "a", predictions(0.6, 0))
    write_run(tmp_path / "b", predictions(0.6, 1))
    before = sorted(tmp_path.rglob("*"))
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 2
    assert "no --out" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_fold_without_test_speakers_is_named(tmp_path):
    write_run(tmp_path, predictions(0.6, 0))
    d = tmp_path / "fold_3"
    write_predictions(d, pd.DataFrame({"clip_id": [], "actor": [], "label": [], "pred": []}))
    write_fold_result(d, {"fold": 3, "model": "m", "split": {"test_actors": []}, "class_names": NAMES,
                          "test_clips": 0, "test": {"wa": None, "ua": None, "f1": None}})
    with pytest.raises(FoldResultError, match=r"fold_3/predictions.csv: no test clips \(a fold without test speakers"):
        load_run("m", {"": {f: tmp_path / f"fold_{f}" for f in (0, 1, 2, 3)}})


def test_a_cv_report_names_a_fold_without_test_clips_and_pools_the_others(tmp_path, caplog):
    from wav2emo.reports.aggregate import aggregate_folds

    write_run(tmp_path, predictions(0.6, 0))
    d = tmp_path / "fold_3"
    write_predictions(d, pd.DataFrame({"clip_id": [], "actor": [], "label": [], "pred": []}))
    write_fold_result(d, {"fold": 3, "model": "m", "split": {"test_actors": []}, "class_names": NAMES,
                          "test_clips": 0, "test": {"wa": None, "ua": None, "f1": None}})
    report = aggregate_folds(tmp_path, write=False)
    assert "fold 3: " in caplog.text and "holds no test clips (a fold without test speakers?)" in caplog.text
    assert report["intervals"]["speakers"] == 12 and report["pooled"]["folds"] == [0, 1, 2]


@pytest.mark.parametrize("p, text", [(0.049, "p = 0.049"), (0.0504, "p = 0.050"), (0.16, "p = 0.16"),
                                     (0.003, "p = 0.003"), (0.0004, "p < 0.001")])
def test_p_values_near_the_threshold_keep_three_decimals(p, text):
    from wav2emo.reports.formatting import fmt_p
    assert fmt_p(p) == text
