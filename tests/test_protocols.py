"""Protocols: leave-one-speaker-out, TESS's two speakers, IEMOCAP sessions, speaker-dependent (flagged),
fold counts from the configs, and assemble_fold (no speaker in two parts, dev from training only)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from wav2emo.data.errors import FoldError
from wav2emo.data.folds import assemble_fold, build_folds, fold_count
from wav2emo.data.manifest import UNLABELLED, Clip, Manifest, UnlabelledError
from wav2emo.data.splits import SPEAKER_DEPENDENT

CONF = Path(__file__).resolve().parents[1] / "conf"


def manifest(speakers: dict[int, tuple[str, str, int]], per_speaker: int = 14, classes=("neutral", "happy", "sad", "angry"),
             unlabelled: int = 0) -> Manifest:
    """speakers: actor -> (name, gender, session); labels cycle through ``classes``."""
    clips = []
    for a, (name, gender, session) in sorted(speakers.items()):
        for i in range(per_speaker):
            label = UNLABELLED if i < unlabelled else i % len(classes)
            clips.append(Clip(f"{name}-{i:03d}", f"/none/{name}/{i}.wav", "toy", a, gender,
                              "" if label < 0 else classes[label], label, 0, 0, 0, 1.0, 16000, 1, 16000, "",
                              code="x", speaker=name, session=session))
    return Manifest(clips, name="toy", class_names=classes)


EMODB_LIKE = {a: (f"{a:02d}", "male" if a in (3, 10, 11, 12, 15) else "female", 0)
              for a in (3, 8, 9, 10, 11, 12, 13, 14, 15, 16)}
IEMOCAP_LIKE = {2 * s - (g == "F"): (f"Ses0{s}{g}", "female" if g == "F" else "male", s)
                for s in range(1, 6) for g in "FM"}


def _folds(name: str) -> dict:
    return yaml.safe_load((CONF / "folds" / f"{name}.yaml").read_text())


def _check_speaker_independent(m: Manifest, cfg: dict, n_folds: int) -> list:
    tested = []
    for k in range(n_folds):
        fa = assemble_fold(m, cfg, k)
        train, dev, test = ({c.actor for c in fa.parts[p]} for p in ("train", "dev", "test"))
        assert not (train | dev) & test, f"fold {k}: a test speaker also trains or chooses checkpoints"
        assert not train & dev, f"fold {k}: dev speakers must be training speakers held out"
        assert set(fa.split.dev) <= set(m.actors) - set(fa.split.test)
        assert len(fa.parts["train"]) + len(fa.parts["dev"]) + len(fa.parts["test"]) == len(m)
        tested += sorted(test)
    return tested


def test_loso_tests_every_speaker_once_with_dev_speakers_from_training():
    m = manifest(EMODB_LIKE)
    cfg = _folds("loso")
    folds = build_folds(cfg, m)
    assert len(folds) == 10 == fold_count(cfg, {"name": "emodb"})
    assert sorted(_check_speaker_independent(m, cfg, 10)) == m.actors
    assert all(len(s.dev) == 2 for s in folds.splits())
    assert "leave-one-speaker-out" in folds.split(0).protocol


def test_tess_two_speakers_train_on_one_test_on_the_other_and_say_so():
    m = manifest({1: ("OAF", "female", 0), 2: ("YAF", "female", 0)})
    folds = build_folds({**_folds("loso"), "dev": "speakers"}, m)  # no dev speaker can be spared: no dev set
    s0, s1 = folds.splits()
    assert (s0.train, s0.test, s0.dev) == ((2,), (1,), ())
    assert (s1.train, s1.test, s1.dev) == ((1,), (2,), ())
    assert "trains on YAF and tests on OAF" in s0.protocol and "no dev speaker" in s0.protocol
    s0, s1 = build_folds(_folds("loso"), m).splits()  # dev=auto: a share of the training speaker's clips
    assert (s0.train, s0.test, s0.dev) == ((2,), (1,), (2,)) and s0.by_clip and not s0.speaker_dependent
    assert s0.dev_clips and not set(s0.dev_clips) & set(s0.train_clips) and not set(s0.dev_clips) & set(s0.test_clips)
    assert "15% of each training speaker's clips" in s0.protocol and "dev set of training speakers' utterances" in (
        s0.protocol)
    assert fold_count(_folds("loso"), {"corpus": {"name": "tess"}}) == 2


def test_iemocap_sessions_are_the_folds():
    m = manifest(IEMOCAP_LIKE)
    cfg = _folds("sessions")
    folds = build_folds(cfg, m)
    assert len(folds) == 5 == fold_count(cfg, {"name": "iemocap"})
    for s, split in enumerate(folds.splits(), start=1):
        assert {c.session for c in m.filter(split.test)} == {s}
        assert len(split.test) == 2 and len(split.dev) == 2
        assert {m.genders()[a] for a in split.dev} == {"male", "female"}
    _check_speaker_independent(m, cfg, 5)
    with pytest.raises(FoldError, match="expected a corpus with recording sessions"):
        build_folds(cfg, manifest(EMODB_LIKE))


def test_speaker_kfold_on_many_speakers():
    speakers = {a: (str(a), "male" if a % 2 else "female", 0) for a in range(1001, 1092)}
    m = manifest(speakers, per_speaker=4)
    cfg = _folds("speaker_kfold")
    assert fold_count(cfg, {"name": "crema_d"}) == 5
    tested = _check_speaker_independent(m, cfg, 5)
    assert sorted(tested) == m.actors


def test_speaker_dependent_split_is_flagged_and_partitions_the_clips():
    m = manifest(EMODB_LIKE)
    cfg = _folds("speaker_dependent")
    folds = build_folds(cfg, m, clip_splits=True)
    assert fold_count(cfg, {"name": "emodb"}) == len(folds) == 5
    with pytest.raises(FoldError, match="must be assembled with"):  # a caller cutting by actors is refused
        build_folds(cfg, m).split(0)
    tested = []
    for k in range(5):
        fa = assemble_fold(m, cfg, k)
        assert SPEAKER_DEPENDENT in fa.protocol and fa.split.speaker_dependent
        ids = {p: set(fa.parts[p].clip_ids) for p in fa.parts}
        assert not ids["train"] & ids["test"] and not ids["dev"] & (ids["train"] | ids["test"])
        assert len(ids["dev"]) == round(0.1 * (len(m) - len(ids["test"])))
        assert set(fa.split.test) & set(fa.split.train)  # the same speakers: that is what the flag says
        tested += ids["test"]
    assert sorted(tested) == sorted(m.clip_ids)
    # stratified: every class in every test fold
    assert all(len({c.label for c in assemble_fold(m, cfg, k).parts["test"]}) == 4 for k in range(5))


def test_assemble_fold_refuses_unlabelled_clips_and_keeps_the_class_names():
    m = manifest(EMODB_LIKE, unlabelled=1)
    with pytest.raises(UnlabelledError, match="10 of 140 clips have no emotion label"):
        assemble_fold(m, _folds("loso"), 0)
    ok = manifest(EMODB_LIKE)
    fa = assemble_fold(ok, _folds("loso"), 3)
    assert fa.class_names == fa.parts["train"].class_names == ("neutral", "happy", "sad", "angry")


def test_fold_count_says_none_where_only_the_manifest_knows():
    assert fold_count(_folds("loso"), {"name": "folder"}) is None
    assert fold_count(_folds("loso"), {"name": "emodb", "require_complete": False}) is None
    assert fold_count(_folds("loso"), {"name": "emodb", "actors": [3, 8, 9]}) == 3
    assert fold_count(_folds("luna_jimenez"), {"name": "ravdess"}) == 5
    assert fold_count({"folds": _folds("sessions")}, {"corpus": {"name": "iemocap"}}) == 5


def test_loso_with_too_few_speakers_and_bad_folds_are_refused():
    with pytest.raises(FoldError, match="at least 2 speakers"):
        build_folds(_folds("loso"), manifest({1: ("a", "male", 0)}))
    with pytest.raises(FoldError, match="fold=10"):
        build_folds(_folds("loso"), manifest(EMODB_LIKE)).split(10)
    with pytest.raises(FoldError, match="dev_fraction"):
        build_folds({**_folds("speaker_dependent"), "dev_fraction": 1.5}, manifest(EMODB_LIKE), clip_splits=True)


def test_num_folds_falls_back_to_the_manifest_for_a_corpus_of_your_own(tmp_path):
    from tests.corpus_trees import tone
    from wav2emo.data.corpora import num_folds

    for i, (e, s) in enumerate([(e, s) for e in ("sad", "happy") for s in ("a", "b", "c")]):
        tone(tmp_path / "mine" / e / f"{s}_{i}.wav", seed=i)
    data = {"corpus": {"name": "folder", "root": str(tmp_path / "mine")}}
    assert num_folds(_folds("loso"), data, cache_dir=tmp_path / "cache") == 3
    assert num_folds(_folds("speaker_kfold"), data) == 5  # the config says it: no manifest needed
