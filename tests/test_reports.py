"""Reports: the one metrics function (equal to the training-time torchmetrics), the fold-result writer and
reader with its schema check, and the sweep reports (grouping by overrides, comparison, missing folds)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from omegaconf import OmegaConf

from wav2emo.errors import UserError
from wav2emo.reports.fold_results import (
    FOLD_RESULT,
    PREDICTIONS,
    FoldResultError,
    read_fold_result,
    read_predictions,
    write_fold_result,
    write_predictions,
)
from wav2emo.reports.metrics import MetricsInputError, classification_metrics
from wav2emo.training.tracked_metrics import build_metrics, build_per_class_metrics

NAMES = ["neutral", "calm", "happy", "sad"]


# --- metrics -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
def test_classification_metrics_equal_torchmetrics(seed):
    """Random predictions, incl. a class absent from the labels (but predicted) and one absent from both."""
    g = np.random.default_rng(seed)
    num_classes = 3 + seed % 5
    n = 40 + 7 * seed
    y = g.integers(0, num_classes, n)
    p = g.integers(0, num_classes, n)
    y[y == 1] = 0  # class 1: never true, sometimes predicted
    if seed % 2:
        last = num_classes - 1
        y[y == last], p[p == last] = 0, 0  # last class: in neither labels nor predictions
    names = [f"c{i}" for i in range(num_classes)]
    ours = classification_metrics(y, p, names)
    tm = build_metrics(num_classes)(torch.tensor(p), torch.tensor(y))
    per = build_per_class_metrics(num_classes)(torch.tensor(p), torch.tensor(y))
    for key in ("wa", "ua", "f1"):
        assert ours[key] == pytest.approx(float(tm[key]), abs=1e-6), key
    for key in ("precision", "recall", "f1"):
        assert [c[key] for c in ours["per_class"]] == pytest.approx(per[key].tolist(), abs=1e-6), key
    assert np.array_equal(np.array(ours["confusion"]), per["confusion"].numpy())
    assert [c["support"] for c in ours["per_class"]] == np.bincount(y, minlength=num_classes).tolist()
    assert ours["per_class"][1]["support"] == 0 and ours["per_class"][1]["recall"] == 0.0
    assert ours["clips"] == n


def test_classification_metrics_by_hand():
    m = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c"])
    assert m["wa"] == pytest.approx(3 / 5)
    assert m["ua"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert m["per_class"][1] == {"class": "b", "precision": pytest.approx(2 / 3), "recall": 1.0,
                                 "f1": pytest.approx(0.8), "support": 2}


def test_classification_metrics_refuse_bad_input():
    with pytest.raises(MetricsInputError, match="3 labels but 2 predictions"):
        classification_metrics([0, 1, 1], [0, 1], NAMES)
    with pytest.raises(MetricsInputError, match="class index 4 outside 0..3"):
        classification_metrics([0, 4], [0, 1], NAMES)
    with pytest.raises(MetricsInputError, match="integer class indices"):
        classification_metrics([0.5, 1], [0, 1], NAMES)
    assert issubclass(MetricsInputError, UserError)


# --- fold results --------------------------------------------------------------------------------------


def _predictions(fold: int, g: np.random.Generator, acc: float, n: int = 16) -> pd.DataFrame:
    y = np.arange(n) % len(NAMES)
    p = np.where(g.random(n) < acc, y, g.integers(0, len(NAMES), n))
    return pd.DataFrame({"clip_id": [f"f{fold}-{i}" for i in range(n)], "label": y, "pred": p})


def write_fake_fold(fold_dir, fold, g, *, acc=0.6, dev_ua=0.5, model="fe_vgg_egemaps", config=None):
    """A fold as training writes it, through the project's writer; returns its test metrics."""
    preds = _predictions(fold, g, acc)
    m = classification_metrics(preds["label"], preds["pred"], NAMES)
    write_predictions(fold_dir, preds)
    write_fold_result(fold_dir, {
        "fold": fold, "model": model, "split": {"test_actors": [fold + 1], "dev_actors": [fold + 2]},
        "class_names": NAMES, "test_clips": m["clips"],
        "test": {k: m[k] for k in ("wa", "ua", "f1")}, "test_per_class": m["per_class"],
        "test_confusion": m["confusion"], "best_dev": {"monitor": "val/ua", "best_score": dev_ua},
    })
    (fold_dir / "config.yaml").write_text(yaml.safe_dump(config or {"model": {"name": model}}))
    return m


def test_fold_result_round_trip(tmp_path):
    m = write_fake_fold(tmp_path / "fold_2", 2, np.random.default_rng(0))
    r = read_fold_result(tmp_path / "fold_2")
    assert r["fold"] == 2 and r["test"]["ua"] == pytest.approx(m["ua"])
    assert read_fold_result(tmp_path / "fold_2" / FOLD_RESULT) == r
    assert len(read_predictions(tmp_path / "fold_2")) == 16
    assert not list((tmp_path / "fold_2").glob(".*"))  # no temporary file left behind


def test_fold_result_writer_converts_numpy_and_nan(tmp_path):
    write_fold_result(tmp_path, {"fold": np.int64(0), "model": "m", "split": {"test_actors": np.array([1, 2])},
                                 "class_names": NAMES,
                                 "test": {"wa": np.float32(0.5), "ua": float("nan"), "f1": 0.25}})
    raw = json.loads((tmp_path / FOLD_RESULT).read_text())
    assert raw["split"]["test_actors"] == [1, 2] and raw["test"]["ua"] is None and raw["test"]["wa"] == 0.5


@pytest.mark.parametrize(("drop", "needle"), [
    ("fold", "missing key 'fold'"),
    ("split.test_actors", "missing key 'split.test_actors'"),
    ("test.ua", "missing key 'test.ua'"),
    ("class_names", "missing key 'class_names'"),
])
def test_fold_result_schema_names_file_and_key(tmp_path, drop, needle):
    write_fake_fold(tmp_path, 0, np.random.default_rng(0))
    data = json.loads((tmp_path / FOLD_RESULT).read_text())
    *parents, last = drop.split(".")
    target = data
    for p in parents:
        target = target[p]
    del target[last]
    (tmp_path / FOLD_RESULT).write_text(json.dumps(data))
    with pytest.raises(FoldResultError, match=needle) as e:
        read_fold_result(tmp_path)
    assert str(tmp_path / FOLD_RESULT) in str(e.value)
    with pytest.raises(FoldResultError, match=needle):  # the writer refuses the same result
        write_fold_result(tmp_path / "again", data)
    assert not (tmp_path / "again" / FOLD_RESULT).exists()


def test_unreadable_files_are_named(tmp_path):
    (tmp_path / FOLD_RESULT).write_text('{"fold": 0, ')
    with pytest.raises(FoldResultError, match=f"{FOLD_RESULT}: not readable as JSON"):
        read_fold_result(tmp_path)
    with pytest.raises(FoldResultError, match="no such fold result file"):
        read_fold_result(tmp_path / "nowhere")
    pd.DataFrame({"clip_id": ["a"], "label": [0]}).to_csv(tmp_path / PREDICTIONS, index=False)
    with pytest.raises(FoldResultError, match=f"{PREDICTIONS}: missing column 'pred'"):
        read_predictions(tmp_path)
    pd.DataFrame({"clip_id": ["a"], "label": ["sad"], "pred": [0]}).to_csv(tmp_path / PREDICTIONS, index=False)
    with pytest.raises(FoldResultError, match="column 'label' holds"):
        read_predictions(tmp_path)
    with pytest.raises(FoldResultError, match="missing column 'label'"):
        write_predictions(tmp_path / "w", pd.DataFrame({"clip_id": ["a"], "pred": [0]}))


def test_report_refuses_folds_with_different_classes(tmp_path):
    from wav2emo.reports.aggregate import aggregate_folds

    g = np.random.default_rng(0)
    write_fake_fold(tmp_path / "fold_0", 0, g)
    write_fake_fold(tmp_path / "fold_1", 1, g)
    r = json.loads((tmp_path / "fold_1" / FOLD_RESULT).read_text())
    r["class_names"] = list(reversed(NAMES))
    (tmp_path / "fold_1" / FOLD_RESULT).write_text(json.dumps(r))
    with pytest.raises(FoldResultError, match="class_names .* differ from fold 0"):
        aggregate_folds(tmp_path, write=False)


def test_pooled_metrics_say_which_folds_they_cover(tmp_path):
    from wav2emo.reports.aggregate import aggregate_folds

    g = np.random.default_rng(4)
    for fold in (0, 1, 2):
        write_fake_fold(tmp_path / f"fold_{fold}", fold, g)
    (tmp_path / "fold_1" / PREDICTIONS).write_text("clip_id,label\na,0\n")  # damaged: no pred column
    report = aggregate_folds(tmp_path)
    assert report["folds"] == [0, 1, 2] and report["pooled"]["folds"] == [0, 2]
    assert report["pooled"]["clips"] == 32
    assert "Only folds [0, 2] have usable predictions.csv" in (tmp_path / "cv_report.md").read_text()


# --- sweeps --------------------------------------------------------------------------------------------

FINETUNE = {"none": None, "top_k": {"name": "top_k", "k": 4}}
AUGMENT = {"none": None, "standard": {"name": "standard", "mode": "online"}}


def make_sweep(root, folds=(0, 1, 2), skip=(), extra=(), seed=0):
    """A Hydra multirun tree: numbered jobs with .hydra/overrides.yaml and one fold_<k> each.

    ``skip`` holds (finetune, augment, fold) jobs that failed (overrides written, no result).
    Returns {(finetune, augment): {fold: metrics}}.
    """
    g = np.random.default_rng(seed)
    truth: dict = {}
    num = 0
    for ft in FINETUNE:
        for aug in AUGMENT:
            for fold in folds:
                job = root / str(num)
                num += 1
                overrides = ["model=fe_vgg_egemaps", f"fold={fold}", f"finetune={ft}", f"augment={aug}", *extra]
                (job / ".hydra").mkdir(parents=True)
                (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
                if (ft, aug, fold) in skip:
                    continue
                cfg = {"model": {"name": "fe_vgg_egemaps"}, "fold": fold}
                if FINETUNE[ft]:
                    cfg["finetune"] = FINETUNE[ft]
                if AUGMENT[aug]:
                    cfg["augment"] = AUGMENT[aug]
                acc = 0.3 + 0.2 * (ft == "top_k") + 0.1 * (aug == "standard")
                truth.setdefault((ft, aug), {})[fold] = write_fake_fold(
                    job / f"fold_{fold}", fold, g, acc=acc, dev_ua=0.4 + 0.05 * fold, config=cfg)
    return truth


def test_jobs_grouped_by_every_override_but_fold(tmp_path):
    from wav2emo.reports.sweep import group_jobs

    make_sweep(tmp_path, extra=["paths.data_dir=/data/ravdess16k"])
    confs = group_jobs(tmp_path)
    assert len(confs) == 4
    names = sorted(c.name for c in confs)
    # constant overrides (model, paths) are not in the names; the varying ones are
    assert names == sorted(f"finetune={f},augment={a}" for f in FINETUNE for a in AUGMENT)
    for c in confs:
        assert sorted(c.fold_dirs) == [0, 1, 2] and len(c.jobs) == 3
        assert c.overrides["paths.data_dir"] == "/data/ravdess16k" and "fold" not in c.overrides
        for f, d in c.fold_dirs.items():  # each fold comes from a job of this configuration
            ov = yaml.safe_load((d.parent / ".hydra" / "overrides.yaml").read_text())
            assert f"fold={f}" in ov and f"finetune={c.overrides['finetune']}" in ov
            assert f"augment={c.overrides['augment']}" in ov


def test_sweep_writes_a_report_per_configuration_and_the_comparison(tmp_path):
    from wav2emo.reports.sweep import aggregate_sweep

    truth = make_sweep(tmp_path)
    out = aggregate_sweep(tmp_path)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert comparison["expected_folds"] == [0, 1, 2]
    rows = {(r["overrides"]["finetune"], r["overrides"]["augment"]): r for r in comparison["configurations"]}
    assert set(rows) == set(truth)
    for key, row in rows.items():
        ua = [truth[key][f]["ua"] for f in (0, 1, 2)]
        wa = [truth[key][f]["wa"] for f in (0, 1, 2)]
        assert row["test"]["ua"]["mean"] == pytest.approx(np.mean(ua))
        assert row["test"]["ua"]["std"] == pytest.approx(np.std(ua, ddof=1))
        assert row["test"]["wa"]["mean"] == pytest.approx(np.mean(wa))
        assert row["dev_ua"]["mean"] == pytest.approx(np.mean([0.4, 0.45, 0.5]))
        assert row["n_folds"] == 3 and row["complete"] and row["missing_folds"] == []
        report_dir = tmp_path / row["report"]
        assert report_dir.parent == tmp_path / "reports"
        cv = json.loads((report_dir / "cv_report.json").read_text())
        assert cv["folds"] == [0, 1, 2]
        assert cv["summary"]["ua"]["per_fold"] == pytest.approx(ua)
        # pooled over this configuration's predictions only (3 folds x 16 clips)
        assert cv["pooled"]["clips"] == 48
        assert cv["protocol"]["finetune"] == (FINETUNE[key[0]] or "none")
        assert cv["protocol"]["augment"] == (AUGMENT[key[1]] or "none")
        md = (report_dir / "cv_report.md").read_text()
        assert "## Protocol" in md
        assert f"- finetune: {'top_k (k=4)' if key[0] == 'top_k' else 'none'}" in md
        assert f"- augment: {'standard (mode=online)' if key[1] == 'standard' else 'none'}" in md
    md = (tmp_path / "comparison.md").read_text()
    r = rows[("top_k", "standard")]
    assert (f"| finetune=top_k,augment=standard | 3/3 | {r['test']['ua']['mean']:.4f} ± "
            f"{r['test']['ua']['std']:.4f} |") in md
    assert "Incomplete" not in md and "missing" not in md
    assert (tmp_path / "comparison.png").stat().st_size > 0
    assert len(out["configurations"]) == 4
    assert not (tmp_path / "cv_report.json").exists()  # never one report mixing configurations


def test_missing_folds_are_flagged(tmp_path):
    from wav2emo.reports.sweep import aggregate_sweep

    make_sweep(tmp_path, skip={("top_k", "none", 1), ("none", "standard", 0), ("none", "standard", 2)})
    aggregate_sweep(tmp_path)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    rows = {r["name"]: r for r in comparison["configurations"]}
    assert rows["finetune=top_k,augment=none"]["missing_folds"] == [1]
    assert rows["finetune=top_k,augment=none"]["n_folds"] == 2
    assert not rows["finetune=top_k,augment=none"]["complete"]
    assert rows["finetune=none,augment=standard"]["missing_folds"] == [0, 2]
    assert rows["finetune=none,augment=none"]["complete"]
    md = (tmp_path / "comparison.md").read_text()
    assert "**2/3 (missing 1)**" in md and "**1/3 (missing 0, 2)**" in md
    assert "Incomplete configurations" in md and "finetune=top_k,augment=none" in md.split("Incomplete")[1]
    cv = (tmp_path / "reports" / "finetune=top_k,augment=none" / "cv_report.md").read_text()
    assert "Missing folds: [1]" in cv


def test_fold_missing_everywhere_is_flagged_from_the_swept_folds(tmp_path):
    """Fold 2 failed in every configuration: only the sweep's own fold= values can tell."""
    from wav2emo.reports.sweep import aggregate_sweep

    make_sweep(tmp_path, folds=(0, 1))
    out = aggregate_sweep(tmp_path, expected_folds=[0, 1, 2])
    assert all(r["missing_folds"] == [2] for r in out["configurations"])


def test_fold_all_job_holds_its_folds(tmp_path):
    """A fold=all job (fold_k folders in one job dir) is one configuration with all its folds."""
    from wav2emo.reports.sweep import aggregate_sweep

    g = np.random.default_rng(1)
    for num, model in enumerate(("fe_vgg", "egemaps_mlp")):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model={model}", "fold=all"]))
        cfg = {"fold": "all", "folds": {"k": 3}, "model": {"name": model}}
        for fold in range(3 if model == "fe_vgg" else 2):  # egemaps_mlp was killed before its last fold
            write_fake_fold(job / f"fold_{fold}", fold, g, model=model, config=cfg)
    out = aggregate_sweep(tmp_path)
    rows = {r["name"]: r for r in out["configurations"]}
    assert rows["model=fe_vgg"]["folds"] == [0, 1, 2] and rows["model=fe_vgg"]["complete"]
    assert rows["model=egemaps_mlp"]["missing_folds"] == [2]


def test_job_without_fold_override_expects_its_configs_fold(tmp_path):
    """No fold= on the command line: the job ran the config's default fold, not every fold."""
    from wav2emo.reports.sweep import aggregate_sweep

    g = np.random.default_rng(3)
    for num, lr in enumerate(("1e-3", "3e-3")):
        job = tmp_path / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"model.module.optimizer.lr={lr}"]))
        write_fake_fold(job / "fold_0", 0, g, config={"fold": 0, "folds": {"k": 5}})
    out = aggregate_sweep(tmp_path)
    assert [r["missing_folds"] for r in out["configurations"]] == [[], []]
    assert [r["name"] for r in out["configurations"]] == ["model.module.optimizer.lr=1e-3",
                                                          "model.module.optimizer.lr=3e-3"]


def test_single_configuration_keeps_its_report_in_the_sweep_dir(tmp_path):
    from wav2emo.reports.sweep import aggregate_sweep

    g = np.random.default_rng(2)
    for fold in (0, 1):
        job = tmp_path / str(fold)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([f"fold={fold}", "model=egemaps_mlp"]))
        write_fake_fold(job / f"fold_{fold}", fold, g)
    aggregate_sweep(tmp_path)
    assert json.loads((tmp_path / "cv_report.json").read_text())["folds"] == [0, 1]
    assert not (tmp_path / "comparison.json").exists() and not (tmp_path / "reports").exists()


def test_hydra_callback_writes_the_sweep_reports(tmp_path):
    from wav2emo.sweep_callback import CrossValidationReport

    make_sweep(tmp_path, folds=(0, 1), skip={("none", "none", 1)})
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "overrides": {
        "task": ["model=fe_vgg_egemaps", "fold=0,1", "finetune=none,top_k", "augment=none,standard"]}}})
    CrossValidationReport().on_multirun_end(cfg)
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    assert len(comparison["configurations"]) == 4
    assert {r["name"]: r["missing_folds"] for r in comparison["configurations"]}["finetune=none,augment=none"] == [1]
    for r in comparison["configurations"]:
        assert (tmp_path / r["report"] / "cv_report.md").exists()


@pytest.mark.slow
def test_real_multirun_compares_configurations(tmp_path):
    """python -m wav2emo.train -m over two folds and two learning rates: two CV reports and the comparison."""
    import subprocess
    import sys

    from tests.helpers import CONF_DIR, SMALL

    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "wav2emo.train", "-m", "fold=0,3", "model.module.optimizer.lr=1e-3,3e-3", *SMALL,
           "model=egemaps_mlp", "trainer.max_epochs=2", f"paths.data_dir={tmp_path / 'data'}",
           f"paths.cache_dir={tmp_path / 'cache'}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=CONF_DIR.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    comparison = json.loads((sweep / "comparison.json").read_text())
    names = [r["name"] for r in comparison["configurations"]]
    assert sorted(names) == ["model.module.optimizer.lr=0.001", "model.module.optimizer.lr=0.003"]  # as Hydra saves them
    for r in comparison["configurations"]:
        assert r["folds"] == [0, 3] and r["complete"]
        cv = json.loads((sweep / r["report"] / "cv_report.json").read_text())
        # a real run's config holds the finetune section whole (name and mode), as its config.yaml saved it
        assert cv["pooled"]["clips"] == 2 * 5 * 8 and cv["protocol"]["finetune"]["mode"] == "none"
    assert (sweep / "comparison.md").exists() and (sweep / "comparison.png").stat().st_size > 0
