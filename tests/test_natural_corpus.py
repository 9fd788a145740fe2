"""Natural corpora (issue 20, item 4): speakers carrying one or two emotions.  Dev speakers are chosen to cover
the classes, sized by clips; the scikit-learn baselines choose by a grouped inner cross-validation where the dev
part cannot cover the classes; every report says which was used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tests.helpers import compose_cfg
from wav2emo.baselines.inner_cv import inner_cv_scores, selection_method
from wav2emo.data.corpora import load_corpus
from wav2emo.data.dev_sets import DevRule, covering_speakers
from wav2emo.data.folds import assemble_fold, build_folds

FOLDER_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}
# actors 1-4 carry every class; the others one or two (the shape of a natural corpus)
CARRIES = {1: "all", 2: "all", 3: "all", 4: "all", 5: ("05",), 6: ("04",), 7: ("03", "04"), 8: ("01",),
           9: ("05", "01"), 10: ("03",), 11: ("04",), 12: ("05",)}


@pytest.fixture(scope="module")
def natural_root(synthetic_corpus, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("natural") / "corpus"
    for f in sorted(synthetic_corpus.rglob("*.flac")):
        code, actor = f.stem.split("-")[2], int(f.stem.split("-")[6])
        if code in FOLDER_EMOTIONS and actor in CARRIES and (CARRIES[actor] == "all" or code in CARRIES[actor]):
            dst = root / FOLDER_EMOTIONS[code] / f"spk{actor:02d}_{f.stem}.flac"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(f, dst)
    return root


def test_dev_speakers_cover_the_classes_they_can(natural_root):
    m = load_corpus({"name": "folder", "root": str(natural_root)})
    folds = build_folds({"name": "default", "n_dev_actors": 2}, m)  # 12 speakers: leave-one-speaker-out
    assert folds.num_folds == 12 and "covering" in {c.mode for c in folds.dev_choices}
    assert "training speakers covering every class they can" in folds.protocol
    for k, split in enumerate(folds.splits()):
        parts = assemble_fold(m, {"name": "default"}, k).parts
        train_classes = {c.label for c in parts["train"]} | {c.label for c in parts["dev"]}
        assert {c.label for c in parts["train"]} == train_classes  # training keeps every class
        assert not set(split.dev) & set(split.test) and set(split.dev) <= set(m.actors) - set(split.test)
        if folds.dev_choices[k].mode == "covering":
            assert {c.label for c in parts["dev"]} == train_classes  # four all-class speakers: all coverable
    speakers = build_folds({"name": "default", "dev": "speakers"}, m)  # the acted-corpus rule, for contrast
    short = [k for k, s in enumerate(speakers.splits())
             if {c.label for c in m.filter(s.dev)} != {c.label for c in m.filter(s.train + s.dev)}]
    assert short, "the fixture should have folds where two gender-balanced dev speakers miss classes"


def test_covering_is_sized_by_clips_and_names_what_it_cannot_cover():
    clips = {1: [("a", 0), ("b", 1)], 2: [("c", 0), ("d", 1)], 3: [("e", 2)], 4: [("f", 0)]}
    dev, uncovered = covering_speakers(clips, [1, 2, 3, 4], 0.1, seed=0, fold=0)
    assert uncovered == (2,) and 3 not in dev  # only speaker 3 has class 2: it must stay in training
    assert {lab for a in dev for _, lab in clips[a]} == {0, 1}
    big, _ = covering_speakers(clips, [1, 2, 3, 4], 0.6, seed=0, fold=0)
    assert len(big) > len(dev) or sum(len(clips[a]) for a in big) >= 0.6 * 6
    with pytest.raises(Exception, match="folds.dev="):
        DevRule("nearest")


def test_selection_rule():
    y, groups = np.array([0, 1, 2, 0]), np.array([1, 1, 2, 3])
    assert selection_method("auto", y, groups, np.array([0, 1, 2]))[0] == "dev"
    assert selection_method("auto", y, groups, np.array([0]))[0] == "inner_cv"
    assert selection_method("auto", y, groups, np.array([], dtype=int))[0] == "inner_cv"
    assert selection_method("auto", y, np.array([1, 1, 1, 1]), np.array([0]))[0] == "dev"  # one speaker
    assert selection_method("dev", y, groups, np.array([0]))[0] == "dev"


def test_inner_cv_scores_are_scikit_learns_grouped_cv():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 5))
    y = (x[:, 0] + 0.5 * rng.normal(size=60) > 0).astype(int)
    groups = np.repeat(np.arange(6), 10)
    pipe = Pipeline([("scaler", StandardScaler()), ("estimator", LogisticRegression(max_iter=1000))])
    candidates = [{"C": 0.001}, {"C": 1.0}]
    best, scores, n = inner_cv_scores(pipe, candidates, x, y, groups)
    by_hand = []
    for c in candidates:
        uas = []
        for tr, te in GroupKFold(n_splits=5).split(x, y, groups):
            p = Pipeline([("scaler", StandardScaler()), ("estimator", LogisticRegression(max_iter=1000, **c))])
            uas.append(balanced_accuracy_score(y[te], p.fit(x[tr], y[tr]).predict(x[te])))
        by_hand.append(float(np.mean(uas)))
    assert n == 5 and scores == pytest.approx(by_hand) and best == int(np.argmax(by_hand))


def test_baselines_on_a_natural_corpus_choose_by_grouped_inner_cv_and_say_so(natural_root, tmp_path):
    from wav2emo.baselines.runner import command_line_overrides, run_baselines

    cfg = compose_cfg(command_line_overrides(["model=logreg", "data=folder", f"data.corpus.root={natural_root}",
                                              "features=tiny", "fold=[0,4,8]"]),
                      tmp_path, tmp_path / "data", tmp_path / "cache", config_name="baselines")
    run_baselines(cfg)
    results = {f: json.loads(next(tmp_path.rglob(f"fold_{f}/fold_result.json")).read_text()) for f in (0, 4, 8)}
    for r in results.values():
        assert r["selection"]["method"] in ("dev", "inner_cv")
        if r["selection"]["method"] == "inner_cv":
            assert "GroupKFold" in r["selection"]["why"] and r["split"]["clips"]["dev"] == 0
            best = int(np.argmax([s["inner_cv_ua"] for s in r["dev_scores"]]))
            assert r["hyperparameters"] == r["dev_scores"][best]["params"]
    report = json.loads(next(tmp_path.rglob("cv_report.json")).read_text())
    assert "hyperparameter_selection" in report["protocol"]


def test_two_speaker_corpus_baseline_chooses_on_the_training_speakers_clips(tmp_path):
    """TESS: train on one speaker, test on the other. The dev set is a share of the training speaker's clips
    (declared), so the grid is chosen without ever looking at the test speaker."""
    from tests.corpus_trees import tess_tree
    from wav2emo.baselines.runner import command_line_overrides, run_baselines

    root = tess_tree(tmp_path / "TESS", words=("back", "bar", "base"))
    cfg = compose_cfg(command_line_overrides(["model=logreg", "data=tess", f"data.corpus.root={root}",
                                              "data.corpus.require_complete=false", "features=tiny", "fold=all"]),
                      tmp_path, tmp_path / "data", tmp_path / "cache", config_name="baselines")
    run_baselines(cfg)
    for f in (0, 1):
        r = json.loads(next(tmp_path.rglob(f"fold_{f}/fold_result.json")).read_text())
        assert r["selection"]["method"] == "dev" and r["split"]["clips"] == {"train": 14, "dev": 7, "test": 21}
        assert r["split"]["train_actors"] == r["split"]["dev_actors"] != r["split"]["test_actors"]
        assert "a dev set of training speakers' utterances" in r["split"]["protocol"]
