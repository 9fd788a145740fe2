"""Cross-corpus evaluation (shared labels, sklearn and neural models, the matrix) on the synthetic corpus and a
tiny EmoDB tree."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.corpus_trees import emodb_tree
from tests.helpers import SMALL, compose_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
REPO = Path(__file__).resolve().parents[1]
SYN = ["data=synthetic", "data.corpus.clips_per_actor=8", "features=tiny"]


# --- shared labels --------------------------------------------------------------------------------------------


def test_shared_classes_are_computed_and_mapped_on_both_sides():
    from wav2emo.data.shared_labels import shared_labels

    ravdess = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
    emodb = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "boredom")
    lab = shared_labels(ravdess, emodb)
    assert lab.shared == ("neutral", "happy", "sad", "angry", "fearful", "disgust")
    assert lab.unscored_model_classes == ["calm", "surprised"] and lab.unscored_test_classes == ["boredom"]
    assert lab.test_index("boredom") is None and lab.test_index("sad") == 2
    merged = shared_labels(ravdess, emodb, {"calm": "neutral", "Disgust": None})
    assert merged.model_to_shared["calm"] == "neutral" and "disgust" not in merged.shared
    assert merged.unscored_test_classes == ["disgust", "boredom"]
    assert merged.describe()["mapping"] == {"calm": "neutral", "disgust": None}


def test_fewer_than_two_shared_emotions_and_unknown_mapping_keys_are_refused():
    from wav2emo.data.labels import LabelError
    from wav2emo.data.shared_labels import shared_labels

    with pytest.raises(LabelError, match=r"emodb \['neutral', 'boredom'\] and tess \['neutral', 'surprised'\] share 1"):
        shared_labels(("neutral", "boredom"), ("neutral", "surprised"), model_corpus="emodb", test_corpus="tess")
    with pytest.raises(LabelError, match=r"\['contempt'\] are in neither label set"):
        shared_labels(("neutral", "sad"), ("neutral", "sad"), {"contempt": "sad"})
    with pytest.raises(LabelError, match="not in the vocabulary"):
        shared_labels(("neutral", "sad"), ("neutral", "sad"), {"sadd": "neutral"})


def test_restricted_argmax_sums_merged_probabilities_and_ignores_unshared_outputs():
    from wav2emo.data.shared_labels import restricted_argmax, shared_labels

    lab = shared_labels(("neutral", "calm", "happy", "surprised"), ("neutral", "happy", "sad"), {"calm": "neutral"})
    probs = np.array([[0.3, 0.3, 0.4, 0.0],    # neutral+calm 0.6 beat happy 0.4
                      [0.1, 0.0, 0.2, 0.7],    # surprised is no answer: happy
                      [0.0, 0.0, 0.9, 0.1]])
    assert restricted_argmax(probs, lab).tolist() == [0, 1, 1]
    scores = np.array([[0.3, 0.5, 0.4, 9.0]])  # decision values: the largest of the merged ones
    assert restricted_argmax(scores, lab, probabilities=False).tolist() == [0]
    with pytest.raises(ValueError, match="expected \\(clips, 4\\)"):
        restricted_argmax(probs[:, :3], lab)


# --- end to end -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("xcorpus")
    emodb_tree(root / "emodb")
    return root / "data", root / "cache", root / "emodb"


EMODB = ["data=emodb", "data.corpus.require_complete=false"]


def _baseline_run(out: Path, dirs, *extra: str) -> Path:
    from wav2emo.training.baselines import command_line_overrides, run_baselines

    data_dir, cache_dir, _ = dirs
    out.mkdir(parents=True, exist_ok=True)
    run_baselines(compose_cfg(command_line_overrides(["model=logreg", *extra]), out, data_dir, cache_dir,
                              config_name="baselines"))
    return out


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory, dirs):
    return _baseline_run(tmp_path_factory.mktemp("syn_run"), dirs, *SYN, "fold=[0,1]")


@pytest.fixture(scope="module")
def emodb_run(tmp_path_factory, dirs):
    return _baseline_run(tmp_path_factory.mktemp("emodb_run"), dirs, *EMODB, f"data.corpus.root={dirs[2]}",
                         "features=tiny", "folds=loso", "fold=[0,1,2]")


def _eval_cfg(out: Path, dirs, ckpt, *extra: str):
    data_dir, cache_dir, emodb = dirs
    return compose_cfg([f"ckpt_path={ckpt}", *EMODB, f"data.corpus.root={emodb}", *extra], out, data_dir, cache_dir,
                       config_name="eval")


def test_baseline_stores_its_estimator_and_refuses_a_changed_file(synthetic_run, tmp_path):
    import shutil

    from wav2emo.training.sklearn_store import StoredModelError, load_model

    stored = load_model(synthetic_run / "fold_0")
    assert stored["class_names"][:2] == ["neutral", "calm"] and stored["feature"] == "egemaps"
    copy = tmp_path / "fold_0"
    shutil.copytree(synthetic_run / "fold_0", copy)
    with open(copy / "model.joblib", "ab") as f:
        f.write(b"\0")
    with pytest.raises(StoredModelError, match="SHA-256 differs"):
        load_model(copy)


def test_sklearn_run_tested_on_every_clip_of_another_corpus(synthetic_run, dirs, tmp_path):
    from wav2emo.reports.fold_results import read_fold_result
    from wav2emo.training.cross_eval import cross_evaluate

    rep = cross_evaluate(_eval_cfg(tmp_path, dirs, synthetic_run))
    assert rep["train_corpus"] == "synthetic" and rep["test_corpus"] == "emodb"
    assert rep["clips"] == {"total": 70, "scored": 60, "unscored_by_class": {"boredom": 10}}
    assert rep["class_names"] == ["neutral", "happy", "sad", "angry", "fearful", "disgust"]
    assert [m["fold"] for m in rep["models"]] == [0, 1]
    assert set(rep["per_class_recall"]) == set(rep["class_names"])
    assert np.asarray(rep["confusion_summed"]).sum() == 2 * 60
    md = (tmp_path / "cross_corpus.md").read_text()
    for text in ("synthetic (the model's classes): neutral, calm", "emodb: neutral, happy, sad, angry, fearful, "
                 "disgust, boredom", "boredom 10", "left out of the argmax: calm, surprised", "Per-class recall"):
        assert text in md, text
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0
    for fold in (0, 1):
        r = read_fold_result(tmp_path / f"fold_{fold}", filename="eval_result.json")
        preds = pd.read_csv(tmp_path / f"fold_{fold}" / "predictions.csv")
        assert len(preds) == r["test_clips"] == 60 and "boredom" not in set(preds["true"])
        assert set(preds["predicted"]) <= set(rep["class_names"])  # the argmax never answers calm or surprised
        y, p = preds["label"].to_numpy(), preds["pred"].to_numpy()
        assert r["test"]["ua"] == pytest.approx(np.mean([(p[y == c] == c).mean() for c in np.unique(y)]))
        assert r["cross_corpus"]["unrestricted_argmax_outside_shared"] == preds["model_argmax"].isin(
            ["calm", "surprised"]).sum()


def test_per_speaker_normalisation_carries_over_to_the_test_corpus(dirs, tmp_path):
    from wav2emo.training.cross_eval import cross_evaluate

    run = _baseline_run(tmp_path / "run", dirs, *SYN, "fold=0", "features.normalize=speaker")
    rep = cross_evaluate(_eval_cfg(tmp_path / "ev", dirs, run))
    assert rep["feature_normalization"] == "speaker" and rep["narrow_speakers"] == {}
    assert "Per-speaker normalisation" in (tmp_path / "ev" / "cross_corpus.md").read_text()


def test_a_pair_sharing_one_emotion_stops_before_extraction(synthetic_run, dirs, tmp_path):
    from wav2emo.data.labels import LabelError
    from wav2emo.training.cross_eval import cross_evaluate

    cache_dir = dirs[1]
    before = sorted(p.name for p in (cache_dir / "emodb").glob("*")) if (cache_dir / "emodb").exists() else []
    cfg = _eval_cfg(tmp_path, dirs, synthetic_run,
                    "label_map={happy: null, sad: null, angry: null, fearful: null, disgust: null}")
    with pytest.raises(LabelError, match=r"share 1 emotion\(s\) \['neutral'\]"):
        cross_evaluate(cfg)
    after = sorted(p.name for p in (cache_dir / "emodb").glob("*")) if (cache_dir / "emodb").exists() else []
    assert after == before and not (tmp_path / "cross_corpus.json").exists()


def test_eval_cli_error_for_too_few_shared_emotions_is_one_line(synthetic_run, dirs, tmp_path):
    data_dir, cache_dir, emodb = dirs
    env = {**os.environ, "PYTHONPATH": str(REPO), "WAV2EMO_DATA_DIR": str(data_dir),
           "WAV2EMO_CACHE_DIR": str(cache_dir), "WAV2EMO_LOG_DIR": str(tmp_path / "logs")}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run([sys.executable, "-m", "wav2emo.eval", f"ckpt_path={synthetic_run}", *EMODB,
                           f"data.corpus.root={emodb}", "label_map={neutral: null, happy: null, sad: null, "
                           "angry: null, fearful: null}"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("wav2emo.eval: error: cross-corpus: synthetic") and "emodb" in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_neural_checkpoint_and_run_directory_are_cross_evaluated(dirs, tmp_path):
    from wav2emo.training.cross_eval import cross_evaluate
    from wav2emo.training.experiment import run_fold

    data_dir, cache_dir, _ = dirs
    run = tmp_path / "run"
    cfg = compose_cfg([*SMALL, "model=egemaps_mlp", "trainer.max_epochs=2", "logger=none"], run, data_dir, cache_dir)
    result = run_fold(cfg, 0, run / "fold_0")
    by_run = cross_evaluate(_eval_cfg(tmp_path / "a", dirs, run, "label_map={calm: neutral}"))
    by_file = cross_evaluate(_eval_cfg(tmp_path / "b", dirs, result["evaluated_checkpoint"], "label_map={calm: neutral}"))
    assert by_run["summary"]["ua"]["per_model"] == pytest.approx(by_file["summary"]["ua"]["per_model"])
    assert by_run["labels"]["model_to_shared"]["calm"] == "neutral"
    assert by_run["labels"]["unscored_model_classes"] == ["surprised"]
    preds = pd.read_csv(tmp_path / "a" / "fold_0" / "predictions.csv")
    assert len(preds) == 60 and set(preds["predicted"]) <= set(by_run["class_names"])


def test_cross_corpus_matrix_of_two_training_corpora(synthetic_run, emodb_run, dirs, tmp_path):
    from wav2emo.reports.cross_corpus import cross_corpus_matrix

    out = tmp_path / "matrix"
    m = cross_corpus_matrix([synthetic_run, emodb_run], out, cache_dir=str(dirs[1]))
    assert m["corpora"] == ["synthetic", "emodb"]
    cv = {c: json.loads((r / "cv_report.json").read_text())["summary"]["ua"]["mean"]
          for c, r in (("synthetic", synthetic_run), ("emodb", emodb_run))}
    assert m["ua"][0][0] == pytest.approx(cv["synthetic"]) and m["ua"][1][1] == pytest.approx(cv["emodb"])
    pair = json.loads((out / "pairs" / "synthetic__to__emodb" / "cross_corpus.json").read_text())
    assert m["ua"][0][1] == pytest.approx(pair["summary"]["ua"]["mean"])
    back = json.loads((out / "pairs" / "emodb__to__synthetic" / "cross_corpus.json").read_text())
    assert back["clips"]["unscored_by_class"] == {"calm": 24, "surprised": 24} and len(back["models"]) == 3
    for ext in ("json", "md", "png"):
        assert (out / f"cross_corpus_matrix.{ext}").stat().st_size > 0
    assert "| **synthetic** |" in (out / "cross_corpus_matrix.md").read_text()
    again = cross_corpus_matrix([synthetic_run, emodb_run], out, cache_dir=str(dirs[1]))  # pair reports reused
    assert again["ua"] == m["ua"]


@pytest.mark.slow
def test_a_sweep_over_training_corpora_ends_with_the_matrix(dirs, tmp_path):
    data_dir, cache_dir, emodb = dirs
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "emodb").exists():
        (data_dir / "emodb").symlink_to(emodb)  # the default root of data=emodb under paths.data_dir
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "wav2emo.baselines", "-m", "model=logreg", "data=synthetic,emodb",
         "data.corpus.clips_per_actor=8", "data.corpus.require_complete=false", "features=tiny", "folds=loso",
         "fold=[0,1]", "cross_corpus=true", f"paths.data_dir={data_dir}", f"paths.cache_dir={cache_dir}",
         f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    matrix = json.loads((sweep / "cross_corpus" / "cross_corpus_matrix.json").read_text())
    assert matrix["corpora"] == ["synthetic", "emodb"]
    assert all(v is not None for row in matrix["ua"] for v in row)
    kinds = {(c["train"], c["test"]): c["kind"] for c in matrix["cells"]}
    assert kinds["synthetic", "synthetic"].startswith("in-corpus") and kinds["synthetic", "emodb"].startswith("cross")
    assert (sweep / "cross_corpus" / "pairs" / "emodb__to__synthetic" / "cross_corpus.md").is_file()
    assert (sweep / "cross_corpus" / "cross_corpus_matrix.png").stat().st_size > 0
