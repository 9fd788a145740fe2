"""scikit-learn baselines on the synthetic corpus: protocol (scaler, dev choice, no test leakage), report, errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from omegaconf import open_dict

from tests.helpers import compose_cfg
from tests.test_training import chance_ua_quantile

# 24 synthetic actors x 8 clips, eGeMAPS functionals only (the tiny features config's egemaps entry).
SMALL_BASELINES = ["data=synthetic", "data.corpus.clips_per_actor=8", "features=tiny"]


@pytest.fixture(scope="session")
def baseline_dirs(tmp_path_factory):
    """Corpus and feature cache shared by every baseline test (built once, like real runs share them)."""
    root = tmp_path_factory.mktemp("baselines_shared")
    return root / "data", root / "cache"


def baseline_cfg(tmp_path, dirs, *extra: str):
    from wav2emo.baselines.runner import command_line_overrides

    data_dir, cache_dir = dirs
    return compose_cfg(command_line_overrides([*SMALL_BASELINES, *extra]), tmp_path, data_dir, cache_dir,
                       config_name="baselines")


@pytest.fixture(scope="session")
def two_folds(tmp_path_factory, baseline_dirs):
    """logreg on folds 0 and 1, with the cross-validation report."""
    from wav2emo.baselines.runner import run_baselines

    out = tmp_path_factory.mktemp("baseline_run")
    cfg = baseline_cfg(out, baseline_dirs, "model=logreg", "fold=[0,1]")
    metrics = run_baselines(cfg)
    return cfg, metrics, out


def test_two_folds_write_the_neural_models_files_and_report(two_folds):
    _, metrics, out = two_folds
    report = json.loads((out / "cv_report.json").read_text())
    assert report["folds"] == [0, 1] and report["missing_folds"] == []
    assert set(report["summary"]) == {"wa", "ua", "f1"}
    assert (out / "cv_report.md").exists() and (out / "confusion_matrix.png").exists()
    for fold in (0, 1):
        d = out / f"fold_{fold}"
        for name in ("config.yaml", "git.json", "environment.json"):
            assert (d / name).exists(), name
        r = json.loads((d / "fold_result.json").read_text())
        assert r["fold"] == fold and r["model"] == "logreg"
        assert r["best_dev"]["monitor"] == "val/ua" and r["best_dev"]["best_score"] is not None
        assert set(r["hyperparameters"]) == {"C"} and r["best_dev"]["params"] == r["hyperparameters"]
        assert set(r["test"]) == {"wa", "ua", "f1"}
        assert len(r["test_per_class"]) == 8 and np.asarray(r["test_confusion"]).shape == (8, 8)
        assert r["test_clips"] == np.asarray(r["test_confusion"]).sum()
        preds = pd.read_csv(d / "predictions.csv")
        assert list(preds.columns[:7]) == ["clip_id", "file", "actor", "label", "pred", "true", "predicted"]
        assert set(preds["actor"]) == set(r["split"]["test_actors"])
        probs = preds[[c for c in preds.columns if c.startswith("prob_")]].to_numpy()
        assert probs.shape == (len(preds), 8) and np.allclose(probs.sum(1), 1)
        # The metrics agree with the predictions written (WA = accuracy, UA = macro recall).
        y, p = preds["label"].to_numpy(), preds["pred"].to_numpy()
        assert r["test"]["wa"] == pytest.approx((y == p).mean())
        assert r["test"]["ua"] == pytest.approx(np.mean([(p[y == c] == c).mean() for c in np.unique(y)]))
    assert report["summary"]["ua"]["per_fold"] == [
        json.loads((out / f"fold_{f}" / "fold_result.json").read_text())["test"]["ua"] for f in (0, 1)]


@pytest.mark.learning
def test_baseline_learns_synthetic_emotions_on_held_out_actors(two_folds):
    _, _, out = two_folds
    for fold in (0, 1):
        r = json.loads((out / f"fold_{fold}" / "fold_result.json").read_text())
        labels = pd.read_csv(out / f"fold_{fold}" / "predictions.csv")["label"]
        threshold = chance_ua_quantile(labels) + 0.1  # chance at p < 0.001, plus a clear margin
        assert r["test"]["ua"] > threshold, (fold, r["test"], threshold)


def _record_fits(monkeypatch):
    """Every fit of the pipeline: its rows (identified by their features) and the fitted scaler."""
    from sklearn.pipeline import Pipeline

    fits = []
    original = Pipeline.fit

    def fit(self, x, y=None, **kw):
        out = original(self, x, y, **kw)
        fits.append({"x": np.array(x), "params": self.named_steps["estimator"].get_params(),
                     "scaler": self.named_steps["scaler"]})
        return out

    monkeypatch.setattr(Pipeline, "fit", fit)
    return fits


def test_scaler_on_training_actors_and_no_test_actor_in_any_fit(tmp_path, baseline_dirs, monkeypatch):
    from wav2emo.baselines.runner import load_fold_data, run_baseline_fold

    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=logreg", "fold=0")
    data = load_fold_data(cfg, 0)
    parts = data["parts"]
    fits = _record_fits(monkeypatch)
    run_baseline_fold(cfg, 0, tmp_path / "fold_0")
    assert len(fits) == 4 + 1  # every candidate once, then the refit
    x_train = parts["train"]["x"]
    x_all = np.concatenate([parts[p]["x"] for p in ("train", "dev", "test")])
    row_actor = {tuple(row): a for p in ("train", "dev", "test") for row, a in zip(parts[p]["x"], parts[p]["actor"],
                                                                                  strict=True)}
    test_actors = set(data["split"].test) | set(data["split"].dev)
    for fit in fits:
        actors = {row_actor[tuple(row)] for row in fit["x"]}
        assert actors == set(data["split"].train), actors & test_actors
        np.testing.assert_allclose(fit["scaler"].mean_, x_train.mean(0))
        np.testing.assert_allclose(fit["scaler"].scale_, np.where(x_train.std(0) > 0, x_train.std(0), 1.0))
        assert not np.allclose(fit["scaler"].mean_, x_all.mean(0))


def test_chosen_hyperparameters_are_the_best_on_dev_actors(tmp_path, baseline_dirs):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import recall_score
    from sklearn.preprocessing import StandardScaler

    from wav2emo.baselines.runner import load_fold_data, run_baseline_fold

    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=logreg", "model.grid.C=[0.001,0.01,1.0,100.0]", "fold=1")
    result = run_baseline_fold(cfg, 1, tmp_path / "fold_1")
    parts = load_fold_data(cfg, 1)["parts"]
    tr, dev = parts["train"], parts["dev"]
    scaler = StandardScaler().fit(tr["x"])
    manual = {}
    for c in (0.001, 0.01, 1.0, 100.0):
        est = LogisticRegression(C=c, max_iter=5000, random_state=cfg.seed + 1).fit(scaler.transform(tr["x"]), tr["y"])
        manual[c] = recall_score(dev["y"], est.predict(scaler.transform(dev["x"])), labels=list(range(8)),
                                 average="macro", zero_division=0)
    best = max(manual.values())
    first_best = next(c for c, s in manual.items() if s == best)
    assert result["hyperparameters"] == {"C": first_best}
    assert result["best_dev"]["best_score"] == pytest.approx(best)
    assert [s["ua"] for s in result["dev_scores"]] == pytest.approx(list(manual.values()))


@pytest.mark.learning
@pytest.mark.parametrize("model", ["svm", "random_forest", "hist_gb"])
def test_every_model_runs_a_fold_deterministically(tmp_path, baseline_dirs, model):
    from wav2emo.baselines.runner import run_baseline_fold

    cfg = baseline_cfg(tmp_path, baseline_dirs, f"model={model}", "fold=0")
    if model in ("random_forest", "hist_gb"):  # small and fast: the protocol, not the numbers, is under test
        with open_dict(cfg):
            cfg.model.estimator[{"random_forest": "n_estimators", "hist_gb": "max_iter"}[model]] = 30
    a = run_baseline_fold(cfg, 0, tmp_path / "a")
    b = run_baseline_fold(cfg, 0, tmp_path / "b")
    assert a["model"] == model and a["test_clips"] == 40
    assert a["test"] == b["test"] and a["hyperparameters"] == b["hyperparameters"]
    assert a["dev_scores"] == b["dev_scores"]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "a" / "predictions.csv"),
                                  pd.read_csv(tmp_path / "b" / "predictions.csv"))


def test_bad_model_config_is_named(tmp_path, baseline_dirs):
    from hydra.errors import MissingConfigException

    from wav2emo.baselines.runner import check_model_cfg, run_baselines
    from wav2emo.errors import ConfigError

    with pytest.raises(MissingConfigException, match="no_such_model"):
        baseline_cfg(tmp_path, baseline_dirs, "model=no_such_model")
    with pytest.raises(ConfigError, match=r"model=no_such_model: no such baseline model.*svm"):
        check_model_cfg("no_such_model")
    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=svm", "fold=0", "model.grid=null")
    with pytest.raises(ConfigError, match=r"model=svm: model.grid=None is empty"):
        run_baselines(cfg)
    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=svm", "fold=0", "model.grid.C=[]")
    with pytest.raises(ConfigError, match=r"model=svm: model.grid.C is an empty list"):
        run_baselines(cfg)
    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=logreg", "fold=0", "folds.n_dev_actors=0",
                       "model.selection=dev")
    with pytest.raises(ConfigError, match="no dev actors"):
        run_baselines(cfg)
    cfg = baseline_cfg(tmp_path, baseline_dirs, "model=logreg", "fold=0", "folds.n_dev_actors=0")
    run_baselines(cfg)  # selection=auto: no dev set, so a grouped inner cross-validation chooses
    result = json.loads(next(tmp_path.rglob("fold_0/fold_result.json")).read_text())
    assert result["selection"]["method"] == "inner_cv" and "no dev clips" in result["selection"]["why"]
