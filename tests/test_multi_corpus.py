"""data=multi: several corpora trained on together, folds=combined, per-corpus metrics."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.corpus_trees import emodb_tree
from tests.helpers import compose_cfg

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("multi")
    emodb_tree(root / "emodb")
    return root / "data", root / "cache", root / "emodb"


def multi(dirs, *extra: str) -> list[str]:
    return ["data=multi", "data.corpora=[synthetic,emodb]", f"+data.options.emodb.root={dirs[2]}",
            "+data.options.emodb.require_complete=false", "+data.options.synthetic.clips_per_actor=8",
            "features=tiny", *extra]


@pytest.fixture(scope="module")
def manifest(dirs, tmp_path_factory):
    from wav2emo.data.corpora import load_corpus

    cfg = compose_cfg(multi(dirs), tmp_path_factory.mktemp("c"), dirs[0], dirs[1])
    return cfg, load_corpus(OmegaConf.to_container(cfg.data.corpus, resolve=True), cache_dir=dirs[1])


def test_one_label_set_and_distinct_speakers(manifest):
    cfg, m = manifest
    assert cfg.folds.name == "combined"  # data=multi brings its folds
    assert m.class_names == ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised", "boredom")
    assert set(m.parts) == {"synthetic", "emodb"} and len(m) == 24 * 8 + 70
    assert {c.actor for c in m if c.corpus == "emodb"} == {200000 + s for s in (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)}
    boredom = [c for c in m if c.emotion == "boredom"]
    assert len(boredom) == 10 and all(m.class_names[c.label] == "boredom" for c in boredom)
    assert all(m.class_names[c.label] == c.emotion for c in m)
    assert next(c for c in m if c.corpus == "emodb").speaker.startswith("emodb:")


def test_combined_folds_merge_the_corpus_with_more_folds_and_test_every_clip_once(manifest):
    from wav2emo.data.folds import assemble_fold
    from wav2emo.runs.common import num_folds_of

    cfg, m = manifest
    assert num_folds_of(cfg) == 5  # luna_jimenez 5, EmoDB loso 10 merged into 5
    tested = []
    for fold in range(5):
        a = assemble_fold(m, OmegaConf.to_container(cfg.folds), fold)
        train = {c.actor for c in a.parts["train"]} | {c.actor for c in a.parts["dev"]}
        test = {c.actor for c in a.parts["test"]}
        assert not train & test
        assert {c.corpus for c in a.parts["test"]} == {"synthetic", "emodb"}
        assert {c.corpus for c in a.parts["dev"]} == {"synthetic", "emodb"}  # each corpus its own dev speakers
        assert len({c.actor for c in a.parts["test"] if c.corpus == "emodb"}) == 2
        tested += a.parts["test"].clip_ids
    assert sorted(tested) == sorted(m.clip_ids)
    assert "emodb: its 10 loso folds merged into 5" in a.protocol


def test_baselines_on_two_corpora_report_each_corpus(dirs, tmp_path):
    from wav2emo.baselines.runner import command_line_overrides, run_baselines

    run_baselines(compose_cfg(command_line_overrides(["model=logreg", *multi(dirs), "fold=[0,1]"]), tmp_path, dirs[0],
                              dirs[1], config_name="baselines"))
    report = json.loads((tmp_path / "cv_report.json").read_text())
    assert set(report["per_corpus"]) == {"synthetic", "emodb"}
    emodb = report["per_corpus"]["emodb"]
    assert emodb["clips"] == 2 * 2 * 7 and "calm" not in emodb["classes"] and "boredom" in emodb["classes"]
    assert "combined speaker folds" in report["protocol"]["folds"]
    fold = json.loads((tmp_path / "fold_0" / "fold_result.json").read_text())
    assert set(fold["test_per_corpus"]) == {"synthetic", "emodb"}
    assert "## Per corpus" in (tmp_path / "cv_report.md").read_text()
    # issue 21: each corpus's interval over its own test speakers (2 folds x 2 EmoDB speakers) and own classes
    iv = report["per_corpus_intervals"]["emodb"]
    assert iv["speakers"] == 4 and not iv["reliable"] and iv["ua"]["estimate"] == pytest.approx(emodb["ua"])


def test_a_neural_fold_trains_on_two_corpora_from_their_own_caches(dirs, tmp_path):
    from tests.helpers import SMALL
    from wav2emo.runs.fold_runner import run_fold

    small = [o for o in SMALL if not o.startswith("data")]
    cfg = compose_cfg([*small, *multi(dirs), "model=egemaps_mlp", "trainer.max_epochs=1", "logger=none"], tmp_path,
                      dirs[0], dirs[1])
    result = run_fold(cfg, 0, tmp_path / "fold_0")
    assert len(result["class_names"]) == 9 and set(result["test_per_corpus"]) == {"synthetic", "emodb"}
    caches = result["split"]["caches"]["egemaps"]
    assert "synthetic:" in caches and "emodb:" in caches  # each corpus's own cache, no combined copy


@pytest.mark.parametrize("override, message", [
    ("data.corpora=[emodb]", "at least two corpus names"),
    ("data.corpora=[emodb,emodb]", "listed more than once"),
    ("data.corpora=[synthetic,nosuch]", "no corpus config 'nosuch'"),
])
def test_bad_corpus_lists_are_named(dirs, tmp_path, override, message):
    from wav2emo.data.corpora import load_corpus
    from wav2emo.data.errors import CorpusError

    cfg = compose_cfg(["data=multi", override], tmp_path, dirs[0], dirs[1])
    with pytest.raises(CorpusError, match=message):
        load_corpus(OmegaConf.to_container(cfg.data.corpus, resolve=True), cache_dir=dirs[1])


def test_combined_folds_need_several_corpora(dirs, tmp_path):
    from wav2emo.data.errors import FoldError
    from wav2emo.data.folds import build_folds
    from wav2emo.data.manifest import Manifest

    with pytest.raises(FoldError, match="combines the folds of several corpora"):
        build_folds({"name": "combined"}, Manifest([], name="emodb"))
